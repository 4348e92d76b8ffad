"""The local streaming job's process settings (beam_pipelines.direct_runner)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from beam_pipelines import direct_runner

_FREEZE_PROBE = """
import gc
from beam_pipelines.direct_runner import freeze_startup_heap
before = gc.get_threshold()
freeze_startup_heap(young_threshold=5000)
print(gc.get_freeze_count() > 0, gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:])
freeze_startup_heap(young_threshold=100)  # never collects more often than before
print(gc.get_threshold()[0])
"""


def test_freeze_startup_heap_freezes_and_only_raises_the_young_threshold():
    # In a child: the collector's settings are per process, and pytest's must stay.
    out = subprocess.run(
        [sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "5000", "True", "5000"]
    with pytest.raises(ValueError, match="young_threshold"):
        direct_runner.freeze_startup_heap(young_threshold=0)
