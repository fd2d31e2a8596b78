"""How big each run of the suite is: ``tiny`` (the smoke test), ``quick`` and ``full``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

BACKENDS = ("torch", "keras")
MODELS = ("mobilenet_v2", "resnet50")


@dataclass(frozen=True)
class Mode:
    """Sizes of one run of the suite.

    Attributes:
        name: ``tiny``, ``quick`` or ``full``.
        train_images: digits used by the training comparisons (1, 2), 80/20 train/val.
        train_size: input size of the MobileNetV2 trained in 1 and 2.
        finetune_epochs: epochs per run in 1; the first (tracing, warm-up) is not counted.
        finetune_rounds: interleaved tlcore / hand-written runs in 1.
        frozen_epochs: epochs of head training in 2 (the issue says 10).
        frozen_images: digits of 2, 80/20 train/val (more validation images than 1, so that
            the accuracy comparison can resolve one point).
        frozen_rounds: interleaved runs in 2.
        infer_size: input size of the inference models (3, 4, 5, 8).
        bundle_images: digits the MobileNetV2 bundle's head is trained on (its accuracy is
            the int8 accuracy check of 5).
        bundle_epochs: head epochs of that bundle.
        calibration_images: static int8 calibration images.
        int8_accuracy_images: digits (80/20) of the bundle item 5 measures accuracy on.
        latency_calls: batch-1 calls timed per side per round (3, 5).
        throughput_calls: batch-32 calls timed per side per round (4, 8).
        infer_rounds: interleaved rounds of 3 and 5.
        throughput_rounds: interleaved rounds of 4.
        startup_runs: process starts timed in 6.
        predict_images: images in the folder ``tl predict`` reads in 7.
        memory_runs: runs of each side in 7.
        pretrain_per_class: digits per class the MobileNetV2 backbones are pretrained on.
        pretrain_epochs: epochs of that pretraining.
        models: inference models.
    """

    name: str
    train_images: int
    train_size: int
    finetune_epochs: int
    finetune_rounds: int
    frozen_epochs: int
    frozen_rounds: int
    frozen_images: int
    infer_size: int
    bundle_images: int
    bundle_epochs: int
    calibration_images: int
    int8_accuracy_images: int
    latency_calls: int
    throughput_calls: int
    infer_rounds: int
    throughput_rounds: int
    startup_runs: int
    predict_images: int
    memory_runs: int
    pretrain_per_class: int = 60
    pretrain_epochs: int = 3
    models: tuple[str, ...] = field(default=MODELS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "models": list(self.models)}


MODES = {
    "tiny": Mode(
        "tiny",
        train_images=60,
        train_size=32,
        finetune_epochs=2,
        finetune_rounds=1,
        frozen_epochs=2,
        frozen_rounds=1,
        frozen_images=60,
        infer_size=32,
        bundle_images=60,
        bundle_epochs=1,
        calibration_images=8,
        int8_accuracy_images=60,
        latency_calls=2,
        throughput_calls=1,
        infer_rounds=1,
        throughput_rounds=1,
        startup_runs=1,
        predict_images=40,
        memory_runs=1,
        pretrain_per_class=4,
        pretrain_epochs=1,
        models=("mobilenet_v2",),
    ),
    "quick": Mode(
        "quick",
        train_images=250,
        train_size=64,
        finetune_epochs=4,
        finetune_rounds=1,
        frozen_epochs=10,
        frozen_rounds=2,
        frozen_images=400,
        infer_size=224,
        bundle_images=200,
        bundle_epochs=10,
        calibration_images=40,
        int8_accuracy_images=1000,
        latency_calls=10,
        throughput_calls=2,
        infer_rounds=3,
        throughput_rounds=2,
        startup_runs=5,
        predict_images=1000,
        memory_runs=1,
        pretrain_per_class=50,
        models=("mobilenet_v2",),
    ),
    "full": Mode(
        "full",
        train_images=600,
        train_size=64,
        finetune_epochs=4,
        finetune_rounds=3,
        frozen_epochs=10,
        frozen_rounds=3,
        frozen_images=1000,
        infer_size=224,
        bundle_images=1000,
        bundle_epochs=10,
        calibration_images=100,
        int8_accuracy_images=1000,
        latency_calls=15,
        throughput_calls=2,
        infer_rounds=5,
        throughput_rounds=3,
        startup_runs=15,
        predict_images=1000,
        memory_runs=2,
    ),
}
