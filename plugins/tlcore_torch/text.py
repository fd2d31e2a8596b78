"""Text encoders: a Hugging Face BERT-family folder as a backbone taking token ids, and the
masked pooling of its hidden states.

The model takes int64 ids ``(N, max_length)`` padded at the end with ``pad_id``
(:class:`~tlcore.interfaces.TextPreprocessing`); :class:`~tlcore_torch.model.TransferModel`
derives the attention mask ``ids != pad_id`` and hands both to :class:`TextEncoder`, which runs
the Hugging Face model with token type 0 (where the architecture has token types: DistilBERT
has none) and lets it number the positions itself (RoBERTa's start after its padding id).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from tlcore.errors import TlcoreError
from tlcore.plugins.calls import is_out_of_memory
from tlcore.recipe import BackboneSpec
from tlcore.textmodel import is_text_model, resolve_folder, text_model_folder
from tlcore_torch.blocks import find_blocks
from tlcore_torch.loading import IMAGENET, Loaded, hf_model_kwargs

POOLINGS = ("mean", "cls", "max", "flatten")
"""How :class:`TextPool` reduces hidden states; the recipe's ``avg`` is the model's own."""


def text_folder(name: str) -> Path | None:
    """The local folder of ``hf:<name>`` when it holds a text model: a folder, or a hub id
    already in the Hugging Face cache; ``None`` otherwise (a vision model, or a hub id that is
    not cached, which the vision loader reports as it always has)."""
    local = Path(name).expanduser()
    if local.is_dir():
        return local if is_text_model(local) else None
    if local.exists() or name.startswith((".", "/", "~")):
        return None
    try:
        path = resolve_folder(name)
    except TlcoreError:
        return None
    return path if is_text_model(path) else None


class TextEncoder(nn.Module):
    """A Hugging Face text encoder whose forward maps token ids and their attention mask to
    the last hidden states ``(N, L, D)``.

    Its blocks, which ``last_n`` counts, are the embeddings and then every transformer layer
    (``model.embeddings``, ``model.encoder.layer.0`` ...; DistilBERT's
    ``model.transformer.layer.*``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.token_types = "token_type_ids" in inspect.signature(model.forward).parameters
        embeddings = [name for name, _ in model.named_children() if name == "embeddings"]
        self.tlcore_blocks = tuple(f"model.{n}" for n in [*embeddings, *find_blocks(model)])

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Hidden states of token ids ``(N, L)`` with their mask (True for real tokens)."""
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.token_types else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask.long(), **extra)
        hidden = getattr(out, "last_hidden_state", None)
        return hidden if hidden is not None else out[0]


def load_text_encoder(
    transformers: ModuleType, path: Path, spec: BackboneSpec, pretrained: bool
) -> Loaded:
    """Load a text model's folder (``AutoModel.from_pretrained``; ``from_config`` for weights
    ``none`` or a weights file), without its pooler.

    ``extra["inputs"]`` is the folder's input spec at ``spec.input_size`` tokens and
    ``extra["pooling"]`` its own pooling (what the recipe's ``avg`` means).

    Raises:
        TlcoreError: the folder's config, tokenizer or weights cannot be used, or
            ``spec.input_size`` exceeds its positions.
    """
    folder = text_model_folder(str(path))
    inputs = folder.input_spec(spec.input_size)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        kwargs = {**hf_model_kwargs(config), "trust_remote_code": False}
        if pretrained:
            # Loaded with its pooler, then dropped: a checkpoint holds one, and transformers
            # reports each of its weights as unexpected in a model built without it.
            unpooled = kwargs.pop("add_pooling_layer", None) is not None
            model = transformers.AutoModel.from_pretrained(str(path), config=config, **kwargs)
            if unpooled:
                model.pooler = None
        else:
            model = transformers.AutoModel.from_config(config, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        if is_out_of_memory(exc):
            raise  # the facade names the sizes to lower
        raise TlcoreError.caused_by(
            f"cannot load the Hugging Face text model in {path}", exc,
            "give a folder written by save_pretrained (config.json, model.safetensors) with "
            "its tokenizer.json; its model_type must be one this transformers knows",
        ) from None
    return TextEncoder(model), IMAGENET, {"inputs": inputs, "pooling": folder.pooling}


def text_pooling(pooling: str, own: str | None) -> str:
    """The :class:`TextPool` mode of the recipe's ``head.pooling``: ``avg`` is the model's own
    (``own``, from its folder; ``cls`` when unknown, as BERT's classifiers pool)."""
    if pooling == "avg":
        return own if own in POOLINGS else "cls"
    return pooling


class TextPool(nn.Module):
    """Hidden states ``(N, L, D)`` and the mask ``(N, L)`` → one vector per text.

    ``mean``: the average over real tokens (as sentence-transformers pools), ``cls``: the first
    token, ``max``: the maximum over real tokens, ``flatten``: every position, padding
    included.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """Pool ``hidden`` to ``(N, features)``."""
        if hidden.dim() != 3:
            return hidden.flatten(1)
        if self.mode == "cls":
            return hidden[:, 0]
        if self.mode == "flatten":
            return hidden.flatten(1)
        real = mask.unsqueeze(-1)
        if self.mode == "max":
            return hidden.masked_fill(~real, torch.finfo(hidden.dtype).min).amax(dim=1)
        weights = real.to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return self.mode


def dummy_ids(length: int, pad_id: int) -> Tensor:
    """One text of ``length`` token ids for probing a model: two real tokens (in the place of
    ``[CLS] [SEP]``), then padding. Ids 0 and 1 exist in every vocabulary."""
    ids = torch.full((1, length), pad_id, dtype=torch.int64)
    ids[0, :2] = 1 if pad_id == 0 else 0
    return ids
