"""A backend under test: every hook called through the core's facade, its answer checked.

``BackendUnderTest("torch").build()`` is ``tl_load_backbone`` then ``tl_attach_head`` through
:class:`~tlcore.plugins.calls.BackendCalls` and the real plugin manager. A ``firstresult``
hook that no plugin answers is an :class:`AssertionError` naming the hook, the most common
mistake in a new backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore import plugins
from tlcore.errors import TlcoreError
from tlcore.freezing import resolve_batchnorm
from tlcore.interfaces import Batch, StepState
from tlcore.plugins import calls as calls_module
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec

if TYPE_CHECKING:
    import numpy as np

    from tlcore.interfaces import Backbone, BackboneInfo, BackendInfo, FreezeReport, LoadReport
    from tlcore.parallel import Setup

_BACKBONE = re.compile(r"^backbone\W")
_HEAD = re.compile(r"^head\W")


class BackendUnderTest:
    """The hooks of one backend, as methods; arguments default to what most tests want.

    Every hook is called through the core's own facade
    (:class:`~tlcore.plugins.calls.BackendCalls`), so a backend is tested the way the trainer
    calls it.

    Attributes:
        name: the backend's name, as users pass ``--backend``.
        calls: the facade the hooks are called through.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = BackendCalls(name)

    def __repr__(self) -> str:
        return f"BackendUnderTest({self.name!r})"

    def info(self) -> BackendInfo:
        """What the plugin declared through ``tl_register_backends``."""
        return plugins.backends()[self.name]

    def backbones(self) -> dict[str, BackboneInfo]:
        """``tl_register_backbones``: what the backend lists, by source."""
        return {info.source: info for info in plugins.backbones(self.name)}

    def load(self, **spec: Any) -> Backbone:
        """``tl_load_backbone`` with ``BackboneSpec(**spec)``."""
        with _answered("tl_load_backbone", self.name):
            return self.calls.load_backbone(BackboneSpec(**spec))

    def attach(self, backbone: Backbone, num_classes: int = 3, head: HeadSpec | None = None) -> Any:
        """``tl_attach_head`` (the default head: average pooling and a linear classifier)."""
        with _answered("tl_attach_head", self.name):
            return self.calls.attach_head(backbone, head or HeadSpec(), num_classes)

    def build(self, num_classes: int = 3, head: HeadSpec | None = None, **spec: Any) -> Any:
        """Load a backbone (``builtin:simple_cnn`` unless ``source`` is given), attach a head."""
        spec.setdefault("source", "builtin:simple_cnn")
        return self.attach(self.load(**spec), num_classes, head)

    def freeze(self, model: Any, **policy: Any) -> FreezeReport:
        """``tl_freeze`` with ``FreezeSpec(**policy)``; ``batchnorm`` left as ``auto`` is
        resolved as for a pretrained backbone (``frozen``), as the core resolves it before
        every ``tl_freeze`` call: backends never see ``auto``."""
        spec = resolve_batchnorm(FreezeSpec(**policy), pretrained=True)
        with _answered("tl_freeze", self.name):
            return self.calls.freeze(model, spec)

    def optimizer(self, model: Any, **stage: Any) -> Any:
        """``tl_make_optimizer`` with ``StageSpec(**stage)``."""
        with _answered("tl_make_optimizer", self.name):
            return self.calls.make_optimizer(model, StageSpec(**stage))

    def step(
        self,
        model: Any,
        optimizer: Any,
        x: np.ndarray,
        y: np.ndarray,
        lr: float = 1e-2,
        features: bool = False,
        smoothing: float = 0.0,
        loss: str = "cross_entropy",
        share: float = 1.0,
    ) -> dict[str, Any]:
        """``tl_train_step`` on one batch of images (or of cached features), with the loss
        ``loss`` (``cross_entropy``, ``binary_cross_entropy``, ``mse``); ``share``: the
        batch's share of the global batch in a distributed run."""
        batch = Batch(x, y, features=features)
        state = StepState(optimizer, lr=lr, label_smoothing=smoothing, loss=loss, share=share)
        with _answered("tl_train_step", self.name):
            return self.calls.train_step(model, batch, state)

    def logits(self, model: Any, x: np.ndarray, features: bool = False) -> np.ndarray:
        """``tl_eval_step``: the logits on images (or cached features)."""
        import numpy as np

        batch = Batch(x, np.zeros(len(x), np.int64), features=features)
        with _answered("tl_eval_step", self.name):
            return self.calls.eval_step(model, batch)

    def features(self, model: Any, x: np.ndarray) -> np.ndarray:
        """``tl_extract_features``: pooled backbone features."""
        with _answered("tl_extract_features", self.name):
            return self.calls.extract_features(model, x)

    def weights(self, model: Any) -> dict[str, np.ndarray]:
        """``tl_get_weights``: every weight and buffer, by name."""
        with _answered("tl_get_weights", self.name):
            return self.calls.get_weights(model)

    def set_weights(
        self, model: Any, weights: dict[str, np.ndarray], strict: bool = True
    ) -> LoadReport:
        """``tl_set_weights``."""
        with _answered("tl_set_weights", self.name):
            return self.calls.set_weights(model, weights, strict)

    def optimizer_state(self, optimizer: Any) -> dict[str, np.ndarray]:
        """``tl_get_optimizer_state``."""
        with _answered("tl_get_optimizer_state", self.name):
            return self.calls.get_optimizer_state(optimizer)

    def set_optimizer_state(self, optimizer: Any, state: dict[str, np.ndarray]) -> bool:
        """``tl_set_optimizer_state``; ``True`` once restored (the facade requires it)."""
        with _answered("tl_set_optimizer_state", self.name):
            self.calls.set_optimizer_state(optimizer, state)
        return True

    def trains(self, model: Any, x: np.ndarray, y: np.ndarray) -> set[str]:
        """The names one AdamW step (weight decay 0.1) changes: what the model trains now.

        Weight decay moves every trained weight, whatever its gradient. BatchNorm statistics
        change only where BatchNorm runs in training mode.
        """
        before = self.weights(model)
        optimizer = self.optimizer(model, optimizer="adamw", lr=1e-2, weight_decay=0.1)
        self.step(model, optimizer, x, y)
        return changed(before, self.weights(model))

    def setup(self, device: str = "cpu", precision: str = "32") -> Setup:
        """``tl_setup`` (a backend without it gets the core's single CPU process)."""
        from tlcore.parallel import Placement

        return self.calls.setup(Placement(device, precision))

    def seed(self, seed: int) -> None:
        """``tl_seed`` (every implementation is called)."""
        self.calls.seed(seed)

    def export(
        self, model: Any, fmt: str, path: Path, example: np.ndarray | None = None, opset: int = 17
    ) -> Path:
        """``tl_export`` into the folder ``path`` (two random images as the example)."""
        from tlcore.testing.data import images

        example = images(2) if example is None else example
        with _answered("tl_export", self.name):
            return self.calls.export(model, fmt, Path(path), example, opset)


@contextmanager
def _answered(hook_name: str, backend: str) -> Iterator[None]:
    """Turn the facade's "no answer" into an :class:`AssertionError` naming the hook.

    Only errors the facade raises itself are turned: a :class:`~tlcore.errors.TlcoreError` a
    plugin raises (an unknown name, a missing file) is what the suite's tests expect, and
    passes through as it is.
    """
    try:
        yield
    except TlcoreError as exc:
        if not _raised_by_facade(exc):
            raise
        raise AssertionError(
            f"no plugin answered {hook_name} for backend {backend!r}: {exc.message}; "
            "see 'tl plugins' and tlcore.hookspecs"
        ) from exc


def _raised_by_facade(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in :mod:`tlcore.plugins.calls` itself, not in a hook."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__") == calls_module.__name__


# --- weight names ---------------------------------------------------------------------------


def is_backbone(name: str) -> bool:
    """Whether a ``tl_get_weights`` name is the backbone's (``backbone`` + a separator)."""
    return bool(_BACKBONE.match(name))


def is_head(name: str) -> bool:
    """Whether a ``tl_get_weights`` name is the head's (``head`` + a separator)."""
    return bool(_HEAD.match(name))


def backbone_part(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The backbone's weights and buffers."""
    return {k: v for k, v in weights.items() if is_backbone(k)}


def head_part(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The head's weights."""
    return {k: v for k, v in weights.items() if is_head(k)}


def within_backbone(name: str) -> str:
    """A backbone weight's name inside the backbone, as a freeze ``pattern`` sees it."""
    return _BACKBONE.sub("", name)


def changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> set[str]:
    """The names whose values differ between two ``tl_get_weights`` results."""
    import numpy as np

    return {name for name in before if not np.array_equal(before[name], after[name])}
