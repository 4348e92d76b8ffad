"""TensorFlow imported without its start-up banners.

Before TensorFlow's logging starts, its native code writes straight to file
descriptor 2 ("All log messages before absl::InitializeLog() ...", "oneDNN custom
operations are on", "Could not find cuda drivers"), whatever
``TF_CPP_MIN_LOG_LEVEL`` says. The ``rtp`` commands import TensorFlow through
``import_tensorflow`` after their arguments are parsed: what the import writes
to stderr is held back, the known banners dropped and anything else (a real
warning or error) written out after it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

BANNERS = re.compile(
    rb"All log messages before absl::InitializeLog"
    rb"|oneDNN custom operations are on"
    rb"|Could not find cuda drivers"
    rb"|failed call to cuInit"
    rb"|Unable to register cu(DNN|FFT|BLAS) factory"
    rb"|computation placer already registered"
    rb"|TF-TRT Warning"
    rb"|This TensorFlow binary is optimized to use available CPU instructions"
    rb"|rebuild TensorFlow with the appropriate compiler flags"
)


@contextlib.contextmanager
def banners_dropped() -> Iterator[None]:
    """Hold back what is written to file descriptor 2 inside the block, then write
    it out without the lines ``BANNERS`` matches."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(True) if not BANNERS.search(line)]
            if kept:
                os.write(2, b"".join(kept))


def import_tensorflow() -> None:
    """Import ``models`` (TensorFlow's environment) and TensorFlow, banners dropped."""
    with banners_dropped():
        import tensorflow  # noqa: F401

        import models  # noqa: F401
