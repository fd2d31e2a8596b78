"""Press Ctrl-C for the test: a real SIGINT to this process right after its first checkpoint
is written, so an interrupted run is interrupted at the same point however loaded the
machine is."""

import os
import signal

import tlcore


@tlcore.hookimpl
def tl_on_checkpoint(run, path):
    """Send SIGINT to this process once."""
    if os.environ.pop("TL_INTERRUPT_AFTER_CHECKPOINT", None):
        os.kill(os.getpid(), signal.SIGINT)
