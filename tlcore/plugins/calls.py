"""The core's one door to a backend: the hooks as typed methods.

The trainer, the bundle writer, evaluation, export and the conformance suite all call a backend
through :class:`BackendCalls`. Each method calls its hook with the backend's name filled in; a
hook whose answer is required and comes back ``None`` (no plugin answered for this backend or
this object) is a :class:`~tlcore.errors.PluginError` naming the hook and the backend, never a
silent fallback. A framework running out of memory in any hook is a
:class:`~tlcore.errors.TlcoreError` naming the batch and input size to lower.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.errors import PluginError, TlcoreError, reason
from tlcore.plugins.manager import hook

if TYPE_CHECKING:
    import numpy as np

    from tlcore.interfaces import Backbone, Batch, FreezeReport, LoadReport, RunInfo, StepState
    from tlcore.parallel import Placement, Setup
    from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec


class BackendCalls:
    """The hooks of one backend, as methods.

    Args:
        backend: the backend's name (``torch``, ``keras``, a plugin's own).

    Example:
        >>> calls = BackendCalls("torch")
        >>> calls.backend
        'torch'
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def __repr__(self) -> str:
        return f"BackendCalls({self.backend!r})"

    # --- the transfer-learning steps ---

    def setup(self, placement: Placement) -> Setup:
        """``tl_setup``: where the run trains and with which processes. A backend that does
        not answer trains on one CPU process in float32; asking it for anything else is an
        error naming what it cannot do."""
        from tlcore.parallel import Setup

        with _memory_guard("tl_setup", self.backend):
            setup = hook().tl_setup(backend=self.backend, placement=placement)
        if setup is not None:
            return setup
        asked = {"device": placement.device, "precision": placement.precision}
        wrong = {k: v for k, v in asked.items() if v not in ("auto", "cpu", "32")}
        if wrong:
            field, value = next(iter(wrong.items()))
            raise PluginError(
                f"backend {self.backend!r} does not implement tl_setup, so it cannot train "
                f"with {field} {value!r}",
                f"use train.{field}: {'cpu' if field == 'device' else '32'} with this backend",
            )
        return Setup()

    def seed(self, seed: int) -> None:
        """``tl_seed``: seed the framework's generators."""
        hook().tl_seed(backend=self.backend, seed=seed)

    def network_flags(self, network: Any) -> Callable[[], None]:
        """``tl_network_flags``: a function that puts the training flags of the user's own
        ``network`` back as they are now. A backend that does not record them answers
        nothing, and the function then does nothing: the flags are the backend's to know."""
        restore = hook().tl_network_flags(backend=self.backend, network=network)
        return restore if restore is not None else _nothing


    def load_backbone(self, spec: BackboneSpec) -> Backbone:
        """``tl_load_backbone``; no answer means no plugin knows the source."""
        with _memory_guard("tl_load_backbone", self.backend):
            backbone = hook().tl_load_backbone(backend=self.backend, spec=spec)
        if backbone is None:
            what = spec.source or type(spec.model).__name__
            raise TlcoreError(
                f"no plugin can load backbone {what!r} for backend {self.backend!r}",
                f"run 'tl backbones --backend {self.backend}' to see what is available",
            )
        return backbone

    def attach_head(self, backbone: Backbone, head: HeadSpec, num_classes: int) -> Any:
        """``tl_attach_head``: the backend's model."""
        return self._required(
            "tl_attach_head",
            backbone=backbone,
            head=head,
            num_classes=num_classes,
            choice=("pooling", head.pooling),
        )

    def freeze(self, model: Any, policy: FreezeSpec) -> FreezeReport:
        """``tl_freeze``: apply a stage's freeze policy."""
        return self._required(
            "tl_freeze", model=model, policy=policy, choice=("freeze", policy.policy)
        )

    def make_optimizer(self, model: Any, stage: StageSpec) -> Any:
        """``tl_make_optimizer``: the optimiser of one stage."""
        return self._required(
            "tl_make_optimizer", model=model, stage=stage, choice=("optimizer", stage.optimizer)
        )

    def train_step(self, model: Any, batch: Batch, state: StepState) -> dict[str, Any]:
        """``tl_train_step``: one optimisation step; ``{"loss", "outputs"}`` before it."""
        return self._required("tl_train_step", model=model, batch=batch, state=state)

    def eval_step(self, model: Any, batch: Batch) -> np.ndarray:
        """``tl_eval_step``: float32 outputs in inference mode."""
        import numpy as np

        return np.asarray(self._required("tl_eval_step", model=model, batch=batch))

    def extract_features(self, model: Any, images: np.ndarray) -> np.ndarray:
        """``tl_extract_features``: pooled backbone features of ``images``."""
        import numpy as np

        return np.asarray(self._required("tl_extract_features", model=model, images=images))

    def export(
        self, model: Any, fmt: str, path: Path, example: np.ndarray, opset: int
    ) -> Path:
        """``tl_export``: write ``fmt`` into the folder ``path``; no answer means no plugin
        writes that format for this backend."""
        with _memory_guard("tl_export", self.backend):
            written = hook().tl_export(
                backend=self.backend, model=model, fmt=fmt, path=Path(path), example=example,
                opset=opset,
            )
        if written is None:
            raise TlcoreError(
                f"no plugin can export format {fmt!r} for backend {self.backend!r}",
                "remove it from export.formats, or see 'tl plugins' for what is installed",
            )
        return Path(written)

    # --- state ---

    def get_weights(self, model: Any) -> dict[str, np.ndarray]:
        """``tl_get_weights``: every weight and buffer, as numpy copies by name."""
        import numpy as np

        weights = self._required("tl_get_weights", model=model)
        return {name: np.array(value, copy=True) for name, value in weights.items()}

    def set_weights(
        self, model: Any, weights: dict[str, np.ndarray], strict: bool = True
    ) -> LoadReport:
        """``tl_set_weights``: load weights by name."""
        return self._required("tl_set_weights", model=model, weights=weights, strict=strict)

    def get_optimizer_state(self, optimizer: Any) -> dict[str, np.ndarray]:
        """``tl_get_optimizer_state``: the optimiser's state as arrays."""
        return self._required("tl_get_optimizer_state", optimizer=optimizer)

    def set_optimizer_state(self, optimizer: Any, state: dict[str, np.ndarray]) -> None:
        """``tl_set_optimizer_state``: restore a checkpoint's optimiser state; a resume that
        cannot restore it must not continue with a fresh optimiser."""
        restored = self._required("tl_set_optimizer_state", optimizer=optimizer, state=state)
        if restored is not True:
            raise PluginError(
                f"backend {self.backend!r} did not restore the optimiser state "
                f"(tl_set_optimizer_state answered {restored!r})",
                "the backend plugin must answer True once the state is restored",
            )

    # --- events ---

    def on_epoch_end(
        self, run: RunInfo, stage: str, epoch: int, metrics: dict[str, float]
    ) -> None:
        """``tl_on_epoch_end`` for every observer."""
        hook().tl_on_epoch_end(run=run, stage=stage, epoch=epoch, metrics=metrics)

    def on_stage_end(self, run: RunInfo, stage: str, metrics: dict[str, float]) -> None:
        """``tl_on_stage_end`` for every observer."""
        hook().tl_on_stage_end(run=run, stage=stage, metrics=metrics)

    def on_checkpoint(self, run: RunInfo, path: Path) -> None:
        """``tl_on_checkpoint`` for every observer."""
        hook().tl_on_checkpoint(run=run, path=path)

    def on_export(self, run: RunInfo, fmt: str, path: Path) -> None:
        """``tl_on_export`` for every observer."""
        hook().tl_on_export(run=run, fmt=fmt, path=path)

    def _required(self, name: str, choice: tuple[str, str] | None = None, **kwargs: Any) -> Any:
        """Call hook ``name``; ``choice`` is the ``(kind, value)`` of the recipe choice the
        answer depends on, named in the error when a plugin's value finds no implementation."""
        inputs = kwargs.get("images", kwargs.get("batch"))
        with _memory_guard(name, self.backend, inputs):
            result = getattr(hook(), name)(backend=self.backend, **kwargs)
        if result is None and choice is not None:
            _unimplemented_choice(name, self.backend, *choice)
        if result is None:
            raise PluginError(
                f"backend {self.backend!r} gave no answer to {name} "
                f"(arguments: {', '.join(kwargs)})",
                "the backend plugin is incomplete or was handed another backend's object; "
                "see 'tl plugins' and tlcore.hookspecs",
            )
        return result


def _nothing() -> None:
    """What :meth:`BackendCalls.network_flags` returns when no plugin records the flags."""


def _unimplemented_choice(hook_name: str, backend: str, kind: str, value: str) -> None:
    """Raise when ``value``, a ``kind`` a plugin registered, found no hook to implement it."""
    from tlcore.recipe.choices import builtin

    if value in builtin(kind):
        return  # a built-in value: the general error applies
    raise PluginError(
        f"no plugin implements the {kind} {value!r} for backend {backend!r}: "
        f"{hook_name} gave no answer",
        f"the plugin that registers {value!r} must answer {hook_name} for backend {backend!r}; "
        "see 'tl plugins'",
    )


_OOM_TYPES = frozenset({"OutOfMemoryError", "ResourceExhaustedError"})  # torch (GPU), TensorFlow
_OOM_TEXT = re.compile(
    r"out of memory|can't allocate memory|not enough memory|OOM when allocating|RESOURCE_EXHAUSTED",
    re.IGNORECASE,
)

_ENFORCE = re.compile(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?")  # torch's C++ location


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says memory ran out: a ``MemoryError`` (numpy), torch's
    ``OutOfMemoryError`` or allocator ``RuntimeError`` (CPU: "DefaultCPUAllocator: can't
    allocate memory"), TensorFlow's ``ResourceExhaustedError``. Matched by type name and
    message, so no framework is imported to ask."""
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ in _OOM_TYPES for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_TEXT.search(str(exc)))


def out_of_memory_error(exc: BaseException, where: str, inputs: Any = None) -> TlcoreError:
    """The error for running out of memory in ``where``, naming the size of the batch
    ``inputs`` (a :class:`~tlcore.interfaces.Batch` or an array) and what to make smaller."""
    x = getattr(inputs, "x", inputs)
    shape = tuple(getattr(x, "shape", ()))
    size = "backbone.input_size (--input-size)"
    why = f"{type(exc).__name__}: {_ENFORCE.sub('', reason(exc, 300))[:200]}"
    if not shape:
        return TlcoreError(
            f"out of memory in {where}: {why}",
            f"close other programs, or choose a smaller backbone or {size}",
        )
    if getattr(inputs, "features", False):
        what = "cached feature vectors"
    elif len(shape) == 4 and shape[-1] == 3:
        what = f"images of {shape[1]}x{shape[2]} pixels"
        size = f"backbone.input_size (--input-size, now {shape[1]}x{shape[2]})"
    else:
        what = f"inputs of shape {shape[1:]}"
    return TlcoreError(
        f"out of memory in {where} on a batch of {shape[0]} {what}: {why}",
        f"lower the batch size (train.batch_size, --batch-size; this batch held {shape[0]}) "
        f"or {size}, "
        "or choose a smaller backbone: memory grows with all three",
    )


@contextmanager
def _memory_guard(hook_name: str, backend: str, inputs: Any = None) -> Iterator[None]:
    """Turn a framework's out-of-memory exception in a hook into one :class:`TlcoreError`;
    every other exception (a :class:`TlcoreError` too) passes unchanged."""
    try:
        yield
    except TlcoreError:
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise out_of_memory_error(exc, f"{hook_name} (backend {backend!r})", inputs) from None
