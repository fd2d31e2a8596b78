"""Keras 3 (TensorFlow) backend for tlcore: the hook implementations.

Importing this module imports neither Keras nor TensorFlow; each hook returns ``None`` for
another backend (or another backend's objects) and imports the Keras side (its submodules)
only when called for ``keras``. The work is done in small modules: ``catalogue`` (what can be
loaded, framework-free), ``sources`` (loading backbones), ``builtin``, ``names`` (stable weight
names), ``blocks`` (what ``last_n`` counts), ``model`` (the :class:`TransferModel` and its
head), ``freezing``, ``training`` (optimisers and compiled steps), ``state`` (weights,
optimiser state, native export) and ``export`` (the raw ONNX graph).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.builtins import DEFAULT_BACKBONE
from tlcore.hookspecs import hookimpl
from tlcore.interfaces import BackendInfo, Register

if TYPE_CHECKING:
    import numpy as np

    from tlcore.interfaces import Backbone, Batch, FreezeReport, LoadReport, StepState
    from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec

BACKEND = "keras"


def _ours(backend: str, model: Any) -> bool:
    """True when the call is for the keras backend and ``model`` is one of its models.

    Without ``tlcore_keras.model`` imported no model of ours can exist, so nothing is
    imported to answer.
    """
    if backend != BACKEND or "tlcore_keras.model" not in sys.modules:
        return False
    from tlcore_keras.model import TransferModel

    return isinstance(model, TransferModel)


def _our_optimizer(backend: str, optimizer: Any) -> bool:
    """True when ``optimizer`` is one the keras backend made."""
    if backend != BACKEND or "tlcore_keras.training" not in sys.modules:
        return False
    from tlcore_keras.training import StageOptimizer

    return isinstance(optimizer, StageOptimizer)


@hookimpl
def tl_register_backends(register: Register) -> None:
    """Declare the ``keras`` backend, without importing Keras."""
    register(
        BackendInfo(
            name=BACKEND,
            packages=("keras", "tensorflow"),
            install_hint="pip install 'tlcore[keras]' -c constraints.txt",
            default_backbone=DEFAULT_BACKBONE,
            description="Keras 3 on TensorFlow: keras.applications, builtin, .keras files "
            "or your own keras.Model",
        )
    )


@hookimpl
def tl_register_backbones(backend: str, register: Register) -> None:
    """List the Keras backbones with their parameter counts, without importing Keras."""
    if backend != BACKEND:
        return
    from tlcore_keras.catalogue import backbone_infos

    for info in backbone_infos():
        register(info)


@hookimpl
def tl_load_backbone(backend: str, spec: BackboneSpec) -> Backbone | None:
    """Load ``keras:``, ``builtin:``, ``file:<model.keras>`` or a user keras.Model."""
    if backend != BACKEND or spec is None:
        return None
    from tlcore_keras.framework import require_keras

    require_keras()
    from tlcore_keras.sources import load_backbone

    return load_backbone(spec)


@hookimpl
def tl_attach_head(backend: str, backbone: Backbone, head: HeadSpec, num_classes: int) -> Any:
    """Wrap a Keras backbone into a ``TransferModel`` (preprocessing, pooling, new head)."""
    if backend != BACKEND:
        return None
    from tlcore_keras.framework import require_keras

    keras = require_keras()
    if not isinstance(backbone.network, keras.Model):
        return None
    from tlcore_keras.model import attach_head

    return attach_head(backbone, head, num_classes)


@hookimpl
def tl_freeze(backend: str, model: Any, policy: FreezeSpec) -> FreezeReport | None:
    """Set what trains in the backbone and which BatchNorm layers stay in inference mode."""
    if not _ours(backend, model):
        return None
    from tlcore_keras.freezing import apply_freeze

    return apply_freeze(model, policy)


@hookimpl
def tl_make_optimizer(backend: str, model: Any, stage: StageSpec) -> Any:
    """AdamW, Adam, SGD or RMSprop over the trainable variables, built."""
    if not _ours(backend, model):
        return None
    from tlcore_keras.training import make_optimizer

    return make_optimizer(model, stage)


@hookimpl
def tl_train_step(backend: str, model: Any, batch: Batch, state: StepState) -> dict | None:
    """One compiled optimisation step on images or cached features."""
    if not _ours(backend, model):
        return None
    from tlcore_keras.training import train_step

    return train_step(model, batch, state)


@hookimpl
def tl_eval_step(backend: str, model: Any, batch: Batch) -> np.ndarray | None:
    """float32 logits in inference mode."""
    if not _ours(backend, model):
        return None
    from tlcore_keras.training import eval_step

    return eval_step(model, batch)


@hookimpl
def tl_extract_features(backend: str, model: Any, images: np.ndarray) -> np.ndarray | None:
    """float32 pooled backbone features in inference mode."""
    if not _ours(backend, model):
        return None
    from tlcore_keras.training import extract_features

    return extract_features(model, images)


@hookimpl
def tl_export(
    backend: str, model: Any, fmt: str, path: Path, example: np.ndarray, opset: int
) -> Path | None:
    """``native``: the full model as ``path/model.keras``, written atomically; ``onnx``: the raw
    graph (uint8 NHWC ``images`` → logits, via tf2onnx) as ``path/model.onnx``, for the core
    to finish."""
    if fmt not in ("native", "onnx") or not _ours(backend, model):
        return None
    if fmt == "onnx":
        from tlcore_keras.export import export_onnx

        return export_onnx(model, Path(path), example, opset)
    from tlcore_keras.state import export_native

    return export_native(model, Path(path))


@hookimpl
def tl_get_weights(backend: str, model: Any) -> dict[str, np.ndarray] | None:
    """Every weight (moving statistics included) as numpy copies, by stable name."""
    if not _ours(backend, model):
        return None
    from tlcore_keras.state import get_weights

    return get_weights(model)


@hookimpl
def tl_set_weights(
    backend: str, model: Any, weights: dict[str, np.ndarray], strict: bool
) -> LoadReport | None:
    """Load numpy weights by name and shape, strictly or where they fit."""
    if not _ours(backend, model):
        return None
    from tlcore_keras.state import set_weights

    return set_weights(model, weights, strict=strict)


@hookimpl
def tl_get_optimizer_state(backend: str, optimizer: Any) -> dict[str, np.ndarray] | None:
    """The optimiser's iteration count and slots as ``{"<index>.<kind>": array}``."""
    if not _our_optimizer(backend, optimizer):
        return None
    from tlcore_keras.state import get_optimizer_state

    return get_optimizer_state(optimizer)


@hookimpl
def tl_set_optimizer_state(
    backend: str, optimizer: Any, state: dict[str, np.ndarray]
) -> bool | None:
    """Restore what ``tl_get_optimizer_state`` returned."""
    if not _our_optimizer(backend, optimizer):
        return None
    from tlcore_keras.state import set_optimizer_state

    set_optimizer_state(optimizer, state)
    return True


@hookimpl
def tl_seed(backend: str, seed: int) -> None:
    """Seed Keras (``keras.utils.set_random_seed``) and restart live models' dropout streams."""
    if backend != BACKEND:
        return
    from tlcore_keras.framework import require_keras

    require_keras()
    from tlcore_keras.training import seed as seed_all

    seed_all(seed)
