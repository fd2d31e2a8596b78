"""The Keras side: the backbones both sides load, and the hand-written Keras code.

Backbones are ``keras.applications`` networks (``MobileNetV2``, ``ResNet50``) built with
``weights=None`` and a fixed seed, saved once as ``.weights.h5``: tlcore loads the file through
``backbone.weights: <file>``, the hand-written code with ``load_weights``, so both start from
the same weights. No weights are downloaded.

The hand-written code is the classic recipe: the base with ``include_top=False``, frozen
(``base.trainable = False`` and ``base(x, training=False)``) or not, global average pooling, a
``Dense`` classifier, ``compile`` + ``model.fit``, and ``model.predict``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.config import Mode

BACKEND = "keras"
CALIBRATION_IMAGES = 100
CALIBRATION_BATCH = 32
PRETRAIN_LR = 1e-3
APPLICATIONS = {
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2"),
    "resnet50": ("ResNet50", "resnet50"),
}


def set_threads(threads: int) -> None:
    """TensorFlow's thread pools; must run before TensorFlow executes anything."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _base(model: str, size: int) -> Any:
    import keras

    constructor = getattr(keras.applications, APPLICATIONS[model][0])
    return constructor(include_top=False, weights=None, input_shape=(size, size, 3))


def backbone_files(model: str, size: int, work: Path, mode: Mode) -> dict[str, str]:
    """Write the base once (MobileNetV2 pretrained on digits, ResNet50 random with calibrated
    BatchNorm); the recipe fields that load it."""
    import keras

    if model == "mobilenet_v2":
        path = pretrained_mobilenet(work, mode)
    else:
        path = work / f"keras-{model}-{size}.weights.h5"
        if not path.is_file():
            keras.utils.set_random_seed(0)
            base = _base(model, size)
            calibrate_batchnorm(base, model, size)
            base.save_weights(str(path))
    return {"source": f"keras:{model}", "weights": str(path), "model": model, "size": str(size)}


def pretrained_mobilenet(work: Path, mode: Mode) -> Path:
    """A MobileNetV2 base trained on :func:`~benchmarks.data.pretraining_digits` with
    ``model.fit``, written once as ``.weights.h5`` (the weights do not depend on the input
    size); why: see ``torch_side.pretrained_mobilenet``."""
    import keras

    from benchmarks.data import PRETRAIN_SIZE, pretraining_digits

    path = work / "keras-mobilenet_v2-pretrained.weights.h5"
    if not path.is_file():
        keras.utils.set_random_seed(0)
        base = _base("mobilenet_v2", PRETRAIN_SIZE)
        inputs = keras.Input((PRETRAIN_SIZE, PRETRAIN_SIZE, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
        network = keras.Model(inputs, keras.layers.Dense(10)(pooled))
        network.compile(
            optimizer=keras.optimizers.Adam(learning_rate=PRETRAIN_LR, epsilon=1e-8),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        images, labels = pretraining_digits(mode.pretrain_per_class)
        x = preprocess("mobilenet_v2", images)
        network.fit(x, labels, batch_size=32, epochs=mode.pretrain_epochs, shuffle=True, verbose=0)
        calibrate_batchnorm(base, "mobilenet_v2", PRETRAIN_SIZE, images[::3])
        base.save_weights(str(path))
    return path


def calibrate_batchnorm(
    base: Any, model: str, size: int, images: np.ndarray | None = None
) -> None:
    """Set the BatchNorm statistics of a base to the average over digits, batch by batch in
    training mode (momentum ``k / (k + 1)`` at batch ``k``: a cumulative average, memory
    bounded); see ``torch_side.calibrate_batchnorm`` for why a random base needs it. A base
    trained with ``model.fit`` needs it too: after 57 steps its moving statistics still gave
    chance accuracy in inference mode, even at momentum 0.9. ``images``: uint8 digits at
    ``size`` (default: the first :data:`CALIBRATION_IMAGES`)."""
    import keras

    from benchmarks.data import digits

    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if images is None:
        images = digits(CALIBRATION_IMAGES, size)[0]
    momenta = [norm.momentum for norm in norms]
    x = preprocess(model, images)
    for k, start in enumerate(range(0, len(x), CALIBRATION_BATCH)):
        for norm in norms:
            norm.momentum = k / (k + 1)
        base(x[start : start + CALIBRATION_BATCH], training=True)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def preprocess(model: str, images: np.ndarray) -> np.ndarray:
    """``keras.applications.<family>.preprocess_input`` on float32 copies, done once up front."""
    import keras

    family = getattr(keras.applications, APPLICATIONS[model][1])
    return family.preprocess_input(images.astype(np.float32))


def build(files: dict, classes: int, frozen: bool, lr: float) -> Any:
    """The classic transfer model, compiled with Adam and sparse cross-entropy on logits."""
    import keras

    size = int(files["size"])
    base = _base(files["model"], size)
    base.load_weights(files["weights"])
    inputs = keras.Input((size, size, 3))
    if frozen:
        base.trainable = False
        x = base(inputs, training=False)
    else:
        x = base(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes)(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _epoch_timer() -> Any:
    """A Keras callback whose ``seconds`` list gets the seconds of each epoch (training and
    validation)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.start = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def _fit(
    files: dict, train: tuple, val: tuple, epochs: int, batch: int, lr: float, frozen: bool
) -> tuple[list[float], float, float]:
    """Build and ``fit``: seconds per epoch, the final validation accuracy, and the
    ``perf_counter`` time at which the network was built."""
    model = build(files, 10, frozen, lr)
    built = time.perf_counter()
    x, xv = preprocess(files["model"], train[0]), preprocess(files["model"], val[0])
    timer = _epoch_timer()
    history = model.fit(
        x,
        train[1],
        batch_size=batch,
        epochs=epochs,
        validation_data=(xv, val[1]),
        shuffle=True,
        verbose=0,
        callbacks=[timer],
    )
    return timer.seconds, float(history.history["val_accuracy"][-1]), built


def finetune(
    files: dict, train: tuple, val: tuple, epochs: int, batch: int, lr: float
) -> list[float]:
    """Hand-written full fine-tune (``base.trainable = True``, BatchNorm training)."""
    return _fit(files, train, val, epochs, batch, lr, frozen=False)[0]


def frozen(
    files: dict, train: tuple, val: tuple, epochs: int, batch: int, lr: float, seed: int = 0
) -> tuple[float, float, list[float]]:
    """Hand-written frozen-base training, the whole job, seeded
    (``keras.utils.set_random_seed``); returns the final validation accuracy, the
    ``perf_counter`` time at which the network was built, and the seconds of each epoch."""
    import keras

    keras.utils.set_random_seed(seed)
    seconds, accuracy, built = _fit(files, train, val, epochs, batch, lr, frozen=True)
    return accuracy, built, seconds


def predictor(files: dict, images: np.ndarray) -> Callable[[], object]:
    """``model.predict`` on a fixed batch, ready to time."""
    model = build(files, 10, frozen=True, lr=1e-3)
    x = preprocess(files["model"], images)
    return lambda: model.predict(x, batch_size=len(x), verbose=0)


def direct_call(files: dict, images: np.ndarray) -> Callable[[], object]:
    """``model(x, training=False)``: the faster Keras path for small batches (for reference)."""
    model = build(files, 10, frozen=True, lr=1e-3)
    x = preprocess(files["model"], images)
    return lambda: model(x, training=False)
