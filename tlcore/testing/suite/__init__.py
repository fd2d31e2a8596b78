"""The backend conformance suite: the tests every tlcore backend must pass.

One module per concern: ``test_load``, ``test_head``, ``test_freeze``, ``test_train``,
``test_state``, ``test_export``, ``test_driver``, ``test_distributed`` (devices and
processes). Each test takes ``tl_backend`` and talks to
the backend through the hooks only (see :class:`tlcore.testing.BackendUnderTest`).

Run it with ``python -m tlcore.testing BACKEND``, or import it into a test module of your
own, where pytest collects it::

    from tlcore.testing.suite import *  # noqa: F403

    TLCORE_BACKENDS = ("mybackend",)
"""

from tlcore.testing.marks import SUITE_MARKS as pytestmark  # noqa: F401 (marks every test)
from tlcore.testing.suite.test_distributed import *  # noqa: F403
from tlcore.testing.suite.test_driver import *  # noqa: F403
from tlcore.testing.suite.test_export import *  # noqa: F403
from tlcore.testing.suite.test_freeze import *  # noqa: F403
from tlcore.testing.suite.test_head import *  # noqa: F403
from tlcore.testing.suite.test_load import *  # noqa: F403
from tlcore.testing.suite.test_state import *  # noqa: F403
from tlcore.testing.suite.test_train import *  # noqa: F403
