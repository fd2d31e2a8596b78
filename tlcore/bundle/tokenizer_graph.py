"""A BERT WordPiece tokenizer as an ONNX graph: strings in, tlcore's token ids out.

onnxruntime-extensions' ``BertTokenizer`` op does WordPiece, but not quite as Hugging Face
``tokenizers`` does, measured on every code point: it strips accents only from Latin-1
letters (``ő``, ``ą``, ``ş``, Arabic hamza forms, Greek tonos... become ``[UNK]``), keeps what
``clean_text`` removes (U+FFFD, format and private-use characters, variation selectors,
combining marks), misses most non-ASCII punctuation and the Unicode line separators, does
not decompose Hangul, and where a word fails WordPiece half way it keeps the pieces before
the ``[UNK]`` where Hugging Face makes the whole word one ``[UNK]``. It also tokenizes one
text (or one pair) per call, not a batch.

So the graph does Hugging Face's normalisation itself, from tables that :func:`char_tables`
reads out of the tokenizer's own normalizer and pre-tokenizer (one call per code point,
batched; context-free for ``BertNormalizer``), and leaves the op only its WordPiece:

1. ``StringRegexReplace`` passes on the batch: a literal unknown token becomes one character
   the op maps to ``[UNK]``; characters the normalizer removes go; white space becomes a
   space; CJK ideographs get spaces around them.
2. A ``Loop`` over the texts: split into characters, map each (``StringMapping``: lower case,
   accents stripped, Hangul decomposed, punctuation padded with spaces), join; a word holding
   a character no WordPiece piece can continue with becomes that one unknown character (the
   op's half-way ``[UNK]``); ``BertTokenizer`` (lower case and accent stripping off, cut to
   ``max_length``); padded at the end with ``pad_id``.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx
    from tokenizers import Tokenizer

CONTRIB = "ai.onnx.contrib"
"""onnxruntime-extensions' operator domain."""

PREFIX = "tlcore_tokenizer/"
"""Prefix of every node and value name the tokenizer adds to a graph."""

_ASCII_PUNCT = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum())
_CHUNK = 65536
_SEPARATOR = "|"  # normalises to itself and is no code point's normalisation (checked)
_SPLIT_CHARS = "(.)"  # the op keeps delimiters that a group captures; "." alone splits nothing


@dataclass(frozen=True)
class CharTables:
    """What Hugging Face's normaliser and pre-tokenizer do to each code point, as the graph
    needs it.

    Attributes:
        removed: code points the normaliser deletes (``clean_text``, combining marks).
        spaces: code points that end a word as white space does (other than the space).
        padded: code points the normaliser surrounds with spaces and leaves alone (CJK).
        mapping: every other code point the graph must change: its normalised text, with
            punctuation surrounded by spaces and white space made a space.
        continuing: characters some WordPiece piece holds after its first character (a
            word holding any other character after its first fails WordPiece).
        unknown: a character that is in no piece and that nothing changes: the op maps it
            to ``[UNK]`` on its own.
    """

    removed: frozenset[int]
    spaces: frozenset[int]
    padded: frozenset[int]
    mapping: dict[str, str]
    continuing: frozenset[str]
    unknown: str


def char_tables(tok: Tokenizer, vocab: dict[str, int], specials: Iterable[str]) -> CharTables:
    """The :class:`CharTables` of ``tok`` (a ``BertNormalizer`` / ``BertPreTokenizer``
    tokenizer) with WordPiece ``vocab``; ``specials`` are the special tokens' texts (left out
    of the pieces). About 2 s; cached per tokenizer file by :func:`tables_of`."""
    cps = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    normal = _normalize_each(tok, cps)
    removed = frozenset(cp for cp in cps if normal[cp] == "")
    kind = _char_kinds(tok, set("".join(normal.values())))
    spaces, padded, mapping = set(), set(), {}
    for cp in cps:
        ch, out = chr(cp), normal[cp]
        if not out or ch == " " or (out == ch and ch not in kind):
            continue
        if out == f" {ch} " and kind.get(ch, "word") == "word":
            padded.add(cp)
            continue
        text = "".join(_as_op_sees(c, kind.get(c, "word")) for c in out)
        if text.strip() == "" and text:
            spaces.add(cp)
        elif text != ch:
            mapping[ch] = text
    continuing = _continuing_chars(vocab, set(specials))
    return CharTables(removed, frozenset(spaces), frozenset(padded), mapping,
                      frozenset(continuing), _unknown_char(normal, kind, vocab))


def _normalize_each(tok: Tokenizer, cps: list[int]) -> dict[int, str]:
    """Each code point's normalisation, 65536 at a time joined by a separator (the
    normaliser is per character), one by one for a chunk where that does not split back."""
    normalizer = tok.normalizer
    result: dict[int, str] = {}
    for start in range(0, len(cps), _CHUNK):
        chunk = [cp for cp in cps[start:start + _CHUNK] if chr(cp) != _SEPARATOR]
        parts = normalizer.normalize_str(_SEPARATOR.join(map(chr, chunk))).split(_SEPARATOR)
        if len(parts) != len(chunk):
            parts = [normalizer.normalize_str(chr(cp)) for cp in chunk]
        result.update(zip(chunk, parts, strict=True))
    result[ord(_SEPARATOR)] = normalizer.normalize_str(_SEPARATOR)
    return result


def _char_kinds(tok: Tokenizer, chars: set[str]) -> dict[str, str]:
    """``punct`` or ``space`` for the characters the pre-tokenizer splits at (asked of it;
    ASCII punctuation, white space and every non-letter category are asked, since Unicode
    versions move characters between them), the rest are words."""
    candidates = sorted(c for c in chars if c in _ASCII_PUNCT or c.isspace()
                        or unicodedata.category(c)[0] in "PZSMN")
    pieces = tok.pre_tokenizer.pre_tokenize_str("".join(f" a{c}a" for c in candidates))
    kinds: dict[str, str] = {}
    index = 0
    for c in candidates:
        # each probe gives "a?a" (a word), "a", "?", "a" (punctuation) or "a", "a" (a space)
        if pieces[index][0] == f"a{c}a":
            index += 1
        elif pieces[index + 1][0] == "a":
            kinds[c] = "space"
            index += 2
        else:
            kinds[c] = "punct"
            index += 3
    return kinds


def _as_op_sees(ch: str, kind: str) -> str:
    """A normalised character as the op's input: spaces around punctuation (the op does not
    split at most non-ASCII punctuation), a space for white space."""
    if kind == "space":
        return " "
    if kind == "punct" and ch not in _ASCII_PUNCT:
        return f" {ch} "
    return ch


def _continuing_chars(vocab: dict[str, int], specials: set[str]) -> set[str]:
    chars: set[str] = set()
    for piece in vocab:
        if piece in specials:
            continue
        chars.update(piece[2:] if piece.startswith("##") else piece[1:])
    return chars


def _unknown_char(normal: dict[int, str], kind: dict[str, str], vocab: dict[str, int]) -> str:
    """A letter that no piece holds and the normaliser keeps as it is."""
    in_vocab = {c for piece in vocab for c in piece}
    for cp in range(0xA640, 0x110000):  # Cyrillic Extended-B on: letters BERT never saw
        ch = chr(cp)
        if (unicodedata.category(ch) == "Lo" and normal.get(cp) == ch and ch not in in_vocab
                and ch not in kind):
            return ch
    raise ValueError("no code point is left to stand for an unknown word")


@functools.lru_cache(maxsize=4)
def tables_of(path: str, mtime: int, size: int) -> tuple[CharTables, dict[str, Any]]:
    """:func:`char_tables` of the tokenizer file ``path`` and its parsed JSON (``mtime`` and
    ``size`` only key the cache)."""
    import json

    from tokenizers import Tokenizer

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(path)
    specials = [t["content"] for t in data.get("added_tokens", []) if t.get("special")]
    return char_tables(tok, data["model"]["vocab"], specials), data


def char_class(cps: Iterable[int], negate: bool = False) -> str:
    """An RE2 character class of code points, as ranges (``[\\x{41}-\\x{5A}...]``)."""
    ranges: list[list[int]] = []
    for cp in sorted(set(cps)):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return f"[{'^' if negate else ''}{body}]"


def _strings(value: str) -> Any:
    import numpy as np

    return np.array([value], dtype=object)


@dataclass(frozen=True)
class OpSettings:
    """What the ``BertTokenizer`` op is told besides its vocabulary (see :mod:`strings`)."""

    vocab_text: str
    unk: str
    cls: str
    sep: str
    pad: str
    prefix: str
    unk_literal: str | None


def tokenizer_nodes(tables: CharTables, op: OpSettings, texts: str, ids: str,
                    max_length: int, pad_id: int) -> tuple[list[Any], list[Any]]:
    """The nodes and initializers that turn the string tensor ``texts`` (batch,) into the
    int64 tensor ``ids`` (batch, ``max_length``); every other name starts with
    :data:`PREFIX`."""
    import numpy as np
    from onnx import helper, numpy_helper

    def const(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(value, PREFIX + name))
        return PREFIX + name

    def node(op_type: str, inputs: list[str], outputs: list[str], domain: str = "",
             **attrs: Any) -> Any:
        return helper.make_node(op_type, inputs, outputs, name=PREFIX + outputs[0].split("/")[-1],
                                domain=domain, **attrs)

    inits: list[Any] = []
    nodes: list[Any] = []
    current = texts
    replaces = []
    if op.unk_literal is not None:
        replaces.append(("unk", _re_escape(op.unk_literal), f" {tables.unknown} "))
    replaces += [("removed", char_class(tables.removed), ""),
                 ("spaces", char_class(tables.spaces), " "),
                 ("padded", char_class(tables.padded), " \\0 ")]
    for name, pattern, rewrite in replaces:
        if pattern == "[]":
            continue
        out = PREFIX + f"{name}_out"
        nodes.append(node("StringRegexReplace", [current, const(f"{name}_pattern", _strings(
            pattern)), const(f"{name}_rewrite", _strings(rewrite))], [out], CONTRIB))
        current = out
    word = f"[^\\x20{_re_escape_class(_ASCII_PUNCT)}]"
    bad = char_class([ord(c) for c in tables.continuing] + [0x20] + [ord(c) for c in _ASCII_PUNCT],
                     negate=True)
    normal, words = PREFIX + "normal", PREFIX + "words"
    nodes += [
        node("Shape", [current], [PREFIX + "shape"]),
        node("Reshape", [PREFIX + "shape", const("scalar", np.zeros(0, dtype=np.int64))],
             [PREFIX + "count"]),
        node("Loop", [PREFIX + "count", ""], [PREFIX + "normal_rows"],
             body=_normalise_body(tables, current, const)),
        node("Reshape", [PREFIX + "normal_rows", const("flat", np.array([-1], dtype=np.int64))],
             [normal]),
        # after the whole batch is normalised: one pass of the large pattern, not one a text
        node("StringRegexReplace", [normal, const("bad_pattern", _strings(
            f"{word}+{bad}{word}*")), const("bad_rewrite", _strings(tables.unknown))],
             [words], CONTRIB),
        node("Loop", [PREFIX + "count", ""], [ids],
             body=_tokenize_body(op, words, max_length, pad_id, const)),
    ]
    return nodes, inits


def _body(name: str, nodes: list[Any], out: str, out_type: int, out_shape: list[int]) -> Any:
    """A Loop body of ``nodes`` over the batch index ``<name>/i`` with one scan output."""
    from onnx import TensorProto, helper

    p = f"{PREFIX}{name}/"
    return helper.make_graph(
        [*nodes, helper.make_node("Identity", [p + "cond"], [p + "cond_out"], name=p + "cond")],
        f"tlcore_{name}",
        [helper.make_tensor_value_info(p + "i", TensorProto.INT64, []),
         helper.make_tensor_value_info(p + "cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(p + "cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(p + out, out_type, out_shape)],
    )


def _body_node(name: str) -> Any:
    from onnx import helper

    p = f"{PREFIX}{name}/"

    def node(op_type: str, inputs: list[str], outputs: list[str], domain: str = "",
             **attrs: Any) -> Any:
        return helper.make_node(op_type, [i if i.startswith(PREFIX) or not i else p + i
                                          for i in inputs],
                                [p + o for o in outputs], name=p + outputs[0], domain=domain,
                                **attrs)
    return node


def _normalise_body(tables: CharTables, texts: str, const: Any) -> Any:
    """One text, character by character through the mapping table."""
    import numpy as np
    from onnx import TensorProto

    node = _body_node("normalise")
    mapping = "\n".join(f"{k}\t{v}" for k, v in sorted(tables.mapping.items()))
    one = const("one", np.array([1], dtype=np.int64))
    nodes = [
        node("Reshape", ["i", one], ["index"]),
        node("Gather", [texts, "index"], ["text"], axis=0),
        node("StringRegexSplitWithOffsets",
             ["text", const("chars", _strings(_SPLIT_CHARS)), PREFIX + "chars"],
             ["chars", "begins", "ends", "rows"], CONTRIB),
        node("StringMapping", ["chars"], ["mapped"], CONTRIB, map=mapping),
        node("StringJoin", ["mapped", const("empty", _strings("")),
                            const("axis0", np.array(0, dtype=np.int64))], ["joined"], CONTRIB),
        node("Reshape", ["joined", one], ["row"]),
    ]
    return _body("normalise", nodes, "row", TensorProto.STRING, [1])


def _tokenize_body(op: OpSettings, texts: str, max_length: int, pad_id: int,
                   const: Any) -> Any:
    """One normalised text: WordPiece, cut to ``max_length``, padded to it."""
    import numpy as np
    from onnx import TensorProto

    node = _body_node("tokenize")
    nodes = [
        node("Reshape", ["i", PREFIX + "one"], ["index"]),
        node("Gather", [texts, "index"], ["text"], axis=0),
        node("BertTokenizer", ["text"], ["ids", "types", "mask"], CONTRIB,
             vocab_file=op.vocab_text, do_lower_case=0, strip_accents=0,
             tokenize_chinese_chars=0, do_basic_tokenize=1, unk_token=op.unk,
             cls_token=op.cls, sep_token=op.sep, pad_token=op.pad, mask_token=op.unk,
             suffix_indicator=op.prefix, max_length=max_length),
        node("Shape", ["ids"], ["length"]),
        node("Sub", [const("max_length", np.array([max_length], dtype=np.int64)), "length"],
             ["missing"]),
        node("Concat", [const("zero", np.array([0], dtype=np.int64)), "missing"], ["pads"],
             axis=0),
        node("Pad", ["ids", "pads", const("pad_id", np.array(pad_id, dtype=np.int64))],
             ["row"], mode="constant"),
    ]
    return _body("tokenize", nodes, "row", TensorProto.INT64, [max_length])


def _re_escape(text: str) -> str:
    return "".join(f"\\x{{{ord(c):X}}}" for c in text)


def _re_escape_class(chars: str) -> str:
    return "".join(f"\\x{{{ord(c):X}}}" for c in chars)


def tokenizer_model(nodes: list[Any], inits: list[Any], texts: str, ids: str,
                    max_length: int, opset: int = 17) -> onnx.ModelProto:
    """A model of just the tokenizer: ``texts`` (batch,) strings to ``ids`` (batch,
    ``max_length``)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "tlcore_tokenizer",
        [helper.make_tensor_value_info(texts, TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", max_length])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid(CONTRIB, 1)])
