"""The files ``tl embed`` writes: each format read back with its own reader, rows in order, the
labels of labelled data kept and those of unlabelled inputs absent, and an unknown extension
refused. (A run's embeddings against the native model: tests/test_text_vector_runs.py.)"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tlcore.embeddings import Embeddings, rows_file
from tlcore.errors import TlcoreError

VECTORS = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
SOURCES = ("a/1.txt", "a/2.txt", "mails.csv:3")


@pytest.mark.parametrize("labels", [("ham", "ham", "spam"), None])
def test_npz_and_npy_read_back_without_pickle(tmp_path, labels):
    made = Embeddings(VECTORS, SOURCES, labels, "onnxruntime")
    with np.load(made.save(tmp_path / "e.npz"), allow_pickle=False) as saved:
        np.testing.assert_array_equal(saved["embeddings"], VECTORS)
        assert tuple(saved["sources"]) == SOURCES
        assert ("labels" in saved.files) == (labels is not None)
        if labels is not None:
            assert tuple(saved["labels"]) == labels
    path = made.save(tmp_path / "e.npy")
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), VECTORS)
    with rows_file(path).open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["source"] for r in rows] == list(SOURCES)
    assert [r["label"] for r in rows] == list(labels or ("", "", ""))


@pytest.mark.parametrize("labels", [("ham", "ham", "spam"), None])
def test_parquet_is_a_table_of_source_label_and_embedding(tmp_path, labels):
    pq = pytest.importorskip("pyarrow.parquet")  # the parquet extra, in all and dev
    Embeddings(VECTORS, SOURCES, labels, "torch").save(tmp_path / "e.parquet")
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column_names == ["source", "label", "embedding"]
    assert table.column("source").to_pylist() == list(SOURCES)
    assert table.column("label").to_pylist() == list(labels or (None, None, None))
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(got, VECTORS)  # float32 kept, not widened and rounded


def test_an_unknown_extension_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(TlcoreError, match="unknown extension") as info:
        Embeddings(VECTORS, SOURCES, None, "keras").save(tmp_path / "e.h5")
    assert ".parquet" in info.value.hint
    assert not list(tmp_path.iterdir())
