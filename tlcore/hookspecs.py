"""The hooks: everything a tlcore plugin may do, read top to bottom.

A plugin is a module (or object) with functions decorated ``@tlcore.hookimpl`` whose names
are hook names below; it is found through the ``tlcore`` entry-point group::

    [project.entry-points.tlcore]
    my_plugin = "my_package.plugin"

**Backend hooks** are ``firstresult``: the core calls every implementation in turn and stops at
the first answer that is not ``None``. Each takes ``backend`` first; a plugin returns ``None``
for a backend (or a case) that is not its own, so one plugin may add, say, one backbone source
for ``backend == "torch"`` and nothing else. Arrays cross the boundary as numpy; models and
optimisers are the backend's own objects, opaque to the core.

**Discovery hooks** (``tl_register_*``) take a ``register`` callback: call it once per thing
provided. **Event hooks** (``tl_on_*``) are called on every plugin and their results ignored.

The call order in a run: ``tl_load_backbone`` → ``tl_attach_head`` → (optionally
``tl_set_weights`` to start from another task's weights) → for each stage: ``tl_freeze`` →
``tl_make_optimizer`` → [``tl_extract_features`` once, when the backbone is frozen] →
per epoch ``tl_seed``, ``tl_train_step`` per batch, ``tl_eval_step`` per validation batch,
``tl_get_weights`` / ``tl_get_optimizer_state`` for checkpoints → finally ``tl_export``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import numpy as np

    from tlcore.interfaces import (
        Backbone,
        Batch,
        FreezeReport,
        LoadReport,
        Register,
        RunInfo,
        StepState,
    )
    from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec

PROJECT = "tlcore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- Discovery ----------------------------------------------------------------------------------


@hookspec
def tl_register_backends(register: Register) -> None:
    """Declare the backends this plugin provides.

    :param register: call ``register(BackendInfo(...))`` once per backend. ``BackendInfo``
        names the packages the backend needs, so the core can say "not installed" before
        importing anything.
    """


@hookspec
def tl_register_backbones(backend: str, register: Register) -> None:
    """List the backbones this plugin can load for ``backend`` (for ``tl backbones``).

    :param backend: the backend asked about.
    :param register: call ``register(BackboneInfo(...))`` once per backbone. Source kinds
        that take any path or hub id (``hf:<dir or id>``) register one example entry.
    """


# --- The five transfer-learning steps ----------------------------------------------------------


@hookspec(firstresult=True)
def tl_load_backbone(backend: str, spec: BackboneSpec) -> Backbone | None:
    """Build or load a backbone; first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param spec: the recipe's ``backbone`` section: ``spec.source`` is ``kind:name``
        (``hf:``, ``file:``, ``keras:`` ...) or ``None`` with ``spec.model`` set to a user's own
        network; ``spec.weights`` is ``pretrained``/``imagenet``, ``none`` or a weights path;
        ``spec.input_size`` overrides the network's own input size.
    :return: a :class:`~tlcore.interfaces.Backbone` carrying its preprocessing, or ``None``
        when the source is not this plugin's. Raise :class:`~tlcore.errors.TlcoreError` when
        it is yours but cannot be loaded (missing file, unknown name).
    """


@hookspec(firstresult=True)
def tl_attach_head(backend: str, backbone: Backbone, head: HeadSpec, num_classes: int) -> Any:
    """Put a new classification head on a backbone; first non-``None`` answer wins.

    The returned model takes uint8 RGB NHWC images and applies ``backbone.preprocessing``
    itself, then the backbone, the pooling of ``head.pooling``, optional hidden layers with
    ``head.dropout``, and a linear classifier of ``num_classes`` logits.

    :return: the backend's model object, or ``None`` for another backend.
    """


@hookspec(firstresult=True)
def tl_freeze(backend: str, model: Any, policy: FreezeSpec) -> FreezeReport | None:
    """Apply a freeze policy to the backbone of ``model`` for the next stage.

    Called at the start of every stage, so it must also *unfreeze* what the policy leaves
    trainable. BatchNorm layers follow ``policy.batchnorm`` (see :class:`FreezeSpec`).

    :return: a :class:`~tlcore.interfaces.FreezeReport` with trainable and frozen parameter
        counts (``backbone_trainable == 0`` lets the core train on cached features), or
        ``None`` for another backend.
    """


@hookspec(firstresult=True)
def tl_make_optimizer(backend: str, model: Any, stage: StageSpec) -> Any:
    """Make the optimiser for one stage, over the parameters that are trainable now.

    Called after ``tl_freeze`` at the start of each stage. ``stage.optimizer`` is one of
    ``adamw``, ``adam``, ``sgd`` (with ``stage.momentum``), ``rmsprop``; ``stage.lr`` and
    ``stage.weight_decay`` apply. The core sets the learning rate of every step itself.

    :return: an opaque optimiser object handed back in ``StepState.optimizer``.
    """


@hookspec(firstresult=True)
def tl_train_step(backend: str, model: Any, batch: Batch, state: StepState) -> dict | None:
    """Run one optimisation step on one batch.

    :param batch: uint8 NHWC images, or cached pooled features when ``batch.features`` (then
        only the head runs); ``batch.y`` holds integer labels.
    :param state: the optimiser, this step's learning rate and the label smoothing.
    :return: ``{"loss": float, "accuracy": float}`` for the batch (plain floats), or ``None``
        for another backend.
    """


@hookspec(firstresult=True)
def tl_eval_step(backend: str, model: Any, batch: Batch) -> np.ndarray | None:
    """Run the model in inference mode on one batch.

    :return: the logits as a float32 numpy array ``(batch, num_classes)``, or ``None``.
    """


@hookspec(firstresult=True)
def tl_extract_features(backend: str, model: Any, images: np.ndarray) -> np.ndarray | None:
    """Run the preprocessing, the backbone and the pooling in inference mode.

    Used to cache features once per sample when a stage's backbone is frozen; training the
    head on them must match running the whole model within float tolerance.

    :param images: uint8 RGB NHWC.
    :return: float32 array ``(batch, features)``, or ``None`` for another backend.
    """


@hookspec(firstresult=True)
def tl_export(
    backend: str, model: Any, fmt: str, path: Path, example: np.ndarray, opset: int
) -> Path | None:
    """Write the model in format ``fmt`` into the folder ``path``.

    ``native``: the framework's own file (a state dict, a ``.keras`` file). ``onnx``: a *raw*
    graph with one uint8 NHWC image input (dynamic batch) and one output, the logits; the core
    then adds the softmax, names and metadata, and checks parity (``tlcore.bundle``). Other
    formats (TFLite, TorchScript, ...) are for plugins to add.

    :param path: the folder to write into (created by the core).
    :param example: a few real uint8 NHWC input images, for tracing.
    :param opset: the ONNX opset asked for (``export.opset`` of the recipe); other formats
        ignore it. An implementation may leave out arguments it does not use.
    :return: the path of the main file written, or ``None`` when this plugin cannot write
        ``fmt`` for ``backend``.
    """


# --- State: weights, optimiser state, randomness ----------------------------------------------


@hookspec(firstresult=True)
def tl_get_weights(backend: str, model: Any) -> dict[str, np.ndarray] | None:
    """Return every weight and buffer of ``model`` as numpy arrays, by stable name.

    The core keeps these for the best epoch and writes them into checkpoints (``.npz``, no
    pickle); ``tl_set_weights`` must accept the same names back.
    """


@hookspec(firstresult=True)
def tl_set_weights(
    backend: str, model: Any, weights: dict[str, np.ndarray], strict: bool
) -> LoadReport | None:
    """Load numpy weights by name into ``model``.

    :param strict: ``True`` for the run's own checkpoints (every name and shape must match);
        ``False`` to start from another task's weights: what fits is loaded, what does not is
        left as initialised and listed in the report, which the core turns into a warning.
    :return: a :class:`~tlcore.interfaces.LoadReport`, or ``None`` for another backend.
    """


@hookspec(firstresult=True)
def tl_get_optimizer_state(backend: str, optimizer: Any) -> dict[str, np.ndarray] | None:
    """Return the optimiser's state (moments, step counts) as numpy arrays, for resuming."""


@hookspec(firstresult=True)
def tl_set_optimizer_state(
    backend: str, optimizer: Any, state: dict[str, np.ndarray]
) -> bool | None:
    """Restore what ``tl_get_optimizer_state`` returned; return ``True`` when done."""


@hookspec
def tl_seed(backend: str, seed: int) -> None:
    """Seed the framework's random generators (dropout, initialisation).

    Called before the model is built and at the start of every epoch with a seed derived from
    the recipe's seed, the stage and the epoch, so that a resumed run repeats an
    uninterrupted one exactly.
    """


# --- Events, for loggers and observers --------------------------------------------------------


@hookspec
def tl_on_epoch_end(run: RunInfo, stage: str, epoch: int, metrics: dict[str, float]) -> None:
    """Called after every epoch with its training and validation metrics."""


@hookspec
def tl_on_stage_end(run: RunInfo, stage: str, metrics: dict[str, float]) -> None:
    """Called when a stage ends, with the metrics of the epoch it kept."""


@hookspec
def tl_on_checkpoint(run: RunInfo, path: Path) -> None:
    """Called after a checkpoint has been written (atomically) to ``path``."""


@hookspec
def tl_on_export(run: RunInfo, fmt: str, path: Path) -> None:
    """Called after the model has been exported in format ``fmt`` to ``path``."""
