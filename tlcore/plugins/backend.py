"""A backend as one object: :class:`Backend` implements every backend hook once.

A backend plugin subclasses :class:`Backend`, names itself, provides the plain methods it
supports, and publishes an *instance* under the ``tlcore`` entry-point group::

    # pyproject.toml
    [project.entry-points.tlcore]
    numpy = "tl_numpy:backend"

    # tl_numpy/__init__.py
    import tlcore

    class NumpyBackend(tlcore.Backend):
        name = "numpy"
        packages = ("numpy",)
        implementation = "tl_numpy.methods"  # freeze(model, policy), train_step(...), ...

        def owns_model(self, model):
            return type(model).__name__ == "NumpyModel"

    backend = NumpyBackend()

The base class holds what every backend would otherwise repeat in each of its hooks: "not my
backend (or not my object) → ``None``, import the framework, delegate". Each hook checks once
that the call is for :attr:`Backend.name` and that a network, model or optimiser handed to it
is this backend's own (``owns_*``); then it calls the plain method behind the hook: the
subclass's own, or else the function of that name in the module
:attr:`~Backend.implementation`, imported on first use (importing the plugin imports no
framework). A method provided neither way answers ``None``; when no plugin answers, the
facade (:class:`~tlcore.plugins.calls.BackendCalls`) raises an error naming the hook.

Event hooks (``tl_on_*``) are not a backend's business: observers implement them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tlcore.errors import TlcoreError
from tlcore.hookspecs import hookimpl
from tlcore.interfaces import BackendInfo
from tlcore.plugins.backend_extras import BackendExtras

if TYPE_CHECKING:
    import numpy as np

    from tlcore.interfaces import (
        Backbone,
        BackboneInfo,
        Batch,
        FreezeReport,
        LoadReport,
        Register,
        StepState,
    )
    from tlcore.parallel import Placement, Setup
    from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec


class Backend(BackendExtras):
    """Base class of a backend plugin: the backend hooks, with ownership checked once.

    Class attributes describe the backend; :meth:`info` declares them without importing the
    framework.

    Attributes:
        name: the word users type (``--backend torch``); required.
        packages: the distributions the backend needs, checked without importing them.
        install_hint: how to install them, shown when one is missing.
        default_backbone: the source used when a recipe names none; ``builtin:simple_cnn``,
            the one source every backend provides, unless a subclass says otherwise.
        description: one line for ``tl plugins``.
        implementation: a module of functions named and called like the plain methods
            (``freeze(model, policy)``, ...) the subclass does not define; it may import the
            framework (it is imported by the first call for this backend that needs it).
        formats: the ``export.formats`` the backend writes, each with a method
            ``export_<fmt>`` (:meth:`export_native`); ``tl_export`` answers ``None`` for any
            other, so that another plugin can add a format.
        feature_batch: at most this many images go to one ``extract_features`` call (the
            base splits larger inputs: no backend holds a whole dataset's activations).

    Example:
        >>> class Nothing(Backend):
        ...     name = "nothing"
        >>> backend = Nothing()
        >>> backend.tl_freeze(backend="nothing", model=object(), policy=None) is None
        True
        >>> backend.info().default_backbone
        'builtin:simple_cnn'
    """

    name: ClassVar[str] = ""
    packages: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    default_backbone: ClassVar[str] = "builtin:simple_cnn"
    description: ClassVar[str] = ""
    implementation: ClassVar[str] = ""
    feature_batch: ClassVar[int] = 256

    def __init__(self) -> None:
        # Every hook compares against the name: without one the backend would never answer,
        # and nothing would say why.
        if not self.name:
            raise TypeError(f"{type(self).__name__} must set the class attribute 'name'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # --- what a subclass provides ---------------------------------------------------------
    # info, backbones and owns_* have working defaults. The methods behind the hooks
    # (load_backbone ... seed, export_<fmt>), left as defined here and absent from
    # ``implementation``, make their hook answer None: the base never calls their bodies.

    def info(self) -> BackendInfo | None:
        """What ``tl_register_backends`` declares; by default built from the class attributes.

        Must not import the framework.
        """
        return BackendInfo(
            name=self.name,
            packages=tuple(self.packages),
            install_hint=self.install_hint,
            default_backbone=self.default_backbone,
            description=self.description,
        )

    def backbones(self) -> Iterable[BackboneInfo]:
        """The backbones ``tl backbones`` lists (``tl_register_backbones``); none by default.

        Must not import the framework.
        """
        return ()

    def owns_network(self, network: Any) -> bool:
        """Whether ``network`` (a backbone's) is of this backend's framework.

        Called only for calls naming this backend, so it may import the framework. The default
        trusts the name; override it when a network of another framework could come here.
        """
        return True

    def owns_model(self, model: Any) -> bool:
        """Whether ``model`` is one this backend's :meth:`attach_head` made.

        Called only for calls naming this backend, so it may import the framework. The default
        trusts the name; override it when another plugin serves the same backend name or when
        the model class is known (the built-in backends do).
        """
        return True

    def owns_optimizer(self, optimizer: Any) -> bool:
        """Whether ``optimizer`` is one this backend's :meth:`make_optimizer` made.

        Called only for calls naming this backend; the default trusts the name.
        """
        return True

    def load_backbone(self, spec: BackboneSpec) -> Backbone | None:
        """``tl_load_backbone``: the backbone ``spec`` names, or ``None`` for a source that is
        not this backend's (see :func:`tlcore.sources.parse_source`)."""
        return None

    def attach_head(self, backbone: Backbone, head: HeadSpec, num_classes: int) -> Any:
        """``tl_attach_head``: the backend's model, on a network :meth:`owns_network` accepted
        and for at least one output (the base checks both)."""
        return None

    def freeze(self, model: Any, policy: FreezeSpec) -> FreezeReport | None:
        """``tl_freeze``: apply ``policy`` to a model of this backend."""
        return None

    def make_optimizer(self, model: Any, stage: StageSpec) -> Any:
        """``tl_make_optimizer``: the optimiser of one stage; ``stage.optimizer`` has been
        validated by the recipe."""
        return None

    def train_step(self, model: Any, batch: Batch, state: StepState) -> dict[str, Any] | None:
        """``tl_train_step``: one optimisation step with the loss ``state.loss``; ``{"loss",
        "outputs"}`` (the loss and the logits) before it."""
        return None

    def eval_step(self, model: Any, batch: Batch) -> np.ndarray | None:
        """``tl_eval_step``: float32 logits in inference mode."""
        return None

    def extract_features(self, model: Any, images: np.ndarray) -> np.ndarray | None:
        """``tl_extract_features``: pooled float32 features of at most :attr:`feature_batch`
        images (possibly none) in inference mode."""
        return None

    def export_native(
        self, model: Any, path: Path, example: np.ndarray, opset: int
    ) -> Path | None:
        """``tl_export`` of format ``native``: the framework's own file in the folder ``path``,
        which :meth:`load_backbone` accepts back as weights; the path of the file written.

        Every format ``<fmt>`` of :attr:`formats` is a method ``export_<fmt>`` taking these
        arguments (``example`` images for tracing, the ONNX ``opset``; a format may ignore
        them) and writing atomically (:func:`tlcore.files.atomic_path`).
        """
        return None

    def export_onnx(self, model: Any, path: Path, example: np.ndarray, opset: int) -> Path | None:
        """``tl_export`` of format ``onnx``: the raw graph, one uint8 NHWC image input with a
        dynamic batch and the logits out, as ``path/model.onnx``; the core finishes it."""
        return None

    def get_weights(self, model: Any) -> dict[str, np.ndarray] | None:
        """``tl_get_weights``: every weight and buffer as numpy copies, by stable name."""
        return None

    def set_weights(
        self, model: Any, weights: dict[str, np.ndarray], strict: bool
    ) -> LoadReport | None:
        """``tl_set_weights``: load weights by name (see :func:`tlcore.weights.match_weights`)."""
        return None

    def get_optimizer_state(self, optimizer: Any) -> dict[str, np.ndarray] | None:
        """``tl_get_optimizer_state``: the optimiser's state as numpy arrays."""
        return None

    def set_optimizer_state(self, optimizer: Any, state: dict[str, np.ndarray]) -> None:
        """``tl_set_optimizer_state``: restore ``state``, or raise
        :class:`~tlcore.errors.TlcoreError`; the base answers ``True`` once it returns."""

    def seed(self, seed: int) -> None:
        """``tl_seed``: seed the framework's random generators."""

    def setup(self, placement: Placement) -> Setup | None:
        """``tl_setup``: device, precision and processes (:mod:`tlcore.parallel`)."""

    # --- the hooks ------------------------------------------------------------------------

    @hookimpl
    def tl_register_backends(self, register: Register) -> None:
        """Declare this backend (:meth:`info`)."""
        info = self.info()
        if info is not None:
            register(info)

    @hookimpl
    def tl_register_backbones(self, backend: str, register: Register) -> None:
        """List :meth:`backbones` when asked about this backend."""
        if backend == self.name:
            for info in self.backbones():
                register(info)

    @hookimpl
    def tl_load_backbone(self, backend: str, spec: BackboneSpec) -> Backbone | None:
        """:meth:`load_backbone` for this backend."""
        load = self._method(backend, "load_backbone")
        return None if load is None else load(spec)

    @hookimpl
    def tl_attach_head(
        self, backend: str, backbone: Backbone, head: HeadSpec, num_classes: int
    ) -> Any:
        """:meth:`attach_head` for this backend and a network it owns."""
        if backend != self.name or not self.owns_network(backbone.network):
            return None
        attach = self._method(backend, "attach_head")
        if attach is None:
            return None
        if num_classes < 1:
            raise TlcoreError(
                f"a head needs at least one output, got {num_classes}",
                "give data with two or more classes (or one target, for a regression)",
            )
        return attach(backbone, head, num_classes)

    @hookimpl
    def tl_freeze(self, backend: str, model: Any, policy: FreezeSpec) -> FreezeReport | None:
        """:meth:`freeze` for a model of this backend."""
        freeze = self._model_method(backend, model, "freeze")
        return None if freeze is None else freeze(model, policy)

    @hookimpl
    def tl_make_optimizer(self, backend: str, model: Any, stage: StageSpec) -> Any:
        """:meth:`make_optimizer` for a model of this backend."""
        make = self._model_method(backend, model, "make_optimizer")
        return None if make is None else make(model, stage)

    @hookimpl
    def tl_train_step(
        self, backend: str, model: Any, batch: Batch, state: StepState
    ) -> dict[str, Any] | None:
        """:meth:`train_step` for a model of this backend."""
        step = self._model_method(backend, model, "train_step")
        return None if step is None else step(model, batch, state)

    @hookimpl
    def tl_eval_step(self, backend: str, model: Any, batch: Batch) -> np.ndarray | None:
        """:meth:`eval_step` for a model of this backend."""
        step = self._model_method(backend, model, "eval_step")
        return None if step is None else step(model, batch)

    @hookimpl
    def tl_extract_features(
        self, backend: str, model: Any, images: np.ndarray
    ) -> np.ndarray | None:
        """:meth:`extract_features` for a model of this backend, :attr:`feature_batch` images
        at a time."""
        extract = self._model_method(backend, model, "extract_features")
        size = self.feature_batch
        if extract is None:
            return None
        if len(images) <= size:  # also zero images: the backend knows its feature width
            return extract(model, images)
        import numpy as np

        chunks = [extract(model, images[i : i + size]) for i in range(0, len(images), size)]
        return None if any(c is None for c in chunks) else np.concatenate(chunks)

    @hookimpl
    def tl_export(
        self, backend: str, model: Any, fmt: str, path: Path, example: np.ndarray, opset: int
    ) -> Path | None:
        """``export_<fmt>`` for a model of this backend and one of its :attr:`formats`."""
        if fmt not in self.formats:
            return None
        export = self._model_method(backend, model, f"export_{fmt}")
        return None if export is None else export(model, Path(path), example, opset)

    @hookimpl
    def tl_get_weights(self, backend: str, model: Any) -> dict[str, np.ndarray] | None:
        """:meth:`get_weights` for a model of this backend."""
        get = self._model_method(backend, model, "get_weights")
        return None if get is None else get(model)

    @hookimpl
    def tl_set_weights(
        self, backend: str, model: Any, weights: dict[str, np.ndarray], strict: bool
    ) -> LoadReport | None:
        """:meth:`set_weights` for a model of this backend."""
        load = self._model_method(backend, model, "set_weights")
        return None if load is None else load(model, weights, strict)

    @hookimpl
    def tl_get_optimizer_state(
        self, backend: str, optimizer: Any
    ) -> dict[str, np.ndarray] | None:
        """:meth:`get_optimizer_state` for an optimiser of this backend."""
        get = self._optimizer_method(backend, optimizer, "get_optimizer_state")
        return None if get is None else get(optimizer)

    @hookimpl
    def tl_set_optimizer_state(
        self, backend: str, optimizer: Any, state: dict[str, np.ndarray]
    ) -> bool | None:
        """:meth:`set_optimizer_state` for an optimiser of this backend; ``True`` once done."""
        restore = self._optimizer_method(backend, optimizer, "set_optimizer_state")
        if restore is None:
            return None
        restore(optimizer, state)
        return True

    @hookimpl
    def tl_setup(self, backend: str, placement: Placement) -> Setup | None:
        """:meth:`setup` for this backend."""
        setup = self._method(backend, "setup")
        return None if setup is None else setup(placement)

    @hookimpl
    def tl_seed(self, backend: str, seed: int) -> None:
        """:meth:`seed` for this backend."""
        seed_all = self._method(backend, "seed")
        if seed_all is not None:
            seed_all(seed)

    # --- finding the plain method -----------------------------------------------------------

    def _method(self, backend: str, name: str) -> Callable[..., Any] | None:
        """The plain method ``name`` when the call is for this backend: the subclass's own,
        else the function of that name in :attr:`implementation`, else ``None``."""
        if backend != self.name:
            return None
        # ``export_<fmt>`` of a format the base does not know is the subclass's by definition.
        if getattr(type(self), name, None) not in (None, getattr(Backend, name, None)):
            return getattr(self, name)
        if self.implementation:
            # The first call that needs the framework side pays its import, once.
            return getattr(importlib.import_module(self.implementation), name, None)
        return None

    def _model_method(self, backend: str, model: Any, name: str) -> Callable[..., Any] | None:
        """:meth:`_method`, when ``model`` is this backend's own too."""
        if backend != self.name or not self.owns_model(model):
            return None
        return self._method(backend, name)

    def _optimizer_method(
        self, backend: str, optimizer: Any, name: str
    ) -> Callable[..., Any] | None:
        """:meth:`_method`, when ``optimizer`` is this backend's own too."""
        if backend != self.name or not self.owns_optimizer(optimizer):
            return None
        return self._method(backend, name)
