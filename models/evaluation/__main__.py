"""``python -m models.evaluation``: the same as ``rtp evaluate``."""

import sys

from models.evaluation.cli import main

sys.exit(main())
