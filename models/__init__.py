"""TFRS retrieval and ranking models, training and export.

TensorFlow Recommenders needs Keras 2. This is the one place that says so: it
runs before any module of this package (and so before TensorFlow) is imported.
Import ``models`` (or anything under it) before importing TensorFlow yourself.

It is also the one place for TensorFlow's native log level: errors only (3), as
a CPU machine's "failed call to cuInit" is logged as one, unless verbose output
was asked for (``rtp --verbose``: ``beam_pipelines.console``). The banners
TensorFlow prints before its logging starts (oneDNN, CUDA drivers) ignore this
level; ``serving.quiet`` filters them for the ``rtp`` commands.
"""

import os
import sys

from beam_pipelines.console import verbose_requested

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose_requested() else "3")


def fit_verbosity() -> int:
    """Keras ``fit(verbose=...)``: the progress bar on a terminal, one line per epoch
    otherwise. Keras draws the bar on stdout with carriage returns and backspaces,
    which fill a log file."""
    return 1 if sys.stdout.isatty() else 2
