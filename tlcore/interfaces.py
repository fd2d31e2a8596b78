"""The plain objects that cross the plugin boundary, in both directions.

Everything here is framework-free: arrays are numpy, models are whatever object the backend
made (the core never looks inside them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.stepstate import EMA_PREFIX, Batch, StepState

if TYPE_CHECKING:
    import numpy as np

__all__ = [  # Batch and StepState live in tlcore.stepstate: re-exported, as they cross too
    "EMA_PREFIX", "Backbone", "BackboneInfo", "BackendInfo", "Batch", "Choice", "FreezeReport",
    "InputSpec", "LoadReport", "Preprocessing", "Register", "RunInfo", "StepState",
    "TextPreprocessing", "VectorPreprocessing",
]


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become the backbone's input; applied inside the model and the ONNX graph.

    The model takes uint8 RGB images, NHWC, ``size`` = (height, width). It computes
    ``(x[..., channels] * scale - mean) / std`` per channel, where ``channels`` is RGB or BGR
    order. This covers torch style (scale 1/255, ImageNet mean/std), tf style (scale 1/127.5,
    mean 1, std 1) and caffe style (BGR, scale 1, mean in 0..255, std 1).
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 1 / 255
    channel_order: str = "RGB"

    def with_size(self, size: int | None) -> Preprocessing:
        """The same normalisation at another square input size (``None`` keeps this one)."""
        if size is None:
            return self
        return Preprocessing((size, size), self.mean, self.std, self.scale, self.channel_order)

    def affine(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The normalisation as ``x * gain + offset`` per channel (in the order the backbone
        takes), which both backends apply on NHWC pixels with the constants repeated along
        the width, a ``(W, 3)`` operand. onnxruntime broadcasts a ``(3,)`` operand along the
        last axis slowly (1.2 ms for one 224 px image, a tenth of a MobileNetV2) but a
        ``(W, 3)`` one at full speed (0.08 ms); moving the arithmetic to NCHW does not last,
        since onnxruntime's int8 graphs move the transposes back through it."""
        gain = tuple(self.scale / s for s in self.std)
        offset = tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))
        return gain, offset

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into ``tlcore.json`` and the ONNX metadata."""
        return {
            "layout": "NHWC",
            "dtype": "uint8",
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale,
            "channel_order": self.channel_order,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        return cls(
            size=tuple(data["size"]),  # type: ignore[arg-type]
            mean=tuple(data["mean"]),  # type: ignore[arg-type]
            std=tuple(data["std"]),  # type: ignore[arg-type]
            scale=float(data["scale"]),
            channel_order=data.get("channel_order", "RGB"),
        )


@dataclass(frozen=True)
class TextPreprocessing:
    """How texts become a text model's input: token ids from a Hugging Face ``tokenizers``
    tokenizer, cut or padded to ``max_length``.

    The model takes int64 ``(N, max_length)`` token ids, special tokens added (``[CLS] ...
    [SEP]``), padded at the end with ``pad_id``; it derives the attention mask itself
    (``ids != pad_id``) and uses token type 0 and positions ``0 .. max_length - 1``. The same
    tokenizer serves training, the native model and the runtime (:mod:`tlcore.inputs.text`).

    Attributes:
        tokenizer: the tokenizer's JSON file (``tokenizer.json``, as ``tokenizers`` writes
            it): a path while training; in a bundle, the file's name inside it.
        max_length: tokens per text, special tokens included.
        pad_id: the padding token's id.
    """

    tokenizer: str
    max_length: int = 128
    pad_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into ``tlcore.json`` and the ONNX metadata."""
        return {"tokenizer": self.tokenizer, "max_length": self.max_length, "pad_id": self.pad_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextPreprocessing:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["tokenizer"]), int(data["max_length"]), int(data.get("pad_id", 0)))


@dataclass(frozen=True)
class VectorPreprocessing:
    """How numeric vectors are standardised inside a vector model: ``(x - mean) / std`` per
    feature, with statistics of the training split (a constant feature gets ``std`` 1).

    The model takes float32 ``(N, features)`` as the user has them; the statistics live in
    the model (non-trainable weights, so a checkpoint carries them) and are recorded here for
    the bundle's description.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def features(self) -> int:
        """The vector's length."""
        return len(self.mean)

    @classmethod
    def of(cls, vectors: np.ndarray) -> VectorPreprocessing:
        """The statistics of training vectors ``(N, features)`` (float64 sums, float32 kept)."""
        import numpy as np

        data = np.asarray(vectors, dtype=np.float64)
        mean = data.mean(axis=0)
        std = data.std(axis=0)
        std[~(std > 1e-12)] = 1.0  # constant (or NaN-free but flat) features: no scaling
        return cls(tuple(float(np.float32(m)) for m in mean),
                   tuple(float(np.float32(s)) for s in std))

    @classmethod
    def identity(cls, features: int) -> VectorPreprocessing:
        """No standardisation (mean 0, std 1) for ``features`` features."""
        return cls((0.0,) * features, (1.0,) * features)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into ``tlcore.json`` and the ONNX metadata."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VectorPreprocessing:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))


@dataclass(frozen=True)
class InputSpec:
    """What a model takes, as one object: carried by the backbone, written into the bundle
    (``tlcore.json`` ``input`` and the ONNX metadata) and read by the runtime, which decodes
    inputs by its ``modality`` (:mod:`tlcore.inputs`).

    Attributes:
        modality: ``image``, ``text`` or ``vector``.
        dtype: the dtype of the model's input, as numpy names it (``uint8`` images, ``int64``
            token ids, ``float32`` vectors).
        shape: the shape of one sample: ``(224, 224, 3)`` for NHWC images, ``(max_length,)``
            for texts, ``(features,)`` for vectors.
        name: the input's name in the ONNX graph (``images``, ``input_ids``, ``vectors``).
        preprocessing: what the model applies itself (images: normalisation; texts: the
            tokenizer; vectors: standardisation).
    """

    modality: str
    dtype: str
    shape: tuple[int, ...]
    name: str = "images"
    preprocessing: Preprocessing | TextPreprocessing | VectorPreprocessing | None = None

    @classmethod
    def image(cls, preprocessing: Preprocessing) -> InputSpec:
        """The spec of a model taking uint8 RGB NHWC images at ``preprocessing.size``."""
        height, width = preprocessing.size
        return cls("image", "uint8", (height, width, 3), "images", preprocessing)

    @classmethod
    def text(cls, preprocessing: TextPreprocessing) -> InputSpec:
        """The spec of a model taking int64 token ids ``(N, max_length)``."""
        return cls("text", "int64", (preprocessing.max_length,), "input_ids", preprocessing)

    @classmethod
    def vector(cls, preprocessing: VectorPreprocessing) -> InputSpec:
        """The spec of a model taking float32 vectors ``(N, features)``."""
        return cls("vector", "float32", (preprocessing.features,), "vectors", preprocessing)

    @property
    def size(self) -> tuple[int, int]:
        """An image model's input size, ``(height, width)``."""
        return (self.shape[0], self.shape[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form. For images it keeps every key tlcore 0.1 wrote (``layout``,
        ``size``, ``mean``, ...), so older readers still read it."""
        data: dict[str, Any] = {
            "modality": self.modality,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "name": self.name,
        }
        if self.preprocessing is not None:
            data.update(self.preprocessing.to_dict())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`; a bundle of tlcore 0.1 (no ``modality``) is an image."""
        modality = data.get("modality", "image")
        if modality == "image":
            spec = cls.image(Preprocessing.from_dict(data))
            return cls(spec.modality, spec.dtype, spec.shape, data.get("name", spec.name),
                       spec.preprocessing)
        prep: TextPreprocessing | VectorPreprocessing | None = None
        if modality == "text" and "tokenizer" in data:
            prep = TextPreprocessing.from_dict(data)
        elif modality == "vector" and "mean" in data:
            prep = VectorPreprocessing.from_dict(data)
        return cls(modality, data["dtype"], tuple(data["shape"]), data.get("name", "inputs"),
                   prep)


@dataclass
class Backbone:
    """A loaded backbone: the backend's native network plus what the core needs to know.

    Attributes:
        network: the native object (a ``torch.nn.Module``, a ``keras.Model``, ...).
        preprocessing: the input size and normalisation the network expects.
        name: a readable name for logs and the bundle, e.g. ``hf:microsoft/resnet-18``.
        extra: anything the backend wants to carry from loading to attaching the head;
            ``extra["warnings"]``, a list of texts, is shown to the user as warnings.
        pretrained: False when the weights are a random initialisation: the core then trains
            the whole network with BatchNorm in training mode instead of freezing random
            features. A backend sets it False for a source with no published weights; the
            core settles it from the recipe's ``weights`` (``none``: False, a weights file:
            True) in :func:`tlcore.build.build_model`.
        inputs: what the model built on it takes, for a backbone that is not an image
            network (a text encoder's :meth:`InputSpec.text`, a vector network's
            :meth:`InputSpec.vector`); ``None`` (an image backbone) derives it from
            ``preprocessing``. A loader sets it as ``extra["inputs"]``
            (:func:`tlcore.sources.load_source`).
    """

    network: Any
    preprocessing: Preprocessing
    name: str
    extra: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = True
    inputs: InputSpec | None = None

    @property
    def input_spec(self) -> InputSpec:
        """What the model built on this backbone takes (:class:`InputSpec`). Derived when
        asked, so a backend may still change ``preprocessing`` (a recipe's ``input_size``)
        after building the backbone."""
        return self.inputs if self.inputs is not None else InputSpec.image(self.preprocessing)


@dataclass(frozen=True)
class FreezeReport:
    """What a freeze policy did: parameter counts, and the names of the trainable blocks."""

    trainable: int
    frozen: int
    backbone_trainable: int
    trainable_blocks: tuple[str, ...] = ()

    @property
    def backbone_frozen(self) -> bool:
        """True when no backbone parameter trains: the stage may train on cached features."""
        return self.backbone_trainable == 0


@dataclass(frozen=True)
class LoadReport:
    """What loading weights from another model did, by parameter name."""

    loaded: tuple[str, ...]
    mismatched: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendInfo:
    """A backend a plugin provides.

    Attributes:
        name: the word users type (``--backend torch``).
        packages: distributions that must be installed (checked without importing them).
        install_hint: how to install them, shown when one is missing.
        default_backbone: the source used when the recipe names none.
        description: one line for ``tl plugins``.
    """

    name: str
    packages: tuple[str, ...]
    install_hint: str
    default_backbone: str
    description: str = ""


@dataclass(frozen=True)
class BackboneInfo:
    """One backbone a plugin can load, for ``tl backbones``."""

    source: str
    input_size: int | None = None
    params: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Choice:
    """A value a plugin adds to one of the recipe's open choices (``tl_register_choices``).

    Attributes:
        kind: which choice it extends: ``freeze`` (``freeze.policy``), ``pooling``
            (``head.pooling``), ``optimizer`` (a stage's ``optimizer``), ``schedule``,
            ``augmentation`` (``data.augment``) or ``task`` (the recipe's ``task``).
        name: the value users write in the recipe.
        description: one line, shown in errors and ``tl plugins``.
        value: what the core needs to use the choice, for kinds the core carries out: a
            function ``(stage, step, total_steps) -> lr`` for ``schedule``, a function
            ``(images, rng) -> images`` for ``augmentation``, a :class:`tlcore.tasks.Task` for
            ``task``; ``None`` for choices the plugin's own hooks implement (a freeze policy
            its ``tl_freeze`` applies, a pooling its ``tl_attach_head``, an optimiser its
            ``tl_make_optimizer``).

    A built-in name cannot be redefined: such a registration is ignored, and ``tl plugins``
    says so (:mod:`tlcore.recipe.choices`).
    """

    kind: str
    name: str
    description: str = ""
    value: Any = None


Register = Callable[[Any], None]


@dataclass(frozen=True)
class RunInfo:
    """What event hooks learn about the run they observe."""

    path: Path
    backend: str
    class_names: tuple[str, ...]
    recipe: dict[str, Any]
