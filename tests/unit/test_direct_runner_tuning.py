"""The DirectRunner tuning of beam_pipelines.direct_runner keeps Beam's behaviour:
the same state/timer specs, the same timer firings."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading

import apache_beam as beam
import pytest
from apache_beam import typehints
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.watermark_manager import _TransformWatermarks
from apache_beam.testing.util import assert_that, equal_to
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
    for dofn in (_TimerFn(), _ItemStateFn(StateConfig(), 600_000, None), beam.Map(len).dofn):
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


class _CountingCoder(beam.coders.Coder):
    """Pickle of an int, counting encodes in the class (one process: the DirectRunner)."""

    encodes = 0

    def encode(self, value):
        type(self).encodes += 1
        return pickle.dumps(value)

    def decode(self, encoded):
        return pickle.loads(encoded)

    def is_deterministic(self):
        return True


class _RunningSum(beam.DoFn):
    TOTAL = userstate.ReadModifyWriteStateSpec("total", _CountingCoder())

    def process(self, kv, total=beam.DoFn.StateParam(TOTAL)):
        key, value = kv
        new = (total.read() or 0) + value
        total.write(new)
        yield key, new


def test_deferred_state_encoding_gives_beams_results_with_one_encode_per_key_and_bundle():
    assert direct_runner.defer_state_encoding()
    assert direct_runner.defer_state_encoding()  # idempotent
    elements = [(f"k{i % 3}", i) for i in range(60)]
    expected, totals = [], {}
    for key, value in elements:
        totals[key] = totals.get(key, 0) + value
        expected.append((key, totals[key]))
    _CountingCoder.encodes = 0
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    with beam.Pipeline(options=options) as p:
        keyed = p | beam.Create(elements, reshuffle=False).with_output_types(typehints.KV[str, int])
        assert_that(keyed | beam.ParDo(_RunningSum()), equal_to(expected))
    # One bundle of three keys: three encodes at the commit, not sixty.
    assert _CountingCoder.encodes == 3


def test_deferred_state_read_write_clear():
    from apache_beam.runners.direct.direct_userstate import ReadModifyWriteRuntimeState

    direct_runner.defer_state_encoding()
    spec = userstate.ReadModifyWriteStateSpec("s", _CountingCoder())
    state = ReadModifyWriteRuntimeState(spec, None, lambda: [pickle.dumps(7)])
    assert state.read() == 7  # the committed value, decoded
    state.write(8)
    assert state.read() == 8 and state.is_modified()
    state.clear()
    assert state.read() is None and state.is_cleared()
    state.write(9)
    assert state.read() == 9 and not state.is_cleared()
