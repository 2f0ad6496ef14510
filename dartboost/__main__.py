"""``python -m dartboost ...``: the command line (see :mod:`dartboost.cli`)."""
import sys

from .cli import main

sys.exit(main())
