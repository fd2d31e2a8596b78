"""The recipe's sections as frozen dataclasses, with their defaults and what each field accepts.

The stages' own dataclasses live in :mod:`tlcore.recipe.stages` and the field helpers in
:mod:`tlcore.recipe.fields`; both are re-exported here, the one place to import a section from.

A field's ``metadata`` says what is valid (``choices``, a numeric range); :mod:`tlcore.recipe.build`
checks it when a recipe is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tlcore.bundle.layout import TTA_CHOICES
from tlcore.classifier import CHOICES as CLASSIFIERS
from tlcore.classifier import NEW
from tlcore.recipe.fields import AUTO_LR, MONITORS, bounds, choice
from tlcore.recipe.stages import (
    SCRATCH_WARMUP,
    FreezeSpec,
    StageSpec,
    default_stages,
    follows_default_stages,
    scratch_stage,
)

__all__ = [  # the stages' names, re-exported: a section is imported from here
    "AUTO_LR", "MONITORS", "PRETRAINED_WEIGHTS", "SCRATCH_WARMUP", "BackboneSpec", "DataSpec",
    "ExportSpec", "FreezeSpec", "HeadSpec", "Recipe", "StageSpec", "TrainSpec",
    "default_stages", "follows_default_stages", "scratch_stage",
]

#: The ``backbone.weights`` values that mean the source's own published weights.
PRETRAINED_WEIGHTS = ("pretrained", "imagenet")


@dataclass(frozen=True)
class BackboneSpec:
    """Which pretrained network to start from.

    ``source`` is ``<kind>:<name>``, e.g. ``hf:./my-resnet``, ``hf:microsoft/resnet-18``,
    ``file:model.pt`` (TorchScript), ``keras:mobilenet_v2``, ``builtin:simple_cnn``;
    ``None`` asks the backend for its default. ``weights`` is ``pretrained`` (the source's
    own weights; ``imagenet`` is an alias), ``none`` (random initialisation) or the path of a
    weights file from another task, loaded where shapes fit. ``model`` is a user's own
    ``torch.nn.Module`` / ``keras.Model`` (Python API only).

    ``input_size``: an image backbone's square input side in pixels; a text encoder's tokens
    per text (default 128). ``widths``: the hidden layers of ``builtin:mlp`` (default
    ``[256, 128]``). ``input_features``: the length of the vectors a vector network takes;
    tlcore sets it from vector data (a value that disagrees with the data is refused).
    """

    source: str | None = None
    weights: str = "pretrained"
    input_size: int | None = field(default=None, metadata=bounds(8, 4096))
    widths: tuple[int, ...] = ()
    input_features: int | None = field(default=None, metadata=bounds(1, 1 << 24))
    model: Any = field(default=None, compare=False, repr=False, metadata={"serialize": False})


@dataclass(frozen=True)
class HeadSpec:
    """The new classifier: pooling, optional hidden layers, dropout, a linear classifier.

    ``pooling``: how the backbone's output becomes one vector per sample. ``avg`` (the
    default) and ``max`` average or take the maximum over a feature map's positions or over
    tokens, ``flatten`` keeps everything. For a text encoder, ``avg`` is the model's own
    pooling (``mean`` for sentence-transformers models that say so, else ``cls``), ``mean``
    averages the text's tokens (padding left out), ``cls`` takes the first token's state and
    ``max`` the maximum over the text's tokens. For images ``mean`` is ``avg``; ``cls`` takes
    a vision transformer's first token.

    ``classifier``: what becomes of a network that ends in its own classifier
    (:mod:`tlcore.classifier`). ``new`` (the default): the network's whole output is the
    features and the new head goes on top of it. ``replace``: the network's own last linear
    layer (torch ``nn.Linear``, Keras ``Dense``) is removed, its input is the features (and
    the bundle's ``embeddings``), and a new head for the data's classes takes its place.
    ``keep``: as ``replace``, but the head is one linear layer that starts from the removed
    layer's weight and bias, so training continues the network's own classifier; that layer
    must have as many outputs as the data has classes, and ``hidden`` must be empty. The
    head outputs logits (softmax is applied by the loss and the export), so a Keras ``Dense``
    with a softmax (or no) activation is kept as the same classifier, and one with another
    activation is refused. Both need the network's output to be that layer's output (nothing
    after it), and neither applies to a text encoder (loaded without its heads).
    """

    pooling: str = field(default="avg", metadata=choice("avg", "max", "flatten", "mean", "cls"))
    hidden: tuple[int, ...] = ()
    dropout: float = field(default=0.0, metadata=bounds(0.0, 0.95))
    activation: str = field(default="relu", metadata=choice("relu", "gelu"))
    classifier: str = field(default=NEW, metadata=choice(*CLASSIFIERS))


@dataclass(frozen=True)
class TrainSpec:
    """The stages, the batch size, the seed, whether frozen-backbone features are cached, and
    where training runs.

    ``batch_size`` is the global batch: in a distributed run each process takes its share of
    every batch (:mod:`tlcore.parallel`). ``device``: ``auto`` (the first GPU when there is
    one, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. ``precision``: ``32``,
    ``bf16`` (bfloat16 autocast) or ``16-mixed`` (float16 autocast with loss scaling; GPUs
    only); exports and their parity checks are float32 whatever it is.

    ``accumulate``: batches per optimiser step (gradient accumulation, default 1): each
    update applies the mean gradient of ``accumulate`` consecutive batches, exactly as one
    batch of ``batch_size * accumulate`` would (the effective batch), except that BatchNorm
    layers in training mode see each batch alone and ``class_weights`` weigh each batch's
    mean alone; schedules, ``min_steps`` and ``warmup`` count optimiser steps. An epoch
    whose batch count is not a multiple applies its last, smaller group at the epoch's end.
    ``clip_norm``: the largest global gradient norm (over every trainable weight, as
    ``torch.nn.utils.clip_grad_norm_`` computes it, after unscaling for ``16-mixed`` and
    before weight decay); 0 (the default) does not clip.
    ``ema``: the decay of an exponential moving average of the weights (timm's ``ModelEmaV2``,
    over the trainable weights and the BatchNorm statistics), updated after every optimiser
    step; 0 (the default) keeps none. With it, validation, the best epoch, the next stage's
    start and the export use the averaged weights; the decay warms up as
    ``min(ema, (1 + n) / (10 + n))`` after ``n`` updates in the stage (TensorFlow's
    ``ExponentialMovingAverage`` rule), so that a short stage's average does not stay at the
    stage's first weights. All three are exact under resume: the average is saved with the
    optimiser's state in every checkpoint.

    ``class_weights`` (classification only): ``none`` (the default), ``balanced`` (class
    ``c`` weighs ``n_samples / (n_classes * count_c)`` on the training split, as
    scikit-learn's ``compute_class_weight("balanced")``) or a mapping ``{class name: weight}``
    naming every class, weights finite and > 0. The training loss is then the weighted
    cross-entropy of ``torch.nn.functional.cross_entropy(weight=...)`` (a weighted mean),
    and so is the training ``loss`` recorded; ``val_loss`` stays the plain cross-entropy, so
    runs with and without weights compare on it. (With gradient accumulation or several
    processes, each part of a batch is weighted on its own and the parts combine by their
    share of the examples, as ``DistributedDataParallel`` combines torch's weighted loss.)
    ``sampler``: ``shuffle`` (the default: each epoch a seeded permutation) or ``balanced``
    (each epoch draws as many examples as the training split holds, with replacement, with
    probability inversely proportional to their class's frequency: every class equally
    often on average; classification only).
    """

    stages: tuple[StageSpec, ...] = field(default_factory=default_stages)
    batch_size: int = field(default=32, metadata=bounds(1, 65536))
    seed: int = field(default=0, metadata=bounds(0))
    cache_features: bool = True
    device: str = "auto"
    precision: str = field(default="32", metadata=choice("32", "bf16", "16-mixed"))
    accumulate: int = field(default=1, metadata=bounds(1, 65536))
    clip_norm: float = field(default=0.0, metadata=bounds(0.0))
    ema: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    class_weights: str | dict[str, float] = field(
        default="none", metadata={"class_weights": ("none", "balanced")}
    )
    sampler: str = field(default="shuffle", metadata=choice("shuffle", "balanced"))


@dataclass(frozen=True)
class DataSpec:
    """Where the images are and how the validation set is made.

    ``path``: a folder with one sub-folder per class, or the folder of the images a label
    file names. ``labels``: a CSV label file, one image per line, ``path,label``: for
    ``task: multilabel`` the labels separated by ``;`` (``img/1.png,cat;dog``), for
    ``regression`` a number (``img/1.png,0.73``), for classification one class; paths are
    relative to ``path`` or to the CSV file's folder, a header line (``path,label``) is
    optional. ``val_path``: a separate validation folder with the same classes (with
    ``labels``: a CSV label file of its own); without it, ``val_split`` of each class is held
    out (seeded by ``train.seed``; of all images for multilabel and regression). Left unset
    (``null``), it adapts to the data: 20 % of each class but at least 2 images, and nothing
    at all when the smallest class has fewer than 100 images or the validation set would hold
    fewer than 50 (for multilabel and regression: 20 %, and nothing below 50): with few
    images, a fifth of them is worth more as training data than as a measurement
    (:func:`tlcore.data.load_datasets`); measure such a model on other images
    (``val_path``, ``tl eval``) or set ``val_split`` to hold some out.
    ``augment``: any of ``hflip``, ``shift``, ``random_resized_crop``, ``color_jitter``,
    ``rotate``, ``randaugment``, ``trivialaugment``, ``mixup``, ``cutmix``, in the order they
    apply to training batches (mixup and CutMix always last: they mix pairs of images and
    their targets into soft targets, for ``classification`` and ``multilabel`` only), images
    only (:mod:`tlcore.data.augment`). Any augmentation turns feature caching off: the
    backbone runs on every step, while the decoded, resized images stay cached in memory.
    ``crop_scale``: ``random_resized_crop``'s smallest crop, a fraction of the image's area
    (0.35: fine-tuning on few images loses the object in torchvision's 0.08).
    ``mixup_alpha``, ``cutmix_alpha``: the ``Beta(alpha, alpha)`` the mixing weights are
    drawn from (timm's 0.8 and 1.0).

    Texts and vectors come the same ways: ``path`` may be a folder with one sub-folder of
    ``.txt`` files per class, a CSV or JSONL file with a text column and a label column
    (``text_column``, ``label_column``), a CSV of numeric feature columns and a label
    column, or a ``.npz`` file holding ``x`` (vectors ``(N, features)``) and ``y`` (labels).
    ``standardize``: whether a vector model subtracts the training split's mean and divides by
    its standard deviation, inside the model (the statistics travel in its weights and in the
    ONNX graph). Left unset (``null``), only a network that starts from random weights does
    (``builtin:mlp``, ``weights: none``); a network with trained weights of its own (yours, a
    file, a weights path) takes the vectors as they come, as it was trained on them.
    """

    path: str | None = None
    labels: str | None = None
    val_path: str | None = None
    val_split: float | None = field(default=None, metadata=bounds(0.0, 0.9))
    augment: tuple[str, ...] = field(default=(), metadata=choice(
        "hflip", "shift", "random_resized_crop", "color_jitter", "rotate", "randaugment",
        "trivialaugment", "mixup", "cutmix",
    ))
    crop_scale: float = field(default=0.35, metadata=bounds(0.01, 1.0))
    mixup_alpha: float = field(default=0.8, metadata=bounds(0.01, 100.0))
    cutmix_alpha: float = field(default=1.0, metadata=bounds(0.01, 100.0))
    text_column: str = "text"
    label_column: str = "label"
    standardize: bool | None = None


@dataclass(frozen=True)
class ExportSpec:
    """What the end of training writes: formats, ONNX opset, quantisation, parity tolerance.

    ``quantize``: ``none``, ``static`` (int8 weights and activations, calibrated on
    ``calibration_images`` training images; the one that speeds up CNNs on CPU) or
    ``dynamic`` (int8 weights only). The int8 model becomes the bundle's default model only
    if its validation accuracy is at most ``max_accuracy_drop`` (a fraction: 0.01 is one
    point) below the float model's; ``model.onnx`` is always kept.

    ``tta``: test-time augmentation built into ``model.onnx``: ``none`` (the default: one
    forward per image), ``hflip`` (the graph averages the task's output over each image and
    its mirror image, twice the compute), ``crops`` (over the image and its four corner
    crops, 7/8 of its sides, enlarged back: five times) or ``hflip_crops`` (those and their
    mirror images: ten times); recorded in the ONNX metadata and ``tlcore.json``, checked
    against the framework's own average over the same views; images only,
    :mod:`tlcore.bundle.tta`. ``tl eval --tta`` / ``tl predict --tta`` do the same on a
    bundle exported without it.
    """

    formats: tuple[str, ...] = ("native", "onnx")
    opset: int = field(default=17, metadata=bounds(9, 30))
    quantize: str = field(default="none", metadata=choice("none", "static", "dynamic"))
    max_accuracy_drop: float = field(default=0.01, metadata=bounds(0.0, 1.0))
    calibration_images: int = field(default=300, metadata=bounds(1, 100_000))
    tolerance: float = field(default=1e-4, metadata=bounds(0.0, 1.0))
    tta: str = field(default="none", metadata=choice(*TTA_CHOICES))


@dataclass(frozen=True)
class Recipe:
    """Everything a run needs, except the data arrays a Python caller may pass directly.

    ``task``: what the head predicts (:mod:`tlcore.tasks`): ``classification`` (one class per
    image), ``multilabel`` (any number of labels per image, from ``data.labels``) or
    ``regression`` (one number per image, from ``data.labels``); plugins may add more.
    """

    backend: str = "torch"
    backbone: BackboneSpec = BackboneSpec()
    head: HeadSpec = HeadSpec()
    task: str = field(
        default="classification", metadata=choice("classification", "multilabel", "regression")
    )
    train: TrainSpec = TrainSpec()
    data: DataSpec = DataSpec()
    export: ExportSpec = ExportSpec()

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON-able data (user objects left out)."""
        return _to_plain(self)

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with dotted overrides applied, e.g. ``replace(**{"train.seed": 3})``."""
        from tlcore.recipe.build import build_recipe  # build imports this module

        return build_recipe(self.to_data(), overrides)

    def to_data(self) -> dict[str, Any]:
        """Like :meth:`to_dict`, but keeping the user's own network object."""
        data = self.to_dict()
        data["backbone"]["model"] = self.backbone.model
        return data


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.metadata.get("serialize", True)
        }
    if isinstance(obj, tuple | list):
        return [_to_plain(v) for v in obj]
    return obj
