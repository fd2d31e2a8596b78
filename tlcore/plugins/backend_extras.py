"""What :class:`~tlcore.plugins.backend.Backend` does around a run rather than in its steps:
the export formats it declares, registered so that recipes accept them, and the training flags
of a user's own network, recorded so that the Python API can put them back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from tlcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from tlcore.interfaces import Register


class BackendExtras:
    """The base of :class:`~tlcore.plugins.backend.Backend` that holds these two hooks.

    Attributes:
        formats: the ``export.formats`` the backend writes (see ``Backend``). Those that are
            not built in (``native``, ``onnx``) are registered as ``format`` choices
            (``tl_register_choices``): the recipe accepts them in ``export.formats`` before
            training starts, and ``tl plugins`` lists them.
    """

    name: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ("native", "onnx")

    def network_flags(self, network: Any) -> Callable[[], None] | None:
        """``tl_network_flags``: record the training flags of the user's own ``network``
        (what freezing and training change on it: ``requires_grad``, train/eval mode,
        ``trainable``) and return a function of no arguments that puts them back. Left
        undefined (here and in ``implementation``), the flags are not restored."""
        return None

    @hookimpl
    def tl_register_choices(self, register: Register) -> None:
        """Register each of :attr:`formats` that is not built in as a ``format`` choice."""
        from tlcore.interfaces import Choice
        from tlcore.recipe.choices import builtin

        for fmt in self.formats:
            if fmt not in builtin("format"):
                register(Choice("format", fmt, f"written by the {self.name} backend"))

    @hookimpl
    def tl_network_flags(self, backend: str, network: Any) -> Callable[[], None] | None:
        """:meth:`network_flags` for this backend and a network it owns."""
        record = self._method(backend, "network_flags")  # type: ignore[attr-defined]
        if record is None or not self.owns_network(network):  # type: ignore[attr-defined]
            return None
        return record(network)
