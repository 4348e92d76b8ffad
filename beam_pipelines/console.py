"""What the jobs and commands print: our own INFO lines, other libraries' warnings.

Quiet by default: Beam logs each string type hint it cannot resolve ("Converting
string literal type hint to Any") and Feast each registry refresh ("Registry cache
expired") at INFO, a dozen lines a second that nobody can act on. Verbose
(``rtp --verbose``, or ``RTP_VERBOSE=1``, which the jobs a command starts as
child processes inherit) lets every library log at INFO again; ``models`` reads
the same variable to leave TensorFlow's native logs on.
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "RTP_VERBOSE"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Our packages; every other logger (apache_beam, feast, tensorflow, absl, google,
# urllib3, ...) is held at WARNING unless verbose.
OWN_LOGGERS = ("beam_pipelines", "models", "serving", "feature_repo", "benchmarks", "rtp")


def verbose_requested() -> bool:
    """Whether ``RTP_VERBOSE`` is set to something other than empty or ``0``."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def request_verbose() -> None:
    """Turn verbose on for this process and the processes it starts."""
    os.environ[VERBOSE_ENV] = "1"


def configure_logging(verbose: bool | None = None, level: int | str = logging.INFO) -> None:
    """Log to stderr: ``level`` and up from our packages, warnings from the rest;
    verbose, INFO and up from everything.

    ``verbose`` None reads ``RTP_VERBOSE``. Idempotent: a second call (a command's
    ``main`` after the ``rtp`` dispatcher's) adjusts levels, adds no handler.
    """
    verbose = verbose_requested() if verbose is None else verbose
    if isinstance(level, str):
        name, level = level.upper(), logging.getLevelNamesMapping().get(level.upper())
        if level is None:
            raise ValueError(f"unknown log level {name!r}")
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(min(level, logging.INFO) if verbose else level)
