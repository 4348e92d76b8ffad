"""Test pipelines on named local runners, TestStream building and result collection.

Runners are named explicitly (see ARCHITECTURE.md): left to choose, Beam tries
to download its Prism runner.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

STREAMING_RUNNER = "BundleBasedDirectRunner"


def streaming_pipeline() -> TestPipeline:
    """A streaming TestPipeline (TestStream, stateful DoFns, watermark timers)."""
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(runner=STREAMING_RUNNER, options=options)


def state_pipeline() -> TestPipeline:
    """A bounded TestPipeline on the runner the streaming job uses (stateful DoFns)."""
    return TestPipeline(runner=STREAMING_RUNNER)


def batch_pipeline() -> TestPipeline:
    """A bounded TestPipeline on the FnApiRunner, the backfill's runner."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return TestPipeline(runner=FnApiRunner())


def at(t_ms: int) -> Timestamp:
    """A Beam timestamp from epoch milliseconds."""
    return Timestamp(micros=t_ms * 1000)


def timestamped(messages: Iterable[tuple[bytes, int]]) -> list[TimestampedValue]:
    """``(data, event time ms)`` pairs as elements stamped like Pub/Sub's ``event_ts``."""
    return [TimestampedValue(data, at(t_ms)) for data, t_ms in messages]


class StreamBuilder:
    """A TestStream of raw messages. Each ``deliver`` is one bundle whose elements
    reach every keyed step in the order given (the DirectRunner keeps order within
    a bundle); ``watermark`` advances event time between bundles."""

    def __init__(self, start_ms: int):
        self._stream = TestStream().advance_watermark_to(at(start_ms))

    def deliver(self, messages: Sequence[tuple[bytes, int]]) -> StreamBuilder:
        self._stream = self._stream.add_elements(timestamped(messages))
        return self

    def watermark(self, t_ms: int) -> StreamBuilder:
        self._stream = self._stream.advance_watermark_to(at(t_ms))
        return self

    def processing_time(self, advance_s: float) -> StreamBuilder:
        """Advance processing time (fires processing-time timers due by then)."""
        self._stream = self._stream.advance_processing_time(advance_s)
        return self

    def build(self) -> TestStream:
        return self._stream.advance_watermark_to_infinity()


_LOCK = threading.Lock()
_COLLECTED: dict[str, list] = {}


def _append(element, token: str):
    with _LOCK:
        _COLLECTED.setdefault(token, []).append(element)


class Collect(beam.PTransform):
    """Hands a PCollection back to the test (in-process runners only), in the order
    the elements were produced. ``collected()`` reads it after the pipeline ran."""

    def __init__(self):
        super().__init__()
        self.token = uuid.uuid4().hex
        _COLLECTED[self.token] = []

    def expand(self, pcoll):
        return pcoll | "Append" >> beam.Map(_append, self.token)

    def collected(self) -> list:
        with _LOCK:
            return list(_COLLECTED[self.token])


def counters(result, namespace: str = "rtp") -> dict[str, int]:
    """Committed counters of a finished pipeline, summed over steps."""
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))
    for counter in query["counters"]:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + counter.committed
    return totals


def assert_outputs(expected: dict[str, tuple[beam.PCollection, list]], label: str = "Check"):
    """One ``assert_that`` over several outputs, each element tagged with its name.

    Equivalent to one ``assert_that(pcoll, equal_to(elements))`` per entry, with far
    fewer stages (each assert_that adds its own grouping), so small tests run faster.
    """
    from apache_beam.testing.util import assert_that, equal_to

    tagged, want = [], []
    for name, (pcoll, elements) in expected.items():
        tagged.append(pcoll | f"{label}_Tag_{name}" >> beam.Map(lambda x, n: (n, x), name))
        want += [(name, element) for element in elements]
    merged = tagged | f"{label}_Merge" >> beam.Flatten()
    assert_that(merged, equal_to(want), label=label)
