"""The hooks: everything a tlcore plugin may do, read top to bottom.

**A plugin** is a module (or any object) with functions decorated ``@tlcore.hookimpl`` whose
names are hook names below, published under the ``tlcore`` entry-point group. A whole plugin
that adds a backbone source to the PyTorch backend::

    # pyproject.toml
    [project.entry-points.tlcore]
    tinynet = "tl_tinynet"

    # tl_tinynet.py
    import tlcore
    from tlcore.interfaces import Backbone, Preprocessing

    @tlcore.hookimpl
    def tl_load_backbone(backend, spec):
        if backend != "torch" or not (spec.source or "").startswith("tinynet:"):
            return None  # not ours: another plugin answers
        from torch import nn  # import the framework inside the hook, never at module level

        width = int(spec.source.split(":", 1)[1])
        net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        return Backbone(net, Preprocessing((32, 32)).with_size(spec.input_size), spec.source)

After ``pip install``, ``tl plugins`` lists it and ``tl train --backbone tinynet:8`` uses it.

**The rules.**

- *Who answers.* Hooks marked *firstresult* are called plugin by plugin until one returns
  something other than ``None``; that answer wins. Return ``None`` for a backend, a source, a
  format or an object that is not yours. The other hooks call every implementation.
- *Arguments.* Hooks are called with keyword arguments; an implementation may declare only
  the ones it uses (``def tl_export(backend, model, fmt, path)`` ignores ``example`` and
  ``opset``), but never one that the spec does not have: a misspelt hook or argument name
  makes the plugin *broken* (``tl plugins`` says why) instead of silently never called.
- *Data.* Arrays cross the boundary as numpy: images are uint8 RGB, NHWC; targets as the
  task's loss takes them (:class:`~tlcore.interfaces.Batch`). A backend knows a loss by name
  (:attr:`~tlcore.interfaces.StepState.loss`) and nothing else of the task: the core computes
  the metrics from the outputs and adds the final activation to the exported graph.
  Models and optimisers are the backend's own objects, opaque to the core.
- *Imports.* ``import tlcore`` imports no framework. A plugin imports its framework inside
  its hooks, after checking that the call is for its backend.
- *Errors.* A user's mistake (missing file, unknown name, wrong shape) raises
  :class:`~tlcore.errors.TlcoreError` with a hint, never a framework traceback.
- *Weight names* (``tl_get_weights``): the backbone's weights are named ``backbone``, a
  separator, then their name inside the backbone (``backbone.blocks.0.0.weight``,
  ``backbone/block_0_conv/kernel``); the head's start with ``head`` and a separator. A freeze
  ``pattern`` sees the names inside the backbone.
- *A backend* provides ``builtin:simple_cnn`` as :mod:`tlcore.builtins` defines it; the
  conformance suite (:mod:`tlcore.testing`) builds it to check a backend through these hooks:
  ``python -m tlcore.testing mybackend``.

**Order of calls in a run.** ``tl_setup`` → ``tl_seed`` → ``tl_load_backbone`` →
``tl_attach_head`` → (``tl_set_weights`` when resuming) → for each stage: ``tl_freeze`` →
``tl_make_optimizer`` → [``tl_extract_features`` once per sample when the backbone is frozen]
→ per epoch: ``tl_seed``, ``tl_train_step`` per batch, ``tl_eval_step`` per validation batch,
``tl_get_weights`` / ``tl_get_optimizer_state`` for the checkpoint, ``tl_on_epoch_end``,
``tl_on_checkpoint`` → ``tl_on_stage_end`` → finally ``tl_export`` and ``tl_on_export`` per
format. ``tl_register_backends`` and ``tl_register_backbones`` answer ``tl plugins`` and
``tl backbones``; ``tl_register_choices`` is asked when a recipe holds a value that is not
built in (a plugin's freeze policy, pooling, optimiser, schedule, augmentation or task).

**Debugging.** ``TLCORE_TRACE_PLUGINS=1`` prints every hook call, the plugins it reaches,
its arguments and its result to stderr; ``TLCORE_PLUGINS=name,other`` loads only those
installed plugins (empty: none).
"""

from __future__ import annotations

from collections.abc import Callable
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
    from tlcore.parallel import Placement, Setup
    from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec

PROJECT = "tlcore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorate a plugin's hook implementations: ``@tlcore.hookimpl``."""


# --- Discovery ----------------------------------------------------------------------------------


@hookspec
def tl_register_backends(register: Register) -> None:
    """Declare the backends this plugin provides.

    Called whenever the core needs the list of backends (``tl plugins``, checking a recipe's
    ``backend`` before training); it must not import a framework. Every implementation is
    called.

    :param register: call ``register(BackendInfo(...))`` once per backend. The
        :class:`~tlcore.interfaces.BackendInfo` names the packages the backend needs, so the
        core can say "not installed" (with its ``install_hint``) before importing anything.
    :return: nothing; what counts is what was registered.
    """


@hookspec
def tl_register_backbones(backend: str, register: Register) -> None:
    """List the backbones this plugin can load for ``backend``.

    Called by ``tl backbones``; it must not import a framework. Every implementation is
    called.

    :param backend: the backend asked about; register nothing for another one.
    :param register: call ``register(BackboneInfo(...))`` once per backbone (a
        :class:`~tlcore.interfaces.BackboneInfo`). Source kinds that take any path or hub id
        (``hf:<dir or id>``) register one example entry.
    :return: nothing; what counts is what was registered.
    """


@hookspec
def tl_register_choices(register: Register) -> None:
    """Add values to the recipe's open choices: freeze policies, pooling, optimisers,
    schedules, augmentations, tasks.

    Called when a recipe holds a value that is not built in, to validate it (still before
    any framework is imported; a recipe of built-in values asks no plugin), when the core
    carries out a plugin's schedule or augmentation, and by ``tl plugins``, which lists what
    each plugin registered. It must not import a framework. Every implementation is called.

    :param register: call ``register(Choice(kind, name, description, value))`` once per value
        (a :class:`~tlcore.interfaces.Choice`). ``kind`` names the field it extends
        (:data:`tlcore.recipe.choices.OPEN_FIELDS`): ``freeze`` (every stage's
        ``freeze.policy``), ``pooling`` (``head.pooling``), ``optimizer`` and ``schedule`` (a
        stage's), ``augmentation`` (an item of ``data.augment``), ``task`` (``task``),
        ``format`` (an item of ``export.formats``, which your ``tl_export`` writes). The
        recipe then accepts ``name`` there, and an unknown value's error lists the built-in
        and the registered names, with the plugin of each. A built-in name, a name another
        plugin registered first, or an unknown kind is ignored, and ``tl plugins`` says why.
        Implement what the choice means: a ``freeze`` policy in your ``tl_freeze``, a
        ``pooling`` in your ``tl_attach_head``, an ``optimizer`` in your
        ``tl_make_optimizer`` (the built-in backends answer ``None`` for a value that is not
        built in, so yours is asked); a ``schedule`` carries its function as ``value``
        (``value(stage, step, total_steps) -> lr``), an ``augmentation`` too
        (``value(images, rng) -> images``, uint8 NHWC in and out, drawing from ``rng``), and
        a ``task`` its :class:`tlcore.tasks.Task`.
    :return: nothing; what counts is what was registered.
    """


# --- The five transfer-learning steps ----------------------------------------------------------


@hookspec(firstresult=True)
def tl_load_backbone(backend: str, spec: BackboneSpec) -> Backbone | None:
    """Build or load a backbone.

    Called once per run, before the head is attached. The first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param spec: the recipe's ``backbone`` section (:class:`~tlcore.recipe.BackboneSpec`):
        ``spec.source`` is ``kind:name`` (``builtin:``, ``hf:``, ``file:``, ``keras:`` ...), or
        ``None`` with ``spec.model`` set to a user's own network, or ``None`` for the backend's
        default; ``spec.weights`` is ``pretrained``/``imagenet``, ``none`` or a weights file;
        ``spec.input_size`` overrides the network's own input size.
    :return: a :class:`~tlcore.interfaces.Backbone` carrying its preprocessing; when weights
        came from a file, its ``extra["weights_report"]`` is the
        :class:`~tlcore.interfaces.LoadReport`, which the core reports. ``None`` when the
        source is not this plugin's. Raise :class:`~tlcore.errors.TlcoreError` when it is yours
        but cannot be loaded (missing file, unknown name, weights that fit nothing).
    """


@hookspec(firstresult=True)
def tl_attach_head(backend: str, backbone: Backbone, head: HeadSpec, num_classes: int) -> Any:
    """Put a new head on a backbone: ``num_classes`` raw outputs (logits).

    Called once per run, after ``tl_load_backbone`` (with the backbone it returned, or a
    user's). The first non-``None`` answer wins.

    The model takes uint8 RGB NHWC images and applies ``backbone.preprocessing`` itself, then
    the backbone, the pooling of ``head.pooling`` (``avg``, ``max``, or ``flatten`` in the
    backbone's own layout), per width in ``head.hidden`` a dense layer, ``head.activation`` and
    ``head.dropout``, then (after ``head.dropout`` when there are no hidden layers) a linear
    layer of ``num_classes`` outputs, without an activation: the task's loss and final node
    (softmax, sigmoid, a value's scaling) are applied to them by the core.

    ``head.classifier`` ``replace`` and ``keep`` build it on the network without its own last
    linear layer, whose input becomes the features; ``keep`` starts the new linear layer from
    that layer's weights (:mod:`tlcore.classifier` holds the checks and errors to raise). A
    backend that cannot take a layer out refuses them with a ``TlcoreError``; it never builds
    a ``new`` head instead.

    :param backend: the recipe's backend.
    :param backbone: what ``tl_load_backbone`` returned.
    :param head: the recipe's ``head`` section (:class:`~tlcore.recipe.HeadSpec`).
    :param num_classes: the number of outputs: the classes of a classification, the labels
        of a multi-label task, 1 for a regression (at least 1).
    :return: the backend's model object, or ``None`` for another backend (or a network of
        another framework), and for a ``head.pooling`` that is not yours: one a plugin
        registered (``tl_register_choices``) is built by that plugin's ``tl_attach_head``.
    """


@hookspec(firstresult=True)
def tl_freeze(backend: str, model: Any, policy: FreezeSpec) -> FreezeReport | None:
    """Apply a freeze policy to the backbone of ``model`` for the next stage.

    Called at the start of every stage, before ``tl_make_optimizer``; so it must also
    *unfreeze* what the policy leaves trainable. The head always trains. The first
    non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param model: what ``tl_attach_head`` returned.
    :param policy: the stage's ``freeze`` section (:class:`~tlcore.recipe.FreezeSpec`):
        ``all``, ``none``, ``last_n`` blocks or a name ``pattern`` (the helpers of
        :mod:`tlcore.freezing` decide which names train); BatchNorm layers follow
        ``policy.batchnorm``, and their statistics never change while they are frozen.
        The core resolves the recipe's ``auto`` first (``frozen`` for a pretrained backbone,
        ``follow`` for a random one), so a backend sees ``frozen``, ``follow`` or ``train``.
    :return: a :class:`~tlcore.interfaces.FreezeReport` with trainable and frozen parameter
        counts and the trainable blocks (``backbone_trainable == 0`` lets the core train on
        cached features), or ``None`` for another backend or model, and for a policy that is
        not yours: one a plugin registered (``tl_register_choices``) is applied by that
        plugin's ``tl_freeze``.
    """


@hookspec(firstresult=True)
def tl_make_optimizer(backend: str, model: Any, stage: StageSpec) -> Any:
    """Make the optimiser for one stage, over the parameters that train now.

    Called after ``tl_freeze`` at the start of each stage. The first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param model: what ``tl_attach_head`` returned, frozen for this stage.
    :param stage: the stage (:class:`~tlcore.recipe.StageSpec`): ``stage.optimizer`` is one of
        ``adamw``, ``adam``, ``sgd`` (with ``stage.momentum``), ``rmsprop``; ``stage.lr`` and
        ``stage.weight_decay`` apply. The core sets each step's learning rate itself.
    :return: an optimiser object, handed back in ``StepState.optimizer``; ``None`` for another
        backend or model, and for a ``stage.optimizer`` that is not yours: one a plugin
        registered (``tl_register_choices``) is made by that plugin's ``tl_make_optimizer``.
    """


@hookspec(firstresult=True)
def tl_train_step(
    backend: str, model: Any, batch: Batch, state: StepState
) -> dict[str, Any] | None:
    """Run one optimisation step on one batch.

    Called for every training batch, after ``tl_make_optimizer``. The first non-``None``
    answer wins.

    :param backend: the recipe's backend.
    :param model: what ``tl_attach_head`` returned.
    :param batch: a :class:`~tlcore.interfaces.Batch`: ``batch.x`` is uint8 NHWC images, or
        cached pooled features when ``batch.features`` (then only the head runs); ``batch.y``
        holds the targets as ``state.loss`` takes them: int64 class indices or float32 class
        probabilities ``(n, outputs)`` (``cross_entropy``; probabilities come from mixing
        augmentations), float32 multi-hot ``(n, outputs)`` (``binary_cross_entropy``) or
        float32 values ``(n, outputs)`` (``mse``).
    :param state: a :class:`~tlcore.interfaces.StepState`: the optimiser, this step's learning
        rate, the loss to compute by name (``state.loss``: ``cross_entropy`` with
        ``state.label_smoothing`` and ``state.class_weights``, exactly as
        ``torch.nn.functional.cross_entropy(weight=..., label_smoothing=...)`` defines them
        for both kinds of targets; ``binary_cross_entropy`` on the logits, ``mse``), and what
        ``train.accumulate``, ``train.clip_norm`` and ``train.ema`` ask of the step
        (``state.apply``, ``state.clip_norm``, ``state.ema``; their fields say how). A step
        that honours them says so in its result (``applied`` when it may accumulate,
        ``grad_norm`` when it clips; the average as ``ema.*`` optimiser-state entries): the
        core refuses a backend that does not, rather than train something else silently.
    :return: ``{"loss": float, "outputs": ndarray}``: the loss on the batch *before* the
        update, a plain float, and the batch's logits of that forward pass (float32
        ``(n, outputs)``), from which the core computes the training metrics; or ``None`` for
        another backend or model. (A backend that returns ``"accuracy"`` instead of
        ``"outputs"`` still works for classification: the core then reports that accuracy.)
    """


@hookspec(firstresult=True)
def tl_eval_step(backend: str, model: Any, batch: Batch) -> np.ndarray | None:
    """Run the model in inference mode on one batch (dropout off, BatchNorm statistics used).

    Called for validation, evaluation and the export parity check. The first non-``None``
    answer wins.

    :param backend: the recipe's backend.
    :param model: what ``tl_attach_head`` returned.
    :param batch: images, or cached features when ``batch.features``; ``batch.y`` is unused.
    :return: the raw outputs (logits, no activation) as a float32 numpy array ``(batch,
        num_classes)``, or ``None``.
    """


@hookspec(firstresult=True)
def tl_extract_features(backend: str, model: Any, images: np.ndarray) -> np.ndarray | None:
    """Run the preprocessing, the backbone and the pooling in inference mode.

    Called once per sample at the start of a stage whose backbone is frozen, to train the
    head on cached features; the head on these features must give the model's own logits
    within float tolerance. The first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param model: what ``tl_attach_head`` returned.
    :param images: uint8 RGB NHWC, possibly zero of them.
    :return: float32 array ``(batch, features)``, or ``None`` for another backend or model.
    """


@hookspec(firstresult=True)
def tl_export(
    backend: str, model: Any, fmt: str, path: Path, example: np.ndarray, opset: int
) -> Path | None:
    """Write the model in format ``fmt`` into the folder ``path``.

    Called at the end of a run for each of the recipe's ``export.formats``, and by
    ``tl export``. The first non-``None`` answer wins, so a plugin adds a format (TFLite,
    TorchScript, ...) by answering for it.

    ``native``: the framework's own file (a state dict, a ``.keras`` file), which
    ``tl_load_backbone`` accepts back as ``weights``. ``onnx``: a *raw* graph with one uint8
    NHWC image input (dynamic batch) and one output, the raw outputs (logits) as
    ``tl_eval_step`` gives them; the core then adds the task's final node (a softmax, a
    sigmoid, a value's scaling), names and metadata, and checks parity against
    ``tl_eval_step``.

    :param backend: the recipe's backend.
    :param model: what ``tl_attach_head`` returned, trained.
    :param fmt: the format's name, as written in ``export.formats``.
    :param path: the folder to write into (it exists). Write atomically.
    :param example: a few real uint8 NHWC input images, for tracing.
    :param opset: the ONNX opset asked for (``export.opset``); other formats ignore it.
    :return: the path of the main file written, or ``None`` when this plugin cannot write
        ``fmt`` for ``backend``.
    """


# --- State: weights, optimiser state, randomness ----------------------------------------------


@hookspec(firstresult=True)
def tl_get_weights(backend: str, model: Any) -> dict[str, np.ndarray] | None:
    """Return every weight and buffer of ``model`` as numpy arrays, by stable name.

    Called for every checkpoint and for the best epoch's weights, which the core writes as
    ``.npz`` (no pickle). The first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param model: what ``tl_attach_head`` returned.
    :return: copies (not views) of every weight, BatchNorm statistics included, named
        ``backbone<sep>...`` and ``head<sep>...`` (see the module's rules) the same way in
        every process, so ``tl_set_weights`` takes them back; ``None`` for another backend.
    """


@hookspec(firstresult=True)
def tl_set_weights(
    backend: str, model: Any, weights: dict[str, np.ndarray], strict: bool
) -> LoadReport | None:
    """Load numpy weights by name into ``model``.

    Called when a run resumes, restores its best epoch at the end of a stage, or is loaded
    again from its folder (``tl export``, ``tl eval``), always with ``strict=True``; code that
    embeds tlcore may start a model from another task's weights with ``strict=False``. The
    first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param model: what ``tl_attach_head`` returned.
    :param weights: names and arrays as ``tl_get_weights`` returns them.
    :param strict: ``True`` for the run's own checkpoints: every name and shape must match,
        else raise :class:`~tlcore.errors.TlcoreError` naming the first that does not.
        ``False`` to start from another task's weights: what fits is loaded, what does not is
        left as initialised and listed in the report.
    :return: a :class:`~tlcore.interfaces.LoadReport`, or ``None`` for another backend.
    """


@hookspec(firstresult=True)
def tl_get_optimizer_state(backend: str, optimizer: Any) -> dict[str, np.ndarray] | None:
    """Return the optimiser's state (moments, step counts) as numpy arrays, for resuming.

    Called for every checkpoint. The first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param optimizer: what ``tl_make_optimizer`` returned.
    :return: arrays by names of the plugin's choosing, or ``None`` for another backend or
        optimiser.
    """


@hookspec(firstresult=True)
def tl_set_optimizer_state(
    backend: str, optimizer: Any, state: dict[str, np.ndarray]
) -> bool | None:
    """Restore what ``tl_get_optimizer_state`` returned into a new optimiser.

    Called when a run resumes, right after ``tl_make_optimizer``; the next step must then be
    exactly the one the interrupted run would have taken. The first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param optimizer: a fresh optimiser from ``tl_make_optimizer`` over the same parameters.
    :param state: what ``tl_get_optimizer_state`` returned. An entry this optimiser does not
        have, or of another shape, raises :class:`~tlcore.errors.TlcoreError` naming it.
    :return: ``True`` when restored, ``None`` for another backend or optimiser.
    """


@hookspec(firstresult=True)
def tl_setup(backend: str, placement: Placement) -> Setup | None:
    """Resolve the device and precision of a run and join its other processes.

    Called once per run, before ``tl_seed`` and the backbone, in every process of a
    distributed run. The first non-``None`` answer wins. Resolve ``placement.device``
    (``auto``: the first GPU when there is one, else the CPU; in a distributed run, the
    process's own GPU) and ``placement.precision``;
    when the launcher's environment says this process is one of several (torchrun's
    ``RANK``/``WORLD_SIZE``, ``TF_CONFIG``), join the others and return a
    :class:`~tlcore.parallel.Collective` over them. Models built inside
    ``collective.scope()`` train on the device in the precision (autocast, loss scaling);
    ``tl_train_step`` exchanges gradients the framework's way (``DistributedDataParallel``, a
    ``tf.distribute`` strategy) so that each rank applies the gradient of the global batch;
    ``tl_eval_step`` stays float32. Weights and optimiser state cross the boundary as numpy,
    whatever the device, so a checkpoint written on a GPU resumes on a CPU.

    A backend that cannot do what is asked raises :class:`~tlcore.errors.TlcoreError` with
    the reason (``16-mixed`` on a CPU, ``cuda`` without a GPU). A backend with no
    implementation trains on the CPU in float32, in one process; the core says so when more
    were launched.

    :param backend: the recipe's backend.
    :param placement: the recipe's ``train.device`` and ``train.precision``.
    :return: a :class:`~tlcore.parallel.Setup`, or ``None`` if not your backend.
    """


@hookspec
def tl_seed(backend: str, seed: int) -> None:
    """Seed the framework's random generators (initialisation, dropout).

    Called before the backbone is loaded and at the start of every epoch with a seed derived
    from the recipe's seed, the stage and the epoch, so that a resumed run repeats an
    uninterrupted one exactly. Every implementation is called; ignore other backends.

    :param backend: the recipe's backend.
    :param seed: a non-negative 31-bit integer.
    :return: nothing.
    """


@hookspec(firstresult=True)
def tl_network_flags(backend: str, network: Any) -> Callable[[], None] | None:
    """Record the training flags of a network the user passed, to put them back after the run.

    Called by the Python API (:func:`tlcore.fit`) before a run whose backbone is the user's
    own network (``backbone.model``); the function returned is called when the run ends,
    also when it fails. Freezing and training set flags on that network (PyTorch's
    ``requires_grad`` and every submodule's train/eval mode, Keras's ``trainable``); the user
    gets it back as they left it, with the trained weights (the run trains it in place).
    The first non-``None`` answer wins.

    :param backend: the recipe's backend.
    :param network: the user's network, as ``tl_attach_head`` received it.
    :return: a function of no arguments that puts every flag back as it was when this hook
        was called, or ``None`` for another backend or a network that is not yours.
    """


# --- Events, for loggers and observers --------------------------------------------------------


@hookspec
def tl_on_epoch_end(run: RunInfo, stage: str, epoch: int, metrics: dict[str, float]) -> None:
    """Observe the end of an epoch.

    Called after every epoch, before its checkpoint is announced. Every implementation is
    called; an exception stops the run (``KeyboardInterrupt`` interrupts it resumably).

    :param run: the run (:class:`~tlcore.interfaces.RunInfo`): folder, backend, classes,
        recipe.
    :param stage: the stage's name.
    :param epoch: the epoch within the stage, from 1.
    :param metrics: ``loss``, the task's training metrics (``accuracy``; ``f1_micro``, ...;
        ``mae``, ...), ``lr`` and the validation metrics (``val_loss``, ``val_accuracy``,
        ...), as floats.
    :return: nothing.
    """


@hookspec
def tl_on_stage_end(run: RunInfo, stage: str, metrics: dict[str, float]) -> None:
    """Observe the end of a stage.

    Called once per stage, after its last epoch (or early stop). Every implementation is
    called.

    :param run: the run (:class:`~tlcore.interfaces.RunInfo`).
    :param stage: the stage's name.
    :param metrics: the metrics of the epoch the stage kept (its best), or empty.
    :return: nothing.
    """


@hookspec
def tl_on_checkpoint(run: RunInfo, path: Path) -> None:
    """Observe a checkpoint.

    Called after each epoch's checkpoint has been written (atomically). Every implementation
    is called; raising ``KeyboardInterrupt`` here stops the run where ``resume`` picks it up.

    :param run: the run (:class:`~tlcore.interfaces.RunInfo`).
    :param path: the checkpoint written.
    :return: nothing.
    """


@hookspec
def tl_on_export(run: RunInfo, fmt: str, path: Path) -> None:
    """Observe an export.

    Called after the model has been written in format ``fmt`` (and, for ``onnx``, checked).
    Every implementation is called.

    :param run: the run (:class:`~tlcore.interfaces.RunInfo`).
    :param fmt: the format's name.
    :param path: the main file written.
    :return: nothing.
    """
