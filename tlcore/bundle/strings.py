"""A text model's ONNX graph that takes strings: the tokenizer inside, checked against
Hugging Face ``tokenizers``.

A text model's raw graph takes int64 token ids ``(batch, max_length)``; :func:`strings_model`
puts a tokenizer in front of it (onnxruntime-extensions' operators, see
:mod:`tlcore.bundle.tokenizer_graph`), so the graph takes a string tensor ``texts`` (batch,)
and gives the same outputs. Running it needs onnxruntime-extensions' library registered in
the session (:func:`session` does it). :func:`expressible` says whether a tokenizer.json can
be built so, :func:`tokenizer_parity` compares the graph's ids with ``tokenizers``' text by
text, and :func:`check_strings_model` turns both into one reason to refuse the graph.

Example:
    >>> reason = expressible(prep)  # doctest: +SKIP
    >>> if reason is None:  # doctest: +SKIP
    ...     model = strings_model(ids_model, prep)
    ...     assert check_strings_model(model, prep, validation_texts) is None
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.bundle.tokenizer_graph import CONTRIB, PREFIX, OpSettings, tables_of, tokenizer_nodes
from tlcore.bundle.tokenizer_graph import tokenizer_model as _tokenizer_model
from tlcore.errors import TlcoreError
from tlcore.interfaces import TextPreprocessing

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime

TEXTS = "texts"
"""The strings model's input: a string tensor (batch,)."""

INSTALL_EXTENSIONS = "pip install onnxruntime-extensions"
"""The reason given where onnxruntime-extensions is not installed."""

MIN_OPSET = 11
"""The oldest default-domain opset the tokenizer's Loop, Pad and Gather work in."""

_CHUNK = 64


def expressible(prep: TextPreprocessing) -> str | None:
    """``None`` where ``prep``'s tokenizer can be built with onnxruntime-extensions' ops (a
    WordPiece model, ``BertNormalizer``, ``BertPreTokenizer``, ``[CLS] $A [SEP]``), else why
    not, in a sentence (``"pip install onnxruntime-extensions"`` when that is missing)."""
    for module, reason in (("onnxruntime_extensions", INSTALL_EXTENSIONS),
                           ("tokenizers", "pip install tokenizers"), ("onnx", "pip install onnx")):
        if importlib.util.find_spec(module) is None:
            return reason
    try:
        data = json.loads(Path(prep.tokenizer).read_text(encoding="utf-8"))
        _op_settings(data, prep)
    except (OSError, ValueError) as exc:
        return str(exc)
    except (KeyError, TypeError, AttributeError) as exc:
        return f"the tokenizer file has an unexpected layout ({type(exc).__name__}: {exc})"
    return None


def _op_settings(data: dict[str, Any], prep: TextPreprocessing) -> OpSettings:
    """What the op needs, or a ValueError naming what the ops cannot do."""
    model = data.get("model") or {}
    if model.get("type") != "WordPiece":
        raise ValueError(f"the tokenizer is a {model.get('type')} model; the ops do WordPiece")
    if int(model.get("max_input_chars_per_word", 100)) != 100:
        raise ValueError("the ops cut words at 100 characters; this tokenizer at "
                         f"{model['max_input_chars_per_word']}")
    for part, wanted in (("normalizer", "BertNormalizer"), ("pre_tokenizer", "BertPreTokenizer")):
        kind = (data.get(part) or {}).get("type")
        if kind != wanted:
            raise ValueError(f"the tokenizer's {part} is {kind}; the ops follow {wanted} only")
    vocab: dict[str, int] = model["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError("the vocabulary's ids are not 0 .. size - 1")
    if any(not t or "\n" in t or "\r" in t for t in tokens):
        raise ValueError("a vocabulary token is empty or holds a line break")
    for added in data.get("added_tokens") or []:
        if not added.get("special") or vocab.get(added["content"]) != added["id"]:
            raise ValueError(f"the added token {added['content']!r} is not a special token "
                             "of the vocabulary; the ops cannot match added tokens")
    cls, sep = _template(data.get("post_processor") or {}, vocab)
    unk = model.get("unk_token", "[UNK]")
    if unk not in vocab:
        raise ValueError(f"the unknown token {unk!r} is not in the vocabulary")
    if not 0 <= prep.pad_id < len(tokens) or prep.max_length < 2:
        raise ValueError(f"pad id {prep.pad_id} / max_length {prep.max_length} do not fit a "
                         f"vocabulary of {len(tokens)} (max_length must be at least 2)")
    specials = {a["content"] for a in data.get("added_tokens") or []}
    return OpSettings("\n".join(tokens), unk, cls, sep, tokens[prep.pad_id],
                      model.get("continuing_subword_prefix", "##"),
                      unk if unk in specials else None)


def _template(post: dict[str, Any], vocab: dict[str, int]) -> tuple[str, str]:
    """The first and last special tokens of ``[CLS] $A [SEP]`` (TemplateProcessing or
    BertProcessing), or a ValueError."""
    if post.get("type") == "BertProcessing":
        (cls, cls_id), (sep, sep_id) = post["cls"], post["sep"]
    elif post.get("type") == "TemplateProcessing":
        single = post.get("single") or []
        shape = [next(iter(item)) for item in single]
        if shape != ["SpecialToken", "Sequence", "SpecialToken"] or any(
                next(iter(item.values())).get("type_id", 0) != 0 for item in single):
            raise ValueError("the tokenizer's template is not [CLS] $A [SEP]; the ops add "
                             "exactly one token before and one after")
        cls, sep = single[0]["SpecialToken"]["id"], single[2]["SpecialToken"]["id"]
        specials = post.get("special_tokens") or {}
        cls_id, sep_id = (specials.get(t, {}).get("ids", [None]) for t in (cls, sep))
        cls_id, sep_id = (ids[0] if len(ids) == 1 else None for ids in (cls_id, sep_id))
    else:
        raise ValueError(f"the tokenizer's post-processor is {post.get('type')}; the ops add "
                         "[CLS] ... [SEP] (TemplateProcessing or BertProcessing)")
    for token, wanted in ((cls, cls_id), (sep, sep_id)):
        if vocab.get(token) is None or vocab[token] != wanted:
            raise ValueError(f"the special token {token!r} is not the vocabulary's id {wanted}")
    return cls, sep


def _graph_parts(prep: TextPreprocessing, texts: str, ids: str) -> tuple[list[Any], list[Any]]:
    reason = expressible(prep)
    if reason is not None:
        raise TlcoreError(f"cannot put this tokenizer into the ONNX graph: {reason}",
                          "use the token-ids model with tokenizers, or " + INSTALL_EXTENSIONS
                          if reason == INSTALL_EXTENSIONS else "use the token-ids model")
    path = Path(prep.tokenizer).resolve()
    info = path.stat()
    tables, data = tables_of(str(path), info.st_mtime_ns, info.st_size)
    return tokenizer_nodes(tables, _op_settings(data, prep), texts, ids,
                           prep.max_length, prep.pad_id)


def tokenizer_model(prep: TextPreprocessing) -> onnx.ModelProto:
    """The tokenizer alone: ``texts`` (batch,) strings to ``input_ids`` (batch,
    ``max_length``) int64, as :func:`tlcore.inputs.text.encode` makes them.

    Raises:
        TlcoreError: the tokenizer is not :func:`expressible`.
    """
    nodes, inits = _graph_parts(prep, TEXTS, "input_ids")
    return _tokenizer_model(nodes, inits, TEXTS, "input_ids", prep.max_length)


def strings_model(ids_model: onnx.ModelProto, prep: TextPreprocessing) -> onnx.ModelProto:
    """``ids_model`` (one int64 input ``(batch, max_length)``) with the tokenizer in front:
    one string input ``texts`` (batch,), the same outputs, metadata and opsets (plus
    onnxruntime-extensions' domain), and the metadata key ``tlcore.strings``.

    Raises:
        TlcoreError: the tokenizer is not :func:`expressible`, or the model does not take
            one int64 ids input of ``prep.max_length`` (or its opset is older than 11).
    """
    import onnx

    graph = ids_model.graph
    initialized = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialized]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.INT64:
        raise TlcoreError("a strings model needs a graph with one int64 token-ids input; "
                          f"this one takes {[i.name for i in inputs]}",
                          "pass the text model's raw ONNX graph")
    ids = inputs[0].name
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 2 or dims[1] not in (None, prep.max_length):
        raise TlcoreError(f"the model's input {ids} has shape {dims}, not (batch, "
                          f"{prep.max_length})", "export it with the tokenizer's max_length")
    opset = next((o.version for o in ids_model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise TlcoreError(f"the model's opset {opset} is older than {MIN_OPSET}",
                          f"export it with opset {MIN_OPSET} or newer")
    if TEXTS in _names(graph) or any(n.startswith(PREFIX) for n in _names(graph)):
        raise TlcoreError(f"the model already uses the name {TEXTS!r} or {PREFIX}*",
                          "rename it, or pass the raw token-ids graph")
    nodes, inits = _graph_parts(prep, TEXTS, ids)
    model = onnx.ModelProto()
    model.CopyFrom(ids_model)
    new = model.graph
    new.ClearField("input")
    new.input.extend([onnx.helper.make_tensor_value_info(TEXTS, onnx.TensorProto.STRING,
                                                         [dims[0] or _batch_name(inputs[0])])])
    old_nodes = list(new.node)
    new.ClearField("node")
    new.node.extend(nodes + old_nodes)
    new.initializer.extend(inits)
    new.value_info.append(inputs[0])
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB, 1))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "tlcore.strings": json.dumps(
                                            {"input": TEXTS, "ids": ids, **prep.to_dict()})})
    return model


def _names(graph: Any) -> set[str]:
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names - {""}


def _batch_name(value: Any) -> str:
    dim = value.type.tensor_type.shape.dim[0]
    return dim.dim_param or "batch"


def session(model: onnx.ModelProto | str | os.PathLike[str],
            threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session of a strings (or tokenizer) model, with
    onnxruntime-extensions' operators registered.

    Raises:
        TlcoreError: onnxruntime-extensions is not installed.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(extensions_library())
    if threads:
        options.intra_op_num_threads = threads
    data = model if isinstance(model, str | os.PathLike) else model.SerializeToString()
    return ort.InferenceSession(data if isinstance(data, bytes) else str(data), options,
                                providers=["CPUExecutionProvider"])


def extensions_library() -> str:
    """The path of onnxruntime-extensions' operator library, found without importing the
    package: its ``__init__`` imports ``transformers`` (and with it torch) when installed,
    seconds and a framework that running a strings model does not need.

    Raises:
        TlcoreError: onnxruntime-extensions is not installed.
    """
    spec = importlib.util.find_spec("onnxruntime_extensions")
    if spec is None or not spec.submodule_search_locations:
        raise TlcoreError("running a strings model needs onnxruntime-extensions",
                          INSTALL_EXTENSIONS)
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("_extensions_pydll*"))
        found = [path for path in found if path.suffix in (".so", ".pyd", ".dylib")]
        if found:
            return str(found[0])
    import onnxruntime_extensions  # an unusual layout: ask the package itself

    return str(onnxruntime_extensions.get_library_path())


@dataclass(frozen=True)
class Disagreement:
    """One text the graph tokenizes otherwise than ``tokenizers``.

    Attributes:
        index: the text's position in the texts checked.
        excerpt: the text around the first token that differs.
        position: that token's position in the ids.
        expected: ``tokenizers``' ids from there (a few).
        got: the graph's ids from there (a few).
    """

    index: int
    excerpt: str
    position: int
    expected: list[int]
    got: list[int]


@dataclass(frozen=True)
class TokenizerParity:
    """The tokenizer graph against ``tokenizers`` on some texts.

    Attributes:
        checked: texts compared.
        agreed: texts whose ids are the same, all ``max_length`` of them.
        disagreements: the first few texts that differ.
    """

    checked: int
    agreed: int
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every text agreed (no texts checked is not ok)."""
        return self.checked > 0 and self.agreed == self.checked

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as recorded in ``tlcore.json``."""
        return {"checked": self.checked, "agreed": self.agreed, "ok": self.ok,
                "disagreements": [vars(d) for d in self.disagreements]}

    def describe(self) -> str:
        """One line: how many agreed, and the first disagreement."""
        line = f"{self.agreed} of {self.checked} texts tokenized alike"
        if self.disagreements:
            d = self.disagreements[0]
            line += (f"; text {d.index} differs at token {d.position} ({d.excerpt!r}: "
                     f"tokenizers {d.expected}, graph {d.got})")
        return line


def tokenizer_parity(prep: TextPreprocessing, texts: Sequence[str],
                     session_or_model: Any = None, keep: int = 5) -> TokenizerParity:
    """``tokenizers``' ids (:func:`tlcore.inputs.text.encode`) against the tokenizer graph's,
    text by text. ``session_or_model``: a strings model (its tokenizer part is run), a
    tokenizer model or a session of one; ``None`` builds :func:`tokenizer_model`. ``keep``
    disagreements are described."""
    from tlcore.inputs.text import encode, tokenizer

    run = _tokenizer_runner(prep, session_or_model)
    expected = encode(texts, prep)
    got = _run_chunks(run, list(texts), prep.max_length)
    disagreements: list[Disagreement] = []
    agreed = 0
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if (want == have).all():
            agreed += 1
        elif len(disagreements) < keep:
            pos = int((want != have).argmax())
            offsets = tokenizer(prep).encode(texts[index]).offsets
            start, end = offsets[pos] if pos < len(offsets) and offsets[pos] != (0, 0) else (0, 0)
            excerpt = texts[index][max(0, start - 20):end + 20]
            disagreements.append(Disagreement(index, excerpt, pos, want[pos:pos + 6].tolist(),
                                              have[pos:pos + 6].tolist()))
    return TokenizerParity(len(expected), agreed, disagreements)


def _tokenizer_runner(prep: TextPreprocessing, given: Any) -> Any:
    """A function from a string array to the graph's ids."""
    import onnx

    if given is None:
        given = tokenizer_model(prep)
    if isinstance(given, onnx.ModelProto):
        given = session(_tokenizer_part(given, prep))
    name = given.get_inputs()[0].name
    out = [o.name for o in given.get_outputs() if o.type == "tensor(int64)"][:1]
    return lambda batch: given.run(out, {name: batch})[0]


def _tokenizer_part(model: onnx.ModelProto, prep: TextPreprocessing) -> onnx.ModelProto:
    """The tokenizer nodes of a strings model (or the model itself if it is a tokenizer)."""
    meta = {p.key: p.value for p in model.metadata_props}
    if "tlcore.strings" not in meta:
        return model
    ids = json.loads(meta["tlcore.strings"])["ids"]
    nodes = [n for n in model.graph.node if n.name.startswith(PREFIX)]
    inits = [i for i in model.graph.initializer if i.name.startswith(PREFIX)]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return _tokenizer_model(nodes, inits, TEXTS, ids, prep.max_length, opset)


def _run_chunks(run: Any, texts: list[str], length: int) -> np.ndarray:
    import numpy as np

    parts = [np.asarray(run(np.array(texts[i:i + _CHUNK], dtype=object)), dtype=np.int64)
             for i in range(0, len(texts), _CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, length), dtype=np.int64)


def check_strings_model(model: onnx.ModelProto, prep: TextPreprocessing, texts: Sequence[str],
                        ids_model: onnx.ModelProto | None = None,
                        atol: float = 1e-5) -> tuple[TokenizerParity, str | None]:
    """The tokenizer's parity on ``texts`` and the reason to refuse ``model`` (``None``: keep
    it). With ``ids_model``, every output of ``model`` on the texts must also equal
    ``ids_model``'s on ``tokenizers``' ids (floats within ``atol`` plus 1e-5 relative)."""
    import numpy as np

    from tlcore.inputs.text import encode

    parity = tokenizer_parity(prep, texts, model)
    if not parity.ok:
        return parity, f"the tokenizer graph disagrees with tokenizers: {parity.describe()}"
    if ids_model is None:
        return parity, None
    strings, plain = session(model), session(ids_model)
    ids_name = plain.get_inputs()[0].name
    batch = list(texts)[:_CHUNK]
    got = strings.run(None, {TEXTS: np.array(batch, dtype=object)})
    want = plain.run(None, {ids_name: encode(batch, prep)})
    for out, g, w in zip(plain.get_outputs(), got, want, strict=True):
        same = (np.allclose(g, w, atol=atol, rtol=1e-5) if np.issubdtype(w.dtype, np.floating)
                else np.array_equal(g, w))
        if not same:
            return parity, f"the strings model's output {out.name} differs from the ids model's"
    return parity, None
