"""``hf:<folder>`` on the Keras backend: a BERT-family text encoder from a Hugging Face folder.

The folder is read by :mod:`tlcore.textmodel` (as the torch backend reads it), the network
built by :mod:`tlcore_keras.bert` from its ``model.safetensors``. The backbone carries the
text input spec (``extra["inputs"]``: int64 ids of ``backbone.input_size`` tokens, default
128) and the model's own pooling (``extra["pooling"]``, what ``head.pooling: avg`` means).
Vision ``hf:`` folders are the torch backend's.
"""

from __future__ import annotations

from typing import Any

from tlcore.errors import TlcoreError
from tlcore.interfaces import Preprocessing
from tlcore.recipe import BackboneSpec
from tlcore.textmodel import is_text_model, resolve_folder, text_model_folder
from tlcore_keras.bert import build_encoder
from tlcore_keras.catalogue import HF_KIND as HF_KIND


def load_text_encoder(name: str, spec: BackboneSpec, pretrained: bool) -> tuple[Any, Any, dict]:
    """The loader of ``hf:<name>``: ``(encoder, preprocessing, extra)``.

    Raises:
        TlcoreError: the folder is not a text model, or not a BERT the Keras backend builds.
    """
    folder_path = resolve_folder(name)
    if not is_text_model(folder_path):
        raise TlcoreError(
            f"hf:{name} is not a text model (a folder with config.json and tokenizer.json, "
            "no image config): the keras backend loads Hugging Face text encoders only",
            "use --backend torch for Hugging Face vision models, or a keras: / builtin: "
            "image backbone",
        )
    folder = text_model_folder(str(folder_path))
    network = build_encoder(folder, pretrained)
    extra = {"inputs": folder.input_spec(spec.input_size), "pooling": folder.pooling}
    # The image preprocessing is unused by a text model; Backbone needs one all the same.
    return network, Preprocessing(), extra
