"""Augmentation on numpy: each op against an independent computation (numpy's rot90, Pillow's
resize and ImageOps), seeded per image; mixup and CutMix soft targets; the recipe's checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tlcore.data import augment
from tlcore.data.augment import AUGMENTATIONS, color, mix
from tlcore.data.augment.geometric import (
    crop_boxes,
    resize_boxes,
    rotation_matrices,
    warp,
)
from tlcore.data.augment.policies import magnitudes
from tlcore.errors import DataError, RecipeError, TlcoreError
from tlcore.recipe import build_recipe
from tlcore.recipe.spec import DataSpec
from tlcore.train.feed import check_image_only

PER_IMAGE = [name for name in AUGMENTATIONS if name not in ("mixup", "cutmix")]


def photos(count: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random images (a blurred noise field per image): like photographs, neighbouring
    pixels agree, so a resampling error shows as a difference of a grey level or two;
    ``size`` a multiple of 4."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, size // 4, size // 4, 3)).astype(np.float64)
    fine = coarse.repeat(4, axis=1).repeat(4, axis=2)
    for axis in (1, 2):  # a box blur along each axis
        fine = (np.roll(fine, 1, axis) + fine + np.roll(fine, -1, axis)) / 3
    return np.rint(fine).astype(np.uint8)


@pytest.mark.parametrize("name", PER_IMAGE)
def test_each_op_is_uint8_seeded_per_image_and_leaves_its_input(name):
    one = photos(1)
    images = np.repeat(one, 16, axis=0)  # the same image 16 times: draws must differ per image
    before = images.copy()
    out = augment(images, [name], np.random.default_rng(3))
    again = augment(images, [name], np.random.default_rng(3))
    other = augment(images, [name], np.random.default_rng(4))
    np.testing.assert_array_equal(images, before)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, other)
    distinct = {out[i].tobytes() for i in range(len(out))}
    # A flip has two outcomes; every other op draws a continuum (or 14 ops x signs).
    assert len(distinct) >= (2 if name == "hflip" else 6), f"{name}: {len(distinct)} of 16"


def test_the_recipe_and_the_core_know_the_same_names():
    choices = next(f for f in dataclasses.fields(DataSpec) if f.name == "augment").metadata
    assert choices["choices"] == AUGMENTATIONS
    recipe = build_recipe(augment=["random_resized_crop", "hflip", "mixup"])
    assert recipe.data.augment == ("random_resized_crop", "hflip", "mixup")
    assert (recipe.data.crop_scale, recipe.data.mixup_alpha, recipe.data.cutmix_alpha) == (
        0.35, 0.8, 1.0
    )


def test_rotation_by_a_right_angle_is_numpys_rot90():
    images = photos(2, 32)
    turned = warp(images, rotation_matrices(np.array([90.0, -90.0]), 32, 32), "edge")
    still = warp(images, rotation_matrices(np.zeros(2), 32, 32), "constant")

    def differs(a: np.ndarray, b: np.ndarray) -> int:
        return int(np.abs(a.astype(int) - b).max())

    # Pillow's fixed-point bilinear may round a value the other way: one grey level.
    assert differs(turned[0], np.rot90(images[0], 1)) <= 1
    assert differs(turned[1], np.rot90(images[1], -1)) <= 1
    assert differs(still, images) <= 1
    assert differs(turned[0], np.rot90(images[0], -1)) > 50  # the direction matters


def test_rotate_reflects_instead_of_leaving_black_corners():
    images = np.full((8, 32, 32, 3), 200, np.uint8)
    out = augment(images, ["rotate"], np.random.default_rng(0))
    np.testing.assert_array_equal(out, images)  # a flat image stays flat: no fill shows
    black = warp(images, rotation_matrices(np.full(8, 15.0), 32, 32), "constant")
    assert (black[:, 0, 0] == 0).all()  # the same turn with a constant fill leaves corners


def bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A plain float64 bilinear resize (pixel centres aligned, edge pixels repeated), written
    out here as the reference for Pillow's, which the ops use."""
    def taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centres = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
        low = np.floor(centres)
        return (np.clip(low, 0, size_in - 1).astype(int),
                np.clip(low + 1, 0, size_in - 1).astype(int), centres - low)

    y0, y1, wy = taps(image.shape[0], height)
    x0, x1, wx = taps(image.shape[1], width)
    rows = image[y0] * (1 - wy)[:, None, None] + image[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def test_crop_and_resize_is_bilinear_on_the_box():
    images = photos(4, 32)
    boxes = np.array([[0, 0, 32, 32], [4, 6, 16, 16], [10, 2, 20, 12], [0, 16, 8, 16]])
    out = resize_boxes(images, boxes)
    np.testing.assert_array_equal(out[0], images[0])  # the whole image: unchanged
    for image, (top, left, h, w), got in zip(images[1:], boxes[1:], out[1:], strict=True):
        want = bilinear(image[top : top + h, left : left + w].astype(np.float64), 32, 32)
        inner = np.abs(got.astype(float) - want)[2:-2, 2:-2]  # Pillow reads past a box edge
        assert inner.max() <= 1.0


def test_crop_boxes_follow_randomresizedcrop():
    rng = np.random.default_rng(0)
    boxes = crop_boxes(rng, 2000, 60, 80, (0.35, 1.0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 60).all() and (left + w <= 80).all()
    area = h * w / (60 * 80)
    assert area.min() > 0.33 and area.max() <= 1.0  # rounding moves a box by a pixel
    ratio = w / h
    assert ratio.min() > 0.7 and ratio.max() < 1.4
    assert np.median(area) > 0.55  # uniform in area over [0.35, 1]
    # No box of 50 % area fits a 1 x 100 strip: the fallback, its centre at the allowed ratio.
    fallback = crop_boxes(rng, 3, 1, 100, (0.5, 1.0))
    np.testing.assert_array_equal(fallback, [[0, 49, 1, 1]] * 3)


def test_colour_blends_match_pillows_enhancers():
    images = photos(3, 32)
    from PIL import ImageEnhance

    for name, enhancer in (("brightness", ImageEnhance.Brightness),
                           ("saturation", ImageEnhance.Color),
                           ("contrast", ImageEnhance.Contrast)):
        factors = np.array([0.6, 1.0, 1.4])
        ours = color.adjust(images, name, factors)
        for image, factor, got in zip(images, factors, ours, strict=True):
            want = np.asarray(enhancer(Image.fromarray(image)).enhance(factor))
            # Pillow's grey uses 0.299 (torchvision 0.2989) and rounds its mean for contrast.
            assert np.abs(got.astype(int) - want).max() <= 2, name
    assert np.array_equal(color.color_jitter(images, np.random.default_rng(0), 0.0), images)


def test_jitter_in_one_pass_equals_the_three_blends_in_each_images_order():
    rng = np.random.default_rng(5)
    images = rng.integers(90, 160, (6, 16, 16, 3)).astype(np.uint8)  # no blend clips here
    factors = rng.uniform(0.8, 1.2, (3, 6))
    order = np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]])
    got = color.jitter(images, factors, order)
    weights = np.array([0.2989, 0.587, 0.114])  # torchvision's rgb_to_grayscale

    def blend(x: np.ndarray, op: int, f: float) -> np.ndarray:  # torchvision's, in float64
        grey = (x @ weights)[..., None]
        other = (0.0, grey.mean(), grey)[op]
        return np.clip(f * x + (1 - f) * other, 0, 255)

    for i in range(6):
        want = images[i].astype(np.float64)
        for op in order[i]:
            want = blend(want, op, factors[op, i])
        assert np.abs(got[i] - want).max() <= 0.5 + 1e-3


def test_pixel_ops_match_pillows_imageops():
    images = photos(3, 32)
    equalized = color.equalize(images)
    posterized = color.posterize(images, np.array([2, 4, 7]))
    solarized = color.solarize(images, np.array([64, 128, 200]))
    for i, image in enumerate(images):
        pil = Image.fromarray(image)
        np.testing.assert_array_equal(equalized[i], np.asarray(ImageOps.equalize(pil)))
        bits = (2, 4, 7)[i]
        np.testing.assert_array_equal(posterized[i], np.asarray(ImageOps.posterize(pil, bits)))
        threshold = (64, 128, 200)[i]
        np.testing.assert_array_equal(
            solarized[i], np.asarray(ImageOps.solarize(pil, threshold))
        )
    stretched = color.autocontrast(images // 4 + 40)
    assert (stretched.min(axis=(1, 2)) == 0).all() and (stretched.max(axis=(1, 2)) == 255).all()


def test_policy_magnitudes_are_torchvisions():
    rand, wide = magnitudes(False, 224, 224), magnitudes(True, 224, 224)
    assert rand["rotate"][9] == pytest.approx(9.0)
    assert rand["shear_x"][9] == pytest.approx(0.09)
    assert rand["translate_x"][9] == pytest.approx(150 / 331 * 224 * 0.3)
    assert rand["brightness"][9] == pytest.approx(0.27)
    assert rand["posterize"][9] == 7 and rand["solarize"][9] == pytest.approx(178.5)
    assert wide["rotate"][30] == 135.0 and wide["translate_y"][30] == 32.0
    assert wide["posterize"][30] == 2


def labelled(count: int = 6, size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat images, image ``i`` of grey level ``values[i]`` and class ``i``: a mixed image's
    mean level is its target row times ``values``, whatever the draws."""
    values = np.arange(count) * 40 + 10
    images = np.broadcast_to(values[:, None, None, None], (count, size, size, 3))
    return images.astype(np.uint8), np.arange(count), values


@pytest.mark.parametrize("names", [["mixup"], ["cutmix"], ["mixup", "cutmix"]])
def test_mixing_makes_soft_targets_that_say_what_the_pixels_hold(names):
    images, labels, values = labelled()
    out, targets = mix(images, labels, ["hflip", *names], np.random.default_rng(1), 6)
    again = mix(images, labels, names, np.random.default_rng(1), 6)
    assert out.dtype == np.uint8 and targets.dtype == np.float32
    assert targets.shape == (6, 6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    assert (targets >= 0).all()
    # The mean grey level is what the target says it holds: lam of its own, 1 - lam of the
    # partner's (mixup: within rounding; CutMix: exactly).
    expected = targets.astype(np.float64) @ values
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), expected, atol=0.51)
    np.testing.assert_array_equal(out, again[0])
    assert (targets.max(axis=1) < 1).sum() >= 2  # some pairs did mix
    if names == ["cutmix"]:  # a pasted box: each image holds its own level and one other
        assert all(len(np.unique(image)) <= 2 for image in out)


def test_mixing_multi_hot_targets_and_nothing_to_mix():
    images, _, _ = labelled(4)
    multi_hot = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    _, targets = mix(images, multi_hot, ["mixup"], np.random.default_rng(0), 3)
    assert targets.shape == (4, 3) and ((targets >= 0) & (targets <= 1)).all()
    for own, row in zip(multi_hot, targets, strict=True):  # lam * own + (1 - lam) * another
        fits = []
        for other in multi_hot:
            lam = np.linalg.lstsq((own - other)[:, None], row - other, rcond=None)[0]
            fits.append(np.abs(lam * (own - other) + other - row).max())
        assert min(fits) < 1e-6
    same_images, same = mix(images, multi_hot, ["hflip"], np.random.default_rng(0), 3)
    assert same_images is images and same is multi_hot


def test_mixing_refuses_targets_it_cannot_mix():
    images, labels, _ = labelled(4)
    with pytest.raises(DataError, match=r"outside 0\.\.2"):
        mix(images, labels, ["mixup"], np.random.default_rng(0), 3)
    with pytest.raises(DataError, match="class indices or"):
        mix(images, np.zeros((4, 2), np.float32), ["cutmix"], np.random.default_rng(0), 3)


def test_the_recipe_refuses_mixing_for_regression_and_bad_strengths():
    with pytest.raises(RecipeError, match=r"data\.augment\.1"):
        build_recipe(augment=["hflip", "mixup"], task="regression")
    build_recipe(augment=["cutmix"], task="multilabel")
    with pytest.raises(RecipeError, match=r"data\.crop_scale"):
        build_recipe({"data": {"crop_scale": 0.0}})
    with pytest.raises(RecipeError, match=r"data\.mixup_alpha"):
        build_recipe({"data": {"mixup_alpha": float("nan")}})
    with pytest.raises(RecipeError, match=r"data\.augment\.0"):
        build_recipe(augment=["random_crop"])


def test_augmenting_text_or_vectors_is_refused_naming_the_field():
    check_image_only(build_recipe(augment=["hflip"], overrides={"export.tta": "hflip"}), "image")
    check_image_only(build_recipe(), "text")
    with pytest.raises(RecipeError, match=r"data\.augment"):
        check_image_only(build_recipe(augment=["hflip"]), "vector")
    with pytest.raises(RecipeError, match=r"export\.tta"):
        check_image_only(build_recipe(overrides={"export.tta": "hflip"}), "text")


# --- test-time augmentation -------------------------------------------------------------------


def small_cnn_graph(opset: int, side: int = 8) -> Any:
    """A real ONNX classifier as a backend writes one (uint8 NHWC in, logits out): a
    convolution with random weights, which a mirror image changes, then tlcore's finishing
    (softmax ``probabilities``, metadata)."""
    from onnx import TensorProto, helper, numpy_helper

    from tlcore.bundle.graph import finish_graph
    from tlcore.interfaces import InputSpec, Preprocessing

    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32) / 500,
        "fc_w": rng.normal(size=(4, 3)).astype(np.float32),
        "fc_b": np.zeros(3, np.float32),
    }
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["xf"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", side, side, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    spec = InputSpec.image(Preprocessing(size=(side, side)))
    return finish_graph(proto, ["a", "b", "c"], spec)


@pytest.mark.parametrize("opset", [9, 17])
def test_the_tta_graph_gives_the_mean_over_the_image_and_its_mirror(opset, tmp_path):
    import onnx
    import onnxruntime as ort

    from tlcore.bundle.tta import add_view_average, graph_tta

    plain_file, tta_file = tmp_path / "plain.onnx", tmp_path / "tta.onnx"
    onnx.save(small_cnn_graph(opset), plain_file)
    proto = add_view_average(small_cnn_graph(opset), "images", "probabilities", "hflip")
    onnx.checker.check_model(proto)
    onnx.save(proto, tta_file)
    assert graph_tta(proto) == "hflip" and graph_tta(onnx.load(plain_file)) == "none"
    plain = ort.InferenceSession(str(plain_file), providers=["CPUExecutionProvider"])
    tta = ort.InferenceSession(str(tta_file), providers=["CPUExecutionProvider"])
    images = photos(5, 8)
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    on_plain, on_mirror = (plain.run(None, {"images": x}) for x in (images, mirrored))
    got = dict(zip([o.name for o in tta.get_outputs()], tta.run(None, {"images": images}),
                   strict=True))
    assert not np.allclose(on_plain[0], on_mirror[0], atol=1e-3)  # the mirror matters
    np.testing.assert_allclose(got["probabilities"], (on_plain[0] + on_mirror[0]) / 2,
                               atol=1e-6)
    np.testing.assert_allclose(got["logits"], on_plain[1], atol=1e-6)  # the image as given
    with pytest.raises(TlcoreError, match="already averages"):
        add_view_average(proto, "images", "probabilities", "crops")


def test_the_crop_views_are_the_corners_enlarged_by_nearest_neighbour():
    from tlcore.bundle.tta import views

    # 8 pixels: crops of round(0.875 * 8) = 7, output pixel i takes floor((i + 0.5) * 7 / 8)
    first, last = [0, 1, 2, 3, 3, 4, 5, 6], [1, 2, 3, 4, 4, 5, 6, 7]
    found = [(r.tolist(), c.tolist()) for r, c in views("crops", 8, 8)]
    assert found == [(list(range(8)), list(range(8))), (first, first), (first, last),
                     (last, first), (last, last)]
    mirrored = views("hflip_crops", 8, 6)
    assert len(mirrored) == 10
    for (rows, columns), (m_rows, m_columns) in zip(mirrored[:5], mirrored[5:], strict=True):
        assert m_rows.tolist() == rows.tolist() and m_columns.tolist() == columns[::-1].tolist()
    assert [c.tolist() for _, c in views("hflip", 3, 4)] == [[0, 1, 2, 3], [3, 2, 1, 0]]


@pytest.mark.parametrize("tta", ["crops", "hflip_crops"])
def test_the_crops_graph_gives_the_mean_over_its_views(tta, tmp_path):
    import onnx
    import onnxruntime as ort

    from tlcore.bundle.tta import add_view_average, view_average, views

    plain_file, tta_file = tmp_path / "plain.onnx", tmp_path / "tta.onnx"
    onnx.save(small_cnn_graph(17), plain_file)
    proto = add_view_average(small_cnn_graph(17), "images", "probabilities", tta)
    onnx.checker.check_model(proto)
    onnx.save(proto, tta_file)
    plain = ort.InferenceSession(str(plain_file), providers=["CPUExecutionProvider"])
    averaging = ort.InferenceSession(str(tta_file), providers=["CPUExecutionProvider"])
    images = photos(4, 8)

    def probabilities(x: np.ndarray) -> np.ndarray:
        return plain.run(["probabilities"], {"images": x})[0]

    each = [probabilities(np.ascontiguousarray(images[:, r][:, :, c]))
            for r, c in views(tta, 8, 8)]
    got = averaging.run(["probabilities"], {"images": images})[0]
    np.testing.assert_allclose(got, np.mean(each, axis=0), atol=1e-6)
    np.testing.assert_allclose(view_average(probabilities, images, tta), got, atol=1e-6)
    assert np.abs(each[1] - each[0]).max() > 1e-3  # a crop is another view


# --- end to end: augmented training with soft targets, TTA bundles, tl eval --tta -----------

SIDE = 16
E2E = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": SIDE},
    "train": {"batch_size": 8, "seed": 2, "stages": [
        {"name": "head", "epochs": 1, "lr": 3e-3, "freeze": {"policy": "all"}},
        {"name": "all", "epochs": 1, "lr": 1e-3, "freeze": {"policy": "none"}},
    ]},
    "data": {"val_split": 0.25},
    "export": {"formats": ["native", "onnx"]},
}
MIXED = ["random_resized_crop", "hflip", "color_jitter", "rotate", "mixup", "cutmix"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits at 16 px, 4 per class: asymmetric shapes, so a mirror image changes outputs."""
    from tlcore.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("aug") / "digits", size=SIDE, per_class=4)


@pytest.fixture(scope="module")
def plain_run(digits, tmp_path_factory):
    import tlcore

    out = tmp_path_factory.mktemp("plain") / "run"
    tlcore.fit(str(digits), recipe=E2E, out=out, backend="torch")
    return out


@pytest.fixture(scope="module")
def tta_run(digits, tmp_path_factory):
    """Trained with mixup and CutMix (soft targets) and exported with ``export.tta: hflip``;
    also what the run printed."""
    import contextlib
    import io

    import tlcore

    out = tmp_path_factory.mktemp("tta") / "run"
    recipe = {**E2E, "data": {**E2E["data"], "augment": MIXED},
              "export": {**E2E["export"], "tta": "hflip"}}
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        tlcore.fit(str(digits), recipe=recipe, out=out, backend="torch", quiet=False)
    return out, printed.getvalue()


def test_a_tta_bundle_averages_in_onnx_as_two_native_forwards(tta_run, digits):
    import json

    from tlcore.data import scan_folder
    from tlcore.report.evaluate import _native_model
    from tlcore.runtime import Predictor

    run, printed = tta_run
    assert printed.count("backbone features are recomputed every step (no cache)") == 1
    info = json.loads((run / "tlcore.json").read_text())
    assert info["onnx"]["tta"] == "hflip"
    assert info["onnx"]["parity"]["max_abs_diff"] <= 1e-4
    predictor = Predictor(run)  # checks the model's sha256 against tlcore.json
    assert predictor.tta_in_model and predictor.tta == "hflip"
    images = scan_folder(digits).images(np.arange(0, 40, 3), (SIDE, SIDE))
    native = _native_model(run, tta=False).outputs
    both = (native(images) + native(np.ascontiguousarray(images[:, :, ::-1]))) / 2
    np.testing.assert_allclose(predictor.outputs(images), both, atol=1e-4)
    assert np.abs(both - native(images)).max() > 1e-3  # the mirror changed something


def test_tl_eval_and_predict_tta_on_a_plain_bundle_run_it_twice(plain_run, digits, tmp_path):
    import json

    from tests.conftest import run_tl
    from tlcore.data import scan_folder
    from tlcore.runtime import Predictor

    dataset = scan_folder(digits)
    images = dataset.images(np.arange(len(dataset)), (SIDE, SIDE))
    plain = Predictor(plain_run)
    assert plain.tta == "none" and not plain.tta_in_model
    mirrored = plain.outputs(np.ascontiguousarray(images[:, :, ::-1]))
    averaged = (plain.outputs(images) + mirrored) / 2
    np.testing.assert_allclose(Predictor(plain_run, tta=True).outputs(images), averaged,
                               atol=1e-6)
    result = run_tl("eval", plain_run, digits, "--tta", "--json", "--out", tmp_path / "e")
    report = json.loads(result.stdout)
    assert report["tta"] == "hflip" and report["tta_in_model"] is False
    expected = np.mean(averaged.argmax(axis=1) == dataset.labels)
    assert report["accuracy"] == pytest.approx(expected)
    assert json.loads((tmp_path / "e" / "report.json").read_text())["tta"] == "hflip"
    one = sorted((digits / "7").iterdir())[0]
    _, decoded = next(plain.decoded([str(one)], 1, None))
    want = (plain.outputs(decoded) + plain.outputs(np.ascontiguousarray(decoded[:, :, ::-1]))) / 2
    shown = json.loads(run_tl("predict", plain_run, one, "--tta", "--json", "-k", "10").stdout)
    got = {row["label"]: row["probability"] for row in shown[0]["top"]}
    np.testing.assert_allclose([got[name] for name in plain.labels], want[0], atol=1e-5)


def test_crops_in_the_bundle_or_on_request_average_the_same_views(plain_run, digits, tmp_path):
    """``export.tta: crops`` built into model.onnx (checked at export against five native
    forwards) gives what ``Predictor(tta="crops")`` computes around a plain bundle; a model
    that averages its own views refuses to average another set on top."""
    import json

    import tlcore
    from tlcore.data import scan_folder
    from tlcore.runtime import Predictor

    out = tmp_path / "crops"
    tlcore.fit(str(digits), recipe={**E2E, "export": {**E2E["export"], "tta": "crops"}},
               out=out, backend="torch")
    info = json.loads((out / "tlcore.json").read_text())
    assert info["onnx"]["tta"] == "crops" and info["onnx"]["parity"]["max_abs_diff"] <= 1e-4
    built_in = Predictor(out)
    assert built_in.tta_in_model and built_in.tta == "crops"
    with pytest.raises(TlcoreError, match="averages over its crops views itself"):
        Predictor(out, tta="hflip")
    # the same weights, exported plain: the predictor takes the five views itself
    images = scan_folder(digits).images(np.arange(0, 40, 3), (SIDE, SIDE))
    plain = Predictor(plain_run)
    crop = round(0.875 * SIDE)
    near = np.floor((np.arange(SIDE) + 0.5) * crop / SIDE).astype(int)
    corners = [(a, b) for a in (near, near + SIDE - crop) for b in (near, near + SIDE - crop)]
    views = [plain.outputs(images)] + [
        plain.outputs(np.ascontiguousarray(images[:, r][:, :, c])) for r, c in corners]
    np.testing.assert_allclose(Predictor(plain_run, tta="crops").outputs(images),
                               np.mean(views, axis=0), atol=1e-6)


def test_keras_trains_on_soft_targets_and_exports_a_tta_graph(digits, tmp_path):
    """Mixup and CutMix on Keras; its ``export.tta: hflip`` graph checked against two Keras
    forwards, at training's end and by ``tl export``'s path (``export_run``)."""
    import json

    import tlcore
    from tlcore.bundle.export import export_run
    from tlcore.runtime import Predictor

    recipe = {**E2E, "data": {**E2E["data"], "augment": ["mixup", "cutmix"]},
              "export": {**E2E["export"], "tta": "hflip"}}
    run = tmp_path / "run"
    result = tlcore.fit(str(digits), recipe=recipe, out=run, backend="keras")
    losses = [row["loss"] for row in result.history if "loss" in row]
    assert losses and np.isfinite(losses).all()
    parity = json.loads((run / "tlcore.json").read_text())["onnx"]["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["agreement"] == 1.0
    again = export_run(run)
    assert again.parity.max_abs_diff <= 1e-4
    assert json.loads((run / "tlcore.json").read_text())["onnx"]["tta"] == "hflip"
    assert Predictor(run).tta_in_model
