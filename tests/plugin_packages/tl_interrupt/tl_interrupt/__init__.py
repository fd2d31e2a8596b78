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
        # As at a terminal: a process started in the background (nohup ... &) inherits SIGINT
        # ignored, and Python then never raises KeyboardInterrupt for it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)
