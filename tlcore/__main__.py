"""``python -m tlcore``: the ``tl`` command (what ``torchrun -m tlcore train ...`` runs)."""

import sys

from tlcore.cli.app import main

main(sys.argv[1:])
