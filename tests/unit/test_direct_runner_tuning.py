"""The DirectRunner tuning of beam_pipelines.direct_runner keeps Beam's behaviour:
the same state/timer specs, the same timer firings."""

from __future__ import annotations

import subprocess
import sys
import threading

import apache_beam as beam
import pytest
from apache_beam.runners.direct.watermark_manager import _TransformWatermarks
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import InMemoryUnmergedState
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from beam_pipelines import direct_runner
from beam_pipelines.state import StateConfig
from beam_pipelines.transforms.state import _ItemStateFn


class _TimerFn(beam.DoFn):
    STATE = userstate.ReadModifyWriteStateSpec("s", beam.coders.BytesCoder())
    TIMER = userstate.TimerSpec("t", TimeDomain.WATERMARK)

    def process(self, kv, s=beam.DoFn.StateParam(STATE), t=beam.DoFn.TimerParam(TIMER)):
        yield kv

    @userstate.on_timer(TIMER)
    def fire(self):
        yield "fired"


def test_cached_specs_equal_beams_and_wrappers_are_not_cached():
    assert direct_runner.cache_dofn_specs()
    original = userstate.get_dofn_specs._rtp_original
    for dofn in (_TimerFn(), _ItemStateFn(StateConfig()), beam.Map(len).dofn):
        assert userstate.get_dofn_specs(dofn) == original(dofn)
        assert userstate.get_dofn_specs(dofn) == original(dofn)  # from the cache
    assert userstate.is_stateful_dofn(_TimerFn())
    assert not userstate.is_stateful_dofn(beam.Map(len).dofn)
    # Applying it twice wraps Beam's own function, not the wrapper.
    assert direct_runner.cache_dofn_specs()
    assert userstate.get_dofn_specs._rtp_original is original


class _Clock:
    def time(self):
        return 100.0


def _watermarks(extract) -> tuple[list, bool]:
    marks = _TransformWatermarks.__new__(_TransformWatermarks)
    marks._lock = threading.Lock()
    marks._clock = _Clock()
    marks._input_watermark = Timestamp(50)
    marks._fired_timers = set()
    due, later, realtime, empty = (InMemoryUnmergedState() for _ in range(4))
    due.set_timer(GlobalWindow(), "t", TimeDomain.WATERMARK, Timestamp(10))
    later.set_timer(GlobalWindow(), "t", TimeDomain.WATERMARK, Timestamp(60))
    realtime.set_timer(GlobalWindow(), "r", TimeDomain.REAL_TIME, Timestamp(200))
    marks._keyed_states = {b"due": due, b"later": later, b"rt": realtime, b"none": empty}
    fired, has_realtime = extract(marks)
    return [(f.encoded_key, f.name, f.time_domain, f.timestamp) for f in fired], has_realtime


def test_timer_scan_fires_the_same_timers_as_beams():
    original = _TransformWatermarks.extract_transform_timers
    try:
        want = _watermarks(original)
        assert direct_runner.skip_timerless_keys()
        got = _watermarks(_TransformWatermarks.extract_transform_timers)
    finally:
        _TransformWatermarks.extract_transform_timers = original
    assert got == want
    assert want == ([(b"due", "t", TimeDomain.WATERMARK, Timestamp(10))], True)


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
