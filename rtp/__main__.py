"""``python -m rtp``: the ``rtp`` console script."""

import sys

from rtp.cli import main

sys.exit(main())
