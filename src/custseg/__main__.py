"""``python -m custseg``: the same as the ``custseg`` command."""

import sys

from .cli import run

sys.exit(run())
