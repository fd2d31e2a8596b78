"""``python -m tlcore.testing BACKEND... [--adapter module:object] [pytest options]``.

Runs the backend conformance suite (``pytest --pyargs tlcore.testing``) on the named
backends; any other argument goes to pytest (``-x``, ``-k freeze``, ``-q``).
"""

from __future__ import annotations

import argparse
import sys

PLUGIN = "tlcore.testing.pytest_plugin"


def pytest_args(argv: list[str]) -> list[str]:
    """The pytest command line for ``argv``.

    Example:
        >>> pytest_args(["mybackend", "-x"])[:5]
        ['--pyargs', 'tlcore.testing', '--tlcore-backend', 'mybackend', '-x']
    """
    parser = argparse.ArgumentParser(
        prog="python -m tlcore.testing",
        description="Run tlcore's backend conformance suite; other options go to pytest.",
    )
    parser.add_argument("backends", nargs="*", help="backend names (default: every installed)")
    parser.add_argument("--adapter", help="module:object, a tlcore.testing.BackendAdapter")
    known, rest = parser.parse_known_args(argv)
    args = ["--pyargs", "tlcore.testing"]
    for name in known.backends:
        args += ["--tlcore-backend", name]
    args += rest
    if known.adapter:
        args += ["--tlcore-adapter", known.adapter]
    # A no-op where tlcore's pytest11 entry point (named after the module) loads it anyway.
    return [*args, "-p", PLUGIN]


def main(argv: list[str] | None = None) -> int:
    """Run the suite; the exit code is pytest's."""
    import pytest

    return int(pytest.main(pytest_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
