"""Mixup and CutMix: images of a batch mixed in pairs, their targets mixed the same way into
soft targets.

Per image (timm's ``mode="elem"``): each image draws a partner from the batch (a random
permutation), a mixing weight ``lam ~ Beta(alpha, alpha)`` and, when both are asked for, mixup
or CutMix with even odds (timm's ``switch_prob=0.5``). Mixup blends the whole image,
``lam * x + (1 - lam) * partner``; CutMix pastes a box of the partner covering ``1 - lam`` of
the image, clipped at the border, and ``lam`` becomes the share of the image left uncovered.
The targets are mixed with the same ``lam``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tlcore.errors import DataError

MIXING = ("mixup", "cutmix")
"""The augmentations that mix pairs of images and need the batch's targets."""

MIXUP_ALPHA = 0.8
"""Mixup's ``Beta(alpha, alpha)`` parameter, timm's default."""

CUTMIX_ALPHA = 1.0
"""CutMix's ``Beta(alpha, alpha)`` parameter, timm's default."""


def mix(
    images: np.ndarray,
    targets: np.ndarray,
    names: Iterable[str],
    rng: np.random.Generator,
    classes: int,
    mixup_alpha: float = MIXUP_ALPHA,
    cutmix_alpha: float = CUTMIX_ALPHA,
) -> tuple[np.ndarray, np.ndarray]:
    """Mix the images of a batch in pairs and their targets into soft targets.

    Args:
        images: uint8 ``(n, H, W, C)``; not modified.
        targets: int class indices ``(n,)`` (single-label: made one-hot over ``classes``),
            or float ``(n, classes)`` rows (multi-hot labels, class probabilities).
        names: the augmentation list; its ``mixup`` and ``cutmix`` entries are used, the
            rest ignored. Neither: ``images`` and ``targets`` come back as they are.
        rng: the generator every draw comes from.
        classes: the number of classes (outputs of the model).
        mixup_alpha: mixup's ``Beta(alpha, alpha)``.
        cutmix_alpha: CutMix's ``Beta(alpha, alpha)``.

    Returns:
        ``(mixed uint8 images, float32 targets (n, classes))``: each target row is
        ``lam * own + (1 - lam) * partner's``, so one-hot rows give probabilities that sum
        to 1.

    Raises:
        DataError: the targets are neither class indices below ``classes`` nor
            ``(n, classes)`` rows.
    """
    wanted = [name for name in MIXING if name in tuple(names)]
    if not wanted:
        return images, targets
    soft = soft_targets(targets, classes, len(images))
    count, height, width = images.shape[:3]
    partner = rng.permutation(count)
    use_cutmix = rng.random(count) < 0.5 if len(wanted) == 2 else np.full(
        count, wanted[0] == "cutmix"
    )
    alpha = np.where(use_cutmix, cutmix_alpha, mixup_alpha)
    lam = rng.beta(alpha, alpha)
    mask, covered = cutmix_boxes(rng, count, height, width, lam)
    # An image that mixes up takes its partner everywhere with weight 1 - lam; one that cuts
    # takes it inside its box only.
    weight = np.where(use_cutmix[:, None, None], mask, (1 - lam)[:, None, None])
    lam = np.where(use_cutmix, 1 - covered, lam)
    ours = images.astype(np.float32)
    mixed = ours + weight[..., None].astype(np.float32) * (ours[partner] - ours)
    out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    mixed_targets = lam[:, None] * soft + (1 - lam[:, None]) * soft[partner]
    return out, mixed_targets.astype(np.float32)


def cutmix_boxes(
    rng: np.random.Generator, count: int, height: int, width: int, lam: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """timm's ``rand_bbox`` for each image: a box of sides ``sqrt(1 - lam)`` of the image's,
    centred at a uniformly drawn pixel, clipped at the border.

    Returns:
        ``(mask, covered)``: float64 ``(count, H, W)``, 1 inside each image's box; the share
        of each image its box covers.
    """
    cut = np.sqrt(1 - lam)
    cut_h, cut_w = (height * cut).astype(np.int64), (width * cut).astype(np.int64)
    cy, cx = rng.integers(0, height, size=count), rng.integers(0, width, size=count)
    top, bottom = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    left, right = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    rows = np.arange(height)[None, :]
    cols = np.arange(width)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < right[:, None])
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :]).astype(np.float64)
    covered = (bottom - top) * (right - left) / (height * width)
    return mask, covered


def soft_targets(targets: np.ndarray, classes: int, count: int) -> np.ndarray:
    """float64 ``(count, classes)`` rows of ``targets``: one-hot rows of int class
    indices, or float rows as given."""
    targets = np.asarray(targets)
    if targets.ndim == 1 and targets.dtype.kind in "iu":
        if len(targets) != count or (len(targets) and not 0 <= targets.min() <= targets.max()
                                     < classes):
            raise DataError(
                f"mixup/cutmix got {len(targets)} class indices outside 0..{classes - 1} "
                f"for {count} images",
                "pass one class index per image, below the number of classes",
            )
        return np.eye(classes)[targets]
    if targets.shape != (count, classes) or targets.dtype.kind != "f":
        raise DataError(
            f"mixup/cutmix needs class indices or ({count}, {classes}) float targets; got "
            f"{targets.dtype} {targets.shape}",
            "use them with classification (class indices) or multilabel (multi-hot) tasks",
        )
    return targets.astype(np.float64)
