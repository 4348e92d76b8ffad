"""Shared helpers: JSON output, medians, simulated event logs."""

from __future__ import annotations

import json
import pathlib
import statistics
import sys
from collections.abc import Callable


def emit(measure: str, **fields) -> None:
    """One JSON object per measure on stdout."""
    print(json.dumps({"measure": measure, **fields}), flush=True)


# Timestamps a benchmark's pipeline records in-process (see pipeline_throughput).
MARKS: dict[str, float] = {}


def median_of(repeats: int, run: Callable[[], float]) -> tuple[float, list[float]]:
    values = [run() for _ in range(repeats)]
    return statistics.median(values), values


def simulated_log(
    path: pathlib.Path, events: int, seed: int = 1, users: int = 2000
) -> pathlib.Path:
    """A clean simulator log (cached by file name)."""
    from rtp.simulator import cli as simulate_cli

    if not path.exists():
        argv = [f"--events={events}", f"--seed={seed}", f"--users={users}", f"--out={path}"]
        simulate_cli.main(argv)
    return path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
