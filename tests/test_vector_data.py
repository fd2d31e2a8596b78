"""Numeric vectors as data and as runtime inputs: arrays, .npz, .npy and CSV files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tlcore.data import VectorDataset, load_datasets, split
from tlcore.errors import DataError
from tlcore.inputs import MODALITIES, modality
from tlcore.inputs.vector import VectorInputs, as_vectors
from tlcore.interfaces import InputSpec, Preprocessing, VectorPreprocessing
from tlcore.recipe import DataSpec


def spec(features: int) -> InputSpec:
    return InputSpec.vector(VectorPreprocessing.identity(features))


def blobs(n: int = 40, features: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return rng.normal(size=(n, features)) + y[:, None] * 3.0, y


def test_api_tuple_makes_vectors_kept_exactly_as_float32():
    x, y = blobs()
    x[0, 0] = 0.123456789
    train, val = load_datasets(DataSpec(val_split=0.25), 0, arrays=(x, y, ["a", "b"]))
    assert isinstance(train, VectorDataset) and train.modality == "vector"
    assert train.class_names == ("a", "b") and len(train) + len(val) == 40
    assert train.describe().startswith("30 vectors, 2 classes")
    whole = load_datasets(DataSpec(val_split=0), 0, arrays=(x, y))[0]
    assert whole.vectors([0]).dtype == np.float32
    assert whole.vectors([0])[0, 0] == np.float32(0.123456789)  # narrowed, not rounded
    np.testing.assert_array_equal(whole.inputs(np.arange(40), spec(5)), x.astype(np.float32))
    ints = load_datasets(DataSpec(val_split=0), 0,
                         arrays=(np.arange(12).reshape(6, 2), [0, 1] * 3))[0]
    assert ints.vectors([5]).tolist() == [[10.0, 11.0]]
    lists = load_datasets(DataSpec(val_split=0), 0, arrays=([[1, 2], [3, 4]], [0, 1]))[0]
    assert isinstance(lists, VectorDataset) and lists.features == 2
    stats = VectorPreprocessing.of(train.vectors(np.arange(len(train))))
    assert stats.features == 5
    # The caller's float32 array is read without a copy, and left as it was: writeable.
    own = x.astype(np.float32)
    load_datasets(DataSpec(val_split=0), 0, arrays=(own, y))
    assert own.flags.writeable


def test_split_subsets_and_fingerprint():
    x, y = blobs()
    data = VectorDataset(x, y)
    _, val = split(data, 0.25, seed=1)
    np.testing.assert_array_equal(val.vectors(np.arange(len(val))),
                                  x.astype(np.float32)[val.source_indices])
    assert data.fingerprint()["digest"] == VectorDataset(x.copy(), y).fingerprint()["digest"]
    x2 = x.copy()
    x2[3, 1] += 1e-3
    assert data.fingerprint()["digest"] != VectorDataset(x2, y).fingerprint()["digest"]


def test_vector_errors_name_the_rows():
    x, y = blobs(8, 3)
    x[2, 1] = np.nan
    x[5, 0] = np.inf
    with pytest.raises(DataError, match=r"2 row\(s\) hold NaN or infinite.*row 2 \(feature 1\), "
                                        r"row 5 \(feature 0\)"):
        VectorDataset(x, y)
    with pytest.raises(DataError, match="beyond float32"):
        VectorDataset(np.full((2, 2), 1e300), [0, 1])
    with pytest.raises(DataError, match="real numbers"):
        VectorDataset(np.ones((2, 2), dtype=complex), [0, 1])
    with pytest.raises(DataError, match="got 2 images but 3 labels"):
        VectorDataset(np.ones((2, 2)), [0, 1, 0])
    data = VectorDataset(np.ones((2, 3)), [0, 1])
    with pytest.raises(DataError, match="takes vectors of 4 features but the data has 3"):
        data.inputs([0], spec(4))
    with pytest.raises(DataError, match="the model takes images but the data holds vectors"):
        data.inputs([0], InputSpec.image(Preprocessing((8, 8))))


def test_npz_file(tmp_path):
    x, y = blobs(10, 4)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y, class_names=np.array(["no", "yes"]))
    data = load_datasets(DataSpec(path=str(path), val_split=0), 0)[0]
    assert data.class_names == ("no", "yes") and data.source == path
    np.testing.assert_array_equal(data.vectors(np.arange(10)), x.astype(np.float32))
    named = tmp_path / "named.npz"
    np.savez(named, x=x, y=np.array(["no", "yes"] * 5))
    assert load_datasets(DataSpec(path=str(named), val_split=0), 0)[0].class_names == (
        "no", "yes")

    missing = tmp_path / "missing.npz"
    np.savez(missing, features=x, y=y)
    with pytest.raises(DataError, match="has no array x; it holds features, y"):
        load_datasets(DataSpec(path=str(missing)), 0)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=x, y=np.array([{"a": 1}] * 10, dtype=object))
    with pytest.raises(DataError, match="cannot read") as info:
        load_datasets(DataSpec(path=str(pickled)), 0)
    assert "allow_pickle" not in str(info.value) and "pickled" in info.value.hint
    fake = tmp_path / "fake.npz"
    fake.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(DataError, match="cannot read"):
        load_datasets(DataSpec(path=str(fake)), 0)
    short = tmp_path / "short.npz"
    np.savez(short, x=x, y=y[:7])
    with pytest.raises(DataError, match="10 vectors but 7 labels"):
        load_datasets(DataSpec(path=str(short)), 0)


def test_npy_features_with_npy_labels(tmp_path):
    x, y = blobs(10, 4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    spec_ = DataSpec(path=str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"), val_split=0)
    data = load_datasets(spec_, 0)[0]
    assert isinstance(data, VectorDataset) and data.labels.tolist() == y.tolist()
    with pytest.raises(DataError, match=r"data\.labels must be a \.npy file of labels"):
        load_datasets(DataSpec(path=str(tmp_path / "x.npy")), 0)
    with pytest.raises(DataError, match="data file not found"):
        load_datasets(DataSpec(path=str(tmp_path / "x.npy"), labels=str(tmp_path / "z.npy")), 0)


def test_csv_of_numeric_features(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("a,b,label,c\n1.5,2,x,3e-1\n4,5,y,6\n\n7,8,x,9\n")
    data = load_datasets(DataSpec(path=str(path), val_split=0), 0)[0]
    assert isinstance(data, VectorDataset) and data.class_names == ("x", "y")
    assert data.vectors([0, 2]).tolist() == [[1.5, 2.0, np.float32(0.3)], [7.0, 8.0, 9.0]]
    assert data.labels.tolist() == [0, 1, 0]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n3,,y\n4,nan,x\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': '' is not a number"):
        load_datasets(DataSpec(path=str(bad)), 0)
    bad.write_text("a,b,label\n1,2,x\n4,nan,x\n5,6,y\n")
    with pytest.raises(DataError, match=r"bad.csv line 3 \(feature 1\)"):
        load_datasets(DataSpec(path=str(bad)), 0)
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no column 'label'; its columns are 'a', 'b'"):
        load_datasets(DataSpec(path=str(bad)), 0)
    scores = tmp_path / "scores.csv"
    scores.write_text("f1,f2,label\n1,2,0.5\n3,4,1.5\n")
    reg = load_datasets(DataSpec(path=str(scores), val_split=0), 0, task="regression")[0]
    assert reg.labels.tolist() == [0.5, 1.5] and reg.describe().startswith("2 vectors")


def test_vector_inputs_for_the_runtime(tmp_path):
    assert MODALITIES["vector"] == "tlcore.inputs.vector:VectorInputs"
    inputs = modality(spec(3))
    assert isinstance(inputs, VectorInputs)
    np.save(tmp_path / "rows.npy", np.arange(6, dtype=np.float64).reshape(2, 3))
    (tmp_path / "rows.csv").write_text("a,b,c\n1,2,3\n\n4,5,6.5\n")

    items = inputs.expand([np.ones((2, 3)), np.zeros(3), tmp_path / "rows.npy",
                           str(tmp_path / "rows.csv")])
    names = [name for name, _ in items]
    assert names[:3] == ["<array 0.0>", "<array 0.1>", "<vector 1>"]
    assert names[3] == f"{tmp_path / 'rows.npy'}[0]"
    assert names[5:] == [f"{tmp_path / 'rows.csv'} line 2", f"{tmp_path / 'rows.csv'} line 4"]
    rows = np.stack([inputs.decode(item, spec(3)) for _, item in items])
    assert rows.dtype == np.float32 and rows[-1].tolist() == [4.0, 5.0, 6.5]
    assert inputs.expand([0.5, 1, 2]) == [("<vector 0>", pytest.approx(np.array([0.5, 1, 2])))]
    with pytest.raises(DataError, match="takes vectors of 3 features; got 2"):
        inputs.decode(np.ones(2), spec(3))
    with pytest.raises(DataError, match="NaN"):
        inputs.decode(np.array([1.0, np.nan, 2.0]), spec(3))
    assert inputs.check(np.ones((4, 3), dtype=np.int64), spec(3)).dtype == np.float32
    with pytest.raises(DataError, match="takes vectors of 3 features"):
        inputs.check(np.ones((4, 2)), spec(3))
    with pytest.raises(DataError, match="vectors file not found"):
        inputs.expand(Path(tmp_path / "none.npy"))
    (tmp_path / "words.csv").write_text("a,b\nx,y\n")
    with pytest.raises(DataError, match="other than numbers"):
        inputs.expand(tmp_path / "words.csv")
    assert as_vectors([[1, 2]]).flags.c_contiguous
