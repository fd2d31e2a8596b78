"""``python -m tlcore.cli``: the ``tl`` command."""

import sys

from tlcore.cli.app import main

main(sys.argv[1:])
