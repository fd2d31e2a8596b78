"""The one error type every user mistake ends in: a message and a hint."""

from __future__ import annotations

import errno
import re


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
        Advice to load the file unsafely, which PyTorch, NumPy and Keras give, is left out.

        Example:
            >>> str(TlcoreError.caused_by("cannot read w.pt", ValueError("bad magic"), "re-save"))
            'cannot read w.pt: ValueError: bad magic (hint: re-save)'
        """
        return cls(f"{what}: {type(exc).__name__}: {reason(exc)}", hint)


_UNSAFE_ADVICE = re.compile(
    r"weights_only|allow_pickle|safe_mode|unsafe|trust_remote_code|trusted source|"
    r"arbitrary code|pickle\.load",
    re.IGNORECASE,
)


def reason(exc: BaseException, limit: int = 300) -> str:
    """The start of ``exc``'s message, on one line, without the sentences that advise
    loading a file unsafely (``weights_only=False``, ``allow_pickle=True``, ``safe_mode=False``,
    ``trust_remote_code=True``): tlcore never does, so relaying them only misleads.

    Example:
        >>> reason(ValueError("Bad file. Re-run with allow_pickle=True if you trust it."))
        'Bad file.'
    """
    sentences = re.split(r"(?<=[.!?:])\s+|\n+", str(exc).strip())
    kept = " ".join(s.strip() for s in sentences if s.strip() and not _UNSAFE_ADVICE.search(s))
    return kept[:limit] or type(exc).__name__


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


class DiskFullError(TlcoreError):
    """No space was left on the device (or the disk quota is used up) while writing ``path``;
    the CLI adds how to continue the run it interrupted."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"no space left on the device to write {path}",
            "free space on that disk (or choose a folder on another one) and run the command "
            "again; an interrupted 'tl train' continues from its last checkpoint with "
            "'tl train --resume RUN'",
        )
        self.path = path

    @staticmethod
    def matches(exc: BaseException) -> bool:
        """True for the ``OSError`` of a full disk (``ENOSPC``) or quota (``EDQUOT``)."""
        return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
