"""The built-in backends pass the backend conformance suite: the very tests third-party
backends run (``python -m tlcore.testing BACKEND``), collected here from
:mod:`tlcore.testing.suite` and run on torch and keras."""

from __future__ import annotations

import pytest

from tlcore.testing import BackendAdapter, BackendUnderTest
from tlcore.testing.suite import *  # noqa: F403

from .adapters import ADAPTERS

TLCORE_BACKENDS = ("torch", "keras")


@pytest.fixture
def tl_adapter(tl_backend: BackendUnderTest) -> BackendAdapter:
    """Each built-in backend's native side (a user's own network)."""
    return ADAPTERS[tl_backend.name]
