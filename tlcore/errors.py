"""The one error type every user mistake ends in: a message and a hint."""

from __future__ import annotations


class TlcoreError(Exception):
    """A problem the user can fix: ``message`` says what is wrong, ``hint`` what to do.

    The CLI prints ``error: <message>`` and ``hint: <hint>`` and exits with code 2; the
    Python API raises it as is.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    @classmethod
    def caused_by(cls, what: str, exc: BaseException, hint: str) -> TlcoreError:
        """The error for a framework exception that means the user's input cannot be used:
        ``what`` went wrong, then the exception's type and (the start of) its message, which
        frameworks raise in many types (raise it ``from None``: the traceback is theirs).

        Example:
            >>> str(TlcoreError.caused_by("cannot read w.pt", ValueError("bad magic"), "re-save"))
            'cannot read w.pt: ValueError: bad magic (hint: re-save)'
        """
        return cls(f"{what}: {type(exc).__name__}: {str(exc).strip()[:300]}", hint)


class RecipeError(TlcoreError):
    """A recipe value is invalid: names the field's path, the value given and what is valid."""

    def __init__(self, path: str, value: object, valid: str) -> None:
        super().__init__(f"recipe field '{path}' has invalid value {value!r}", f"valid: {valid}")
        self.path = path
        self.value = value


class DataError(TlcoreError):
    """The data cannot be used: a missing folder, a corrupt image, too few classes."""


class PluginError(TlcoreError):
    """A plugin is missing, broken, or answered a hook with something unusable."""
