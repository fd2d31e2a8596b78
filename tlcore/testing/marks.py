"""Marks every module of the conformance suite carries (and modules that import it)."""

from __future__ import annotations

import pytest

SUITE_MARKS = [
    # Keras' saving code under numpy 2 (.keras and .weights.h5 files); harmless.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

hooks = pytest.mark.tlcore_hooks
"""``@hooks("tl_freeze", ...)``: the hooks a test exercises (checked while it runs)."""
