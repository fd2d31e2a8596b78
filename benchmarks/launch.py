"""Run one command and print its wall seconds and peak resident memory as JSON.

Run as a script by a fresh, small Python (``python benchmarks/launch.py CMD ...``): Linux
carries the parent's peak memory into a child's ``ru_maxrss`` across ``exec``, so measuring
``tl predict`` from a large benchmark process would report that process's size instead.
This launcher imports nothing but the standard library and stays far below what it measures.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(command: list[str]) -> int:
    """Spawn ``command`` (output discarded, errors kept), wait, print the figures."""
    err_read, err_write = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: quiet stdout, errors to the pipe, then become the command
        os.close(err_read)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(err_write, 2)
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    os.close(err_write)
    with os.fdopen(err_read, "rb") as pipe:
        errors = pipe.read()
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "max_rss_mb": usage.ru_maxrss / 1024,
                "exit": code,
                "stderr": errors.decode(errors="replace")[-1000:],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
