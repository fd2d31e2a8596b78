"""Datasets on real image files: scanning, errors, conversion, caching, splits, augmentation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlcore.data import (
    ArrayDataset,
    FolderDataset,
    augment,
    load_datasets,
    load_image,
    scan_folder,
    split,
)
from tlcore.demo import MARKER, digits_arrays, write_demo
from tlcore.demofolder import demo_folder
from tlcore.errors import DataError
from tlcore.recipe import DataSpec


def save(path: Path, color: tuple[int, ...] = (200, 30, 60), size=(12, 8), mode="RGB") -> Path:
    """Write a solid image of ``size`` (width, height) to ``path``; format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int], suffix: str = ".png") -> Path:
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            save(root / name / f"{i:03d}{suffix}", (20 * c, 100, 7 * i % 256))
    return root


def jpeg_bytes(size=(64, 48)) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# --- Scanning folders ----------------------------------------------------------------------


def test_scan_sorts_classes_and_keeps_only_image_files(tmp_path):
    make_folder(tmp_path, {"zebra": 2, "ant": 3})
    save(tmp_path / "ant" / "upper.JPG")
    save(tmp_path / "ant" / "deep" / "nested.webp")
    save(tmp_path / "zebra" / "pic.jpeg")
    save(tmp_path / "zebra" / "pic.bmp")
    save(tmp_path / "zebra" / ".hidden.png")
    (tmp_path / "zebra" / "notes.txt").write_text("not an image")
    (tmp_path / "zebra" / "scan.gif").write_bytes(b"GIF89a")
    save(tmp_path / ".ipynb_checkpoints" / "x.png")
    (tmp_path / "labels.csv").write_text("a,b\n")

    data = scan_folder(tmp_path)

    assert isinstance(data, FolderDataset)
    assert data.class_names == ("ant", "zebra")
    assert len(data) == 9
    assert data.labels.dtype == np.int64
    assert data.labels.tolist() == [0] * 5 + [1] * 4
    names = [p.relative_to(tmp_path).as_posix() for p in data.paths]
    assert "ant/upper.JPG" in names
    assert "ant/deep/nested.webp" in names
    assert not any("hidden" in n or n.endswith((".txt", ".gif")) for n in names)
    assert data.describe() == "9 images, 2 classes: ant 5, zebra 4"


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        scan_folder(tmp_path / "nope")
    assert "sub-folder per class" in info.value.hint


def test_path_is_a_file(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        scan_folder(save(tmp_path / "one.png"))


def test_no_class_folders(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no class folders"):
        scan_folder(tmp_path)


def test_single_class(tmp_path):
    make_folder(tmp_path, {"cat": 3})
    with pytest.raises(DataError, match="need at least two classes") as info:
        scan_folder(tmp_path)
    assert "'cat'" in info.value.message


def test_empty_class_is_named(tmp_path):
    make_folder(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / "notes.txt").write_text("no pictures yet")
    with pytest.raises(DataError, match="no images") as info:
        scan_folder(tmp_path)
    assert "bird" in info.value.message
    assert "dog" not in info.value.message


def test_stray_top_level_images(tmp_path):
    make_folder(tmp_path, {"cat": 2, "dog": 2})
    save(tmp_path / "loose.jpg")
    with pytest.raises(DataError, match=r"loose\.jpg") as info:
        scan_folder(tmp_path)
    assert "move them into sub-folders" in info.value.hint


def test_split_folders_are_not_taken_for_classes(tmp_path):
    make_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    make_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    with pytest.raises(DataError, match="split folders") as info:
        scan_folder(tmp_path)
    assert "val_path" in info.value.hint


def test_corrupt_images_are_named_without_a_pil_traceback(tmp_path):
    make_folder(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "cat" / "x.png").write_bytes(b"this is not a png" * 10)
    (tmp_path / "dog" / "cut.jpg").write_bytes(jpeg_bytes()[:1500])
    (tmp_path / "dog" / "fine.jpg").write_bytes(jpeg_bytes() + b"\0" * 16)  # trailing bytes: ok
    with pytest.raises(DataError) as info:
        scan_folder(tmp_path)
    message = info.value.message
    assert "2 of 7 images" in message
    assert str(tmp_path / "cat" / "x.png") in message
    assert str(tmp_path / "dog" / "cut.jpg") in message
    assert "fine.jpg" not in message
    assert "not a recognised image" in message
    assert "truncated" in message
    assert "Traceback" not in str(info.value)


def test_many_corrupt_images_are_listed_up_to_five(tmp_path):
    make_folder(tmp_path, {"cat": 1, "dog": 1})
    for i in range(7):
        (tmp_path / "cat" / f"bad{i}.png").write_bytes(b"")
    with pytest.raises(DataError, match="and 2 more") as info:
        scan_folder(tmp_path)
    assert info.value.message.count("bad") == 5


def test_decode_failure_at_load_time_names_the_file(tmp_path):
    make_folder(tmp_path, {"cat": 2, "dog": 2})
    bad = tmp_path / "dog" / "late.bmp"
    save(bad, size=(32, 32))
    data = scan_folder(tmp_path)
    bad.write_bytes(bad.read_bytes()[:100])  # damaged after the scan
    with pytest.raises(DataError, match=r"late\.bmp"):
        data.images(np.arange(len(data)), (8, 8))


def test_truncated_bmp_is_caught_when_scanning(tmp_path):
    make_folder(tmp_path, {"cat": 2, "dog": 2})
    full = save(tmp_path / "dog" / "half.bmp", size=(32, 32)).read_bytes()
    (tmp_path / "dog" / "half.bmp").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"half\.bmp"):
        scan_folder(tmp_path)


# --- Decoding ------------------------------------------------------------------------------


def test_modes_become_rgb(tmp_path):
    save(tmp_path / "gray.png", 100, mode="L")
    save(tmp_path / "rgba.png", (10, 20, 30, 0), mode="RGBA")
    save(tmp_path / "la.png", (77, 255), mode="LA")
    palette = Image.new("P", (12, 8), 1)
    palette.putpalette([0, 0, 0, 250, 128, 5] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)
    save(tmp_path / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK")
    Image.fromarray(np.full((8, 12), 128 * 257, dtype=np.uint16)).save(tmp_path / "deep.png")

    expected = {
        "gray.png": (100, 100, 100),
        "rgba.png": (10, 20, 30),
        "la.png": (77, 77, 77),
        "palette.png": (250, 128, 5),
        "cmyk.jpg": (255, 0, 0),
        "deep.png": (128, 128, 128),
    }
    for name, color in expected.items():
        image = load_image(tmp_path / name, (6, 9))
        assert image.shape == (6, 9, 3) and image.dtype == np.uint8, name
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), color, atol=3, err_msg=name)


def test_images_are_resized_to_height_width(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 1}, suffix=".jpg")
    data = scan_folder(tmp_path)
    batch = data.images([2, 0], (20, 30))
    assert batch.shape == (2, 20, 30, 3) and batch.dtype == np.uint8
    assert data.images(np.array([1]), 16).shape == (1, 16, 16, 3)
    assert data.images([], (5, 5)).shape == (0, 5, 5, 3)
    with pytest.raises(DataError, match="height, width"):
        data.images([0], (0, 5))


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: the left half ends on top
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif)
    upright = load_image(tmp_path / "rotated.png", (20, 10))
    assert tuple(upright[2, 5]) == (255, 0, 0)
    assert tuple(upright[17, 5]) == (0, 0, 255)


def test_cache_returns_identical_arrays_without_decoding_again(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3}, suffix=".jpg")
    data = scan_folder(tmp_path)
    first = data.images(np.arange(6), (16, 16))
    for path in data.paths:
        path.unlink()  # from now on only the cache can answer
    second = data.images(np.arange(6), (16, 16))
    np.testing.assert_array_equal(first, second)
    assert second is not first
    train, _ = split(data, 0.5, seed=0)  # subsets share the cache
    np.testing.assert_array_equal(train.images([0], (16, 16))[0], first[train.source_indices[0]])


def test_cache_is_bounded(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    data = scan_folder(tmp_path, cache_bytes=16 * 16 * 3 * 2)
    data.images(np.arange(4), (16, 16))
    for path in data.paths:
        path.unlink()
    assert data.images([0, 1], (16, 16)).shape == (2, 16, 16, 3)
    with pytest.raises(DataError, match="not found"):
        data.images([2], (16, 16))


# --- Arrays --------------------------------------------------------------------------------


def test_array_dataset_rgb_and_string_labels():
    images = np.random.default_rng(0).integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
    data = ArrayDataset(images, ["dog", "cat", "dog", "emu"])
    assert data.class_names == ("cat", "dog", "emu")
    assert data.labels.tolist() == [1, 0, 1, 2]
    np.testing.assert_array_equal(data.images([3, 0], (6, 8)), images[[3, 0]])
    assert data.images([0], (12, 16)).shape == (1, 12, 16, 3)
    sub = data.subset([2, 3])
    assert isinstance(sub, ArrayDataset) and sub.labels.tolist() == [1, 2]
    np.testing.assert_array_equal(sub.images([1], (6, 8))[0], images[3])


def test_array_dataset_grayscale_float_and_given_names():
    gray = np.linspace(0, 1, 3 * 4 * 5).reshape(3, 4, 5)
    data = ArrayDataset(gray, [0, 1, 1], class_names=["no", "yes"])
    out = data.images([0, 1, 2], (4, 5))
    assert out.shape == (3, 4, 5, 3)
    np.testing.assert_array_equal(out[..., 0], np.rint(gray * 255).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert data.class_names == ("no", "yes")
    ordered = ArrayDataset(gray, ["yes", "no", "yes"], class_names=["yes", "no"])
    assert ordered.labels.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("images", "labels", "kwargs", "match"),
    [
        (np.zeros((2, 4, 4, 4), np.uint8), [0, 1], {}, "4 channels"),
        (np.zeros((2, 3, 8, 8), np.uint8), [0, 1], {}, "3, 8, 8"),
        (np.zeros((2, 4), np.uint8), [0, 1], {}, r"got shape \(2, 4\)"),
        (np.zeros((2, 4, 4, 3)), [0, 1, 1], {}, "got 2 images but 3 labels"),
        (np.full((2, 4, 4, 3), 2.0), [0, 1], {}, r"\[0, 1\]"),
        (np.full((2, 4, 4, 3), 300), [0, 1], {}, "0..255"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, 0], {}, "at least two classes"),
        (np.zeros((2, 4, 4, 3), np.uint8), [[1, 0], [0, 1]], {}, "one-hot"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, 2], {"class_names": ["a", "b"]}, "label 2"),
        (np.zeros((2, 4, 4, 3), np.uint8), ["a", "c"], {"class_names": ["a", "b"]}, "c"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, -1], {}, ">= 0"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0.5, 1], {}, "fractional"),
        ([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))], [0, 1], {}, "same height"),
    ],
)
def test_array_dataset_says_what_is_wrong(images, labels, kwargs, match):
    with pytest.raises(DataError, match=match) as info:
        ArrayDataset(images, labels, **kwargs)
    assert info.value.hint


def test_channels_first_hint():
    with pytest.raises(DataError) as info:
        ArrayDataset(np.zeros((2, 3, 8, 8), np.uint8), [0, 1])
    assert "transpose" in info.value.hint


# --- Splitting and loading -----------------------------------------------------------------


def labelled(counts: list[int]) -> ArrayDataset:
    labels = np.repeat(np.arange(len(counts)), counts)
    return ArrayDataset(np.zeros((len(labels), 2, 2, 3), np.uint8), labels)


def test_split_is_stratified_seeded_and_disjoint():
    data = labelled([50, 30, 10, 2, 1])
    train, val = split(data, 0.2, seed=7)
    train_keys, val_keys = set(train.source_indices.tolist()), set(val.source_indices.tolist())
    assert not train_keys & val_keys
    assert train_keys | val_keys == set(range(len(data)))
    assert val.counts().tolist() == [10, 6, 2, 1, 0]
    assert train.counts().tolist() == [40, 24, 8, 1, 1]
    _, again_val = split(data, 0.2, seed=7)
    assert again_val.source_indices.tolist() == val.source_indices.tolist()
    other_val = split(data, 0.2, seed=8)[1]
    assert other_val.source_indices.tolist() != val.source_indices.tolist()


def test_split_keeps_a_class_split_when_another_class_is_added():
    before = split(labelled([20, 20]), 0.25, seed=1)[1]
    after = split(labelled([20, 20, 20]), 0.25, seed=1)[1]
    assert before.source_indices.tolist() == after.source_indices[after.labels < 2].tolist()


def test_split_zero_gives_empty_validation_and_bad_share_fails():
    train, val = split(labelled([3, 3]), 0.0, seed=0)
    assert len(train) == 6 and len(val) == 0
    with pytest.raises(DataError, match="val_split"):
        split(labelled([3, 3]), 1.0, seed=0)


def test_load_datasets_from_folder_with_split(tmp_path):
    make_folder(tmp_path, {"a": 10, "b": 5})
    train, val = load_datasets(DataSpec(path=str(tmp_path), val_split=0.2), seed=0)
    assert isinstance(train, FolderDataset)
    assert val.counts().tolist() == [2, 1] and train.counts().tolist() == [8, 4]
    assert not set(train.paths) & set(val.paths)


def test_load_datasets_with_val_path(tmp_path):
    make_folder(tmp_path / "tr", {"a": 4, "b": 4})
    make_folder(tmp_path / "va", {"a": 1, "b": 2})
    train, val = load_datasets(
        DataSpec(path=str(tmp_path / "tr"), val_path=str(tmp_path / "va")), 0
    )
    assert (len(train), len(val)) == (8, 3)
    make_folder(tmp_path / "other", {"a": 1, "c": 1})
    spec = DataSpec(path=str(tmp_path / "tr"), val_path=str(tmp_path / "other"))
    with pytest.raises(DataError, match="only in training: b; only in validation: c"):
        load_datasets(spec, 0)


def test_load_datasets_from_arrays_and_source_errors(tmp_path):
    images = np.zeros((10, 4, 4, 3), np.uint8)
    labels = ["x"] * 5 + ["y"] * 5
    train, val = load_datasets(DataSpec(val_split=0.4), 0, arrays=(images, labels))
    assert train.class_names == ("x", "y") and val.counts().tolist() == [2, 2]
    given = ArrayDataset(images, labels)
    assert load_datasets(DataSpec(val_split=0.0), 0, arrays=given)[0] is not None
    with pytest.raises(DataError, match="no training data"):
        load_datasets(DataSpec(), 0)
    with pytest.raises(DataError, match="both"):
        load_datasets(DataSpec(path=str(tmp_path)), 0, arrays=given)


# --- Augmentation --------------------------------------------------------------------------


def ramp(count: int = 64, height: int = 20, width: int = 30) -> np.ndarray:
    """Images whose pixel (y, x) holds (y, x, image index)."""
    y, x = np.mgrid[:height, :width]
    one = np.stack([y, x, np.zeros_like(y)], axis=-1)
    batch = np.repeat(one[None], count, axis=0)
    batch[..., 2] = np.arange(count)[:, None, None]
    return batch.astype(np.uint8)


def test_hflip_flips_some_images_and_keeps_the_rest():
    images = ramp()
    before = images.copy()
    out = augment(images, ("hflip",), np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(images, before)
    flipped = [bool((out[i] == images[i, :, ::-1]).all()) for i in range(len(images))]
    kept = [bool((out[i] == images[i]).all()) for i in range(len(images))]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_shift_translates_with_edge_padding_up_to_ten_percent():
    images = ramp()
    out = augment(images, ["shift"], np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 2], images[..., 2])  # no pixels cross images
    moved_rows = moved_cols = 0
    for i in range(len(images)):
        dy = int(out[i, 10, 0, 0]) - 10  # row 10 stays clear of the padded border
        dx = int(out[i, 0, 15, 1]) - 15
        assert abs(dy) <= 2 and abs(dx) <= 3
        rows = np.clip(np.arange(20) + dy, 0, 19)
        cols = np.clip(np.arange(30) + dx, 0, 29)
        np.testing.assert_array_equal(out[i], images[i][rows][:, cols])
        moved_rows += dy != 0
        moved_cols += dx != 0
    assert moved_rows > 30 and moved_cols > 30


def test_augment_is_seeded_and_checks_names():
    images = ramp(8)
    first = augment(images, ("hflip", "shift"), np.random.default_rng(3))
    second = augment(images, ("hflip", "shift"), np.random.default_rng(3))
    np.testing.assert_array_equal(first, second)
    assert augment(images, (), np.random.default_rng(0)) is images
    with pytest.raises(DataError, match="twirl"):
        augment(images, ("twirl",), np.random.default_rng(0))


# --- The demo dataset ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_demo(tmp_path_factory.mktemp("demo") / "digits")


def test_write_demo_writes_ten_classes_that_scan_back(demo):
    data = scan_folder(demo)
    assert data.class_names == tuple(str(d) for d in range(10))
    assert len(data) == 1797
    images, labels = digits_arrays()
    assert data.counts().tolist() == np.bincount(labels).tolist()
    assert (demo / "README.txt").read_text().startswith("tlcore demo dataset")
    order = [int(p.stem) for p in data.paths]
    np.testing.assert_array_equal(data.labels, labels[order])
    np.testing.assert_array_equal(
        data.images(np.arange(0, 1797, 97), (32, 32)), images[order][::97]
    )
    with Image.open(data.paths[0]) as first:
        assert (first.format, first.mode, first.size) == ("PNG", "RGB", (32, 32))


def test_digits_are_white_on_black_and_classes_remap():
    images, labels = digits_arrays(size=16, classes=(7, 3))
    assert images.shape[1:] == (16, 16, 3) and set(labels.tolist()) == {0, 1}
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.mean() < 5 and images[:, 4:12, 4:12].mean() > 60  # white ink, black paper
    all_labels = digits_arrays(size=8)[1]
    assert (labels == 0).sum() == (all_labels == 7).sum()


def test_write_demo_rewrites_a_demo_but_not_other_folders(tmp_path):
    target = write_demo(tmp_path / "d", size=8, per_class=3)
    assert (target / MARKER).is_file()
    assert scan_folder(target).counts().tolist() == [3] * 10
    write_demo(target, size=8, per_class=2)
    assert len(scan_folder(target)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging leftovers
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a tlcore demo"):
        write_demo(precious)
    assert (precious / "thesis.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert len(scan_folder(write_demo(tmp_path / "empty", size=8, per_class=1))) == 10


def test_a_demo_write_that_fails_midway_leaves_the_earlier_demo(tmp_path):
    target = write_demo(tmp_path / "d", size=8, per_class=1)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    with pytest.raises(RuntimeError, match="interrupted"), demo_folder(target) as staging:
        (staging / "half-written.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging left behind
