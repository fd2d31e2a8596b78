"""The ``tl`` command group: one line and a hint for every error, the console entry point.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from tlcore import __version__
from tlcore.errors import DiskFullError, TlcoreError
from tlcore.progress import printable

QUANTIZE_HELP = (
    "Also write model.int8.onnx: 'static' (int8 weights and activations, calibrated on "
    "training images; the one that speeds up CNN backbones on CPU) or 'dynamic' (int8 weights "
    "only; smaller, rarely faster for CNNs). It becomes the default model only if it loses at "
    "most --max-drop of validation accuracy."
)


MAX_DROP_HELP = "Largest accuracy loss of the int8 model, as a fraction (0.01 = one point)."


class _Group(click.Group):
    """A group that turns every error into one line and a hint (``--debug``: the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except TlcoreError as exc:
            _fail(ctx, f"error: {exc.message}", _hint(ctx, exc), code=2)
        except BrokenPipeError:  # the reader went away (tl predict ... | head): not an error
            _quiet_stdout()
            ctx.exit(0)
        except Terminated:
            _fail(ctx, "terminated (SIGTERM)", _resume_hint(ctx), code=143)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", _resume_hint(ctx), code=130)
        except Exception as exc:  # a bug or a framework error: one line, not a traceback
            known = _known(exc)
            if known is not None:
                _fail(ctx, f"error: {known.message}", _hint(ctx, known), code=2)
            else:
                _fail(
                    ctx,
                    f"error: {type(exc).__name__}: {exc}",
                    "run again with 'tl --debug ...' for the traceback, and report it if it is "
                    "a bug",
                    code=1,
                )


def _fail(ctx: click.Context, message: str, hint: str, code: int) -> None:
    if ctx.obj and ctx.obj.get("debug"):
        traceback.print_exc()
    click.echo(printable(message), err=True)  # messages quote file and class names
    if hint:
        click.echo(f"hint: {printable(hint)}", err=True)
    ctx.exit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _known(exc: Exception) -> TlcoreError | None:
    """The tlcore error for what a user can cause but no layer below turned into one: a full
    disk outside :func:`tlcore.files.atomic_path`, memory running out outside a hook."""
    if DiskFullError.matches(exc):
        path = getattr(exc, "filename", None)
        return DiskFullError(path if path else "the output")
    from tlcore.plugins.calls import is_out_of_memory, out_of_memory_error

    if is_out_of_memory(exc):
        return out_of_memory_error(exc, "tlcore")
    return None


def _hint(ctx: click.Context, exc: TlcoreError) -> str:
    """The error's hint; for a full disk during ``tl train``, the exact command to continue."""
    resume = _resume_hint(ctx)
    if isinstance(exc, DiskFullError) and resume:
        return f"free space on that disk, then {resume}"
    return exc.hint


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler's stop), raised where the program is, so that it
    stops as Ctrl-C stops it: a run keeps its last checkpoint and says how to resume."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (the CLI exits with 143, the
    shell's code for it, and the resume hint); a second SIGTERM kills as usual. Nothing
    changes off the main thread or where SIGTERM is ignored (``nohup`` does not ignore it)."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one is not caught
    raise Terminated


def _resume_hint(ctx: click.Context) -> str:
    out = (ctx.obj or {}).get("out")
    return f"continue with: tl train --resume {out}" if out else ""


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tlcore")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """tlcore: fine-tune a pretrained model on your images, on PyTorch or Keras.

    \b
    Example:
      tl demo demo-data
      tl train demo-data --recipe demo-data/recipe.yaml --out runs/demo
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tl`` console script."""
    cli.main(args=argv, prog_name="tl", obj={})
