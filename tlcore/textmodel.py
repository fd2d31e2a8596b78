"""What a Hugging Face text-encoder folder says about itself, read without a framework.

Both backends build a BERT-family encoder from the same folder (``hf:<dir or hub id>``): the
PyTorch plugin with ``transformers``, the Keras plugin with its own layers reading the same
safetensors. What they must agree on is read here once: the config, the tokenizer file every
backend and the runtime use, the padding id, the longest input, and the pooling the model was
trained with (a sentence-transformers folder records it in ``1_Pooling/config.json``).

Example:
    >>> folder = text_model_folder("path/to/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> folder.pooling, folder.max_positions, folder.pad_id  # doctest: +SKIP
    ('mean', 512, 0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcore.errors import TlcoreError
from tlcore.interfaces import InputSpec, TextPreprocessing

TOKENIZER_FILE = "tokenizer.json"
"""The tokenizer file a text model's folder must hold (``tokenizers``' JSON format, written by
any fast tokenizer's ``save_pretrained``)."""

DEFAULT_MAX_LENGTH = 128
"""Tokens per text when neither ``backbone.input_size`` nor the model's folder says: a quarter
of BERT's 512 (attention's cost grows with its square). A sentence-transformers folder says,
in ``sentence_bert_config.json`` (``max_seq_length``: all-MiniLM-L6-v2's 256, which on e-mail
classified better than 128: ``benchmarks/results/text-256.md``)."""

IMAGE_CONFIG_KEYS = ("image_size", "num_channels", "patch_size")
"""Config keys of vision models: a folder whose config has none of them and which holds a
tokenizer is a text model."""


@dataclass(frozen=True)
class TextModelFolder:
    """A local Hugging Face text-encoder folder, as the backends need it.

    Attributes:
        path: the folder (``config.json``, ``model.safetensors``, ``tokenizer.json``).
        config: ``config.json``, parsed.
        tokenizer: the tokenizer file.
        pad_id: the padding token's id (the tokenizer's, else the config's, else 0).
        max_positions: the longest input the position embeddings cover.
        default_length: tokens per text when the recipe does not say: the folder's own
            ``max_seq_length``, else :data:`DEFAULT_MAX_LENGTH` (at most ``max_positions``).
        pooling: the model's own pooling, ``mean`` or ``cls`` (``1_Pooling/config.json`` of a
            sentence-transformers folder; ``cls`` otherwise, as BERT's classifiers pool).
    """

    path: Path
    config: dict[str, Any]
    tokenizer: Path
    pad_id: int
    max_positions: int
    pooling: str
    default_length: int = DEFAULT_MAX_LENGTH

    def input_spec(self, max_length: int | None = None) -> InputSpec:
        """The model's :class:`~tlcore.interfaces.InputSpec`: token ids of ``max_length``
        (default :attr:`default_length`, at most :attr:`max_positions`).

        Raises:
            TlcoreError: ``max_length`` is longer than the model's position embeddings.
        """
        length = max_length or min(self.default_length, self.max_positions)
        if length > self.max_positions:
            raise TlcoreError(
                f"backbone.input_size {length} is longer than this text model's "
                f"{self.max_positions} positions ({self.path})",
                f"set backbone.input_size to at most {self.max_positions} tokens",
            )
        return InputSpec.text(TextPreprocessing(str(self.tokenizer), length, self.pad_id))


def is_text_model(folder: Path) -> bool:
    """Whether a local Hugging Face folder holds a text model (a tokenizer, no image config)."""
    config = folder / "config.json"
    if not config.is_file() or not (folder / TOKENIZER_FILE).is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return not any(key in data for key in IMAGE_CONFIG_KEYS)


OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")
"""Model types whose position ids start after the padding id (``pad_id + 1``): RoBERTa's 514
position embeddings hold 512 tokens, and a 514-token input would index past the table."""


def text_model_folder(name: str) -> TextModelFolder:
    """Read a text model's folder: a local folder, or a hub id already in the Hugging Face
    cache (tlcore downloads nothing while training).

    Raises:
        TlcoreError: the folder or its config or tokenizer is missing or unreadable.
    """
    path = resolve_folder(name)
    config = _json(path / "config.json", "config.json")
    tokenizer = path / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise TlcoreError(
            f"text model {name} has no {TOKENIZER_FILE}",
            "save the tokenizer with a fast tokenizer: "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder)",
        )
    pad_id = _pad_id(_json(tokenizer, TOKENIZER_FILE), config)
    positions = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") in OFFSET_POSITIONS:
        positions -= pad_id + 1
    return TextModelFolder(path, config, tokenizer, pad_id, positions, _pooling(path),
                           _own_length(path))


def resolve_folder(name: str) -> Path:
    """The local folder of ``name``: the folder itself, or a hub id's snapshot in the Hugging
    Face cache.

    Raises:
        TlcoreError: neither exists; says how to get the folder.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if local.exists() or name.startswith((".", "/", "~")):
        raise TlcoreError(
            f"Hugging Face model folder not found: {name}"
            + (" (it is a file)" if local.exists() else ""),
            "give a folder written by save_pretrained (with config.json and tokenizer.json)",
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # not cached, or huggingface_hub missing: one answer
        raise TlcoreError(
            f"text model {name!r} is neither a folder nor in the Hugging Face cache ({exc})",
            "download it once where there is a connection (save_pretrained to a folder) and "
            "give the folder: tlcore downloads nothing while training",
        ) from None


def _json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TlcoreError(
            f"{path.parent} has no {what}", "give a folder written by save_pretrained"
        ) from None
    except (OSError, ValueError) as exc:
        raise TlcoreError(f"cannot read {path}: {exc}", f"restore the model's {what}") from None
    if not isinstance(data, dict):
        raise TlcoreError(f"{path} is not a JSON object", f"restore the model's {what}")
    return data


def _pad_id(tokenizer: dict[str, Any], config: dict[str, Any]) -> int:
    padding = tokenizer.get("padding") or {}
    if isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    vocab = (tokenizer.get("model") or {}).get("vocab")
    if isinstance(vocab, dict) and isinstance(vocab.get("[PAD]"), int):
        return int(vocab["[PAD]"])
    return int(config.get("pad_token_id") or 0)


def _pooling(path: Path) -> str:
    pooling = path / "1_Pooling" / "config.json"
    if not pooling.is_file():
        return "cls"
    data = _json(pooling, "1_Pooling/config.json")
    return "cls" if data.get("pooling_mode_cls_token") else "mean"


def _own_length(path: Path) -> int:
    """The tokens per text a sentence-transformers folder encodes (``max_seq_length`` of its
    ``sentence_bert_config.json``), else :data:`DEFAULT_MAX_LENGTH`."""
    config = path / "sentence_bert_config.json"
    if not config.is_file():
        return DEFAULT_MAX_LENGTH
    length = _json(config, config.name).get("max_seq_length")
    return length if isinstance(length, int) and length > 0 else DEFAULT_MAX_LENGTH
