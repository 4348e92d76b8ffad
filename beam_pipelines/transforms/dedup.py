"""DeduplicateEvents: keep the first delivery of each event_id, dead-letter the rest.

Streaming: keyed state per event_id with an event-time expiry timer, so Pub/Sub
redelivery within ``ttl_s`` of event time never double-counts and state stays
bounded. Batch (bounded logs): group by event_id and keep the earliest arrival.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import typehints
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration

from beam_pipelines.events import EngagementEvent, Reason
from beam_pipelines.transforms.dead_letters import DEAD_LETTER, DeadLetter

_DUPLICATES = Metrics.counter("rtp", "duplicates")
# A str key gets a deterministic coder, which keyed state needs (and which a
# Dataflow --update must keep: change it only with a new job).
STR_KEYED = typehints.KV[str, typehints.Any]


def _duplicate(event: EngagementEvent) -> beam.pvalue.TaggedOutput:
    _DUPLICATES.inc()
    letter = DeadLetter.now(
        Reason.DUPLICATE.value,
        f"event_id {event.event_id} already applied",
        event.to_json(),
        event_id=event.event_id,
        event_time_ms=event.timestamp_ms,
    )
    return beam.pvalue.TaggedOutput(DEAD_LETTER, letter)


class _DedupFn(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, ttl_s: float):
        self._ttl = Duration(seconds=ttl_s)

    def process(
        self,
        element,
        timestamp=beam.DoFn.TimestampParam,
        seen=beam.DoFn.StateParam(SEEN),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        _, event = element
        if seen.read():
            yield _duplicate(event)
            return
        seen.write(True)
        expiry.set(timestamp + self._ttl)
        yield event

    @on_timer(EXPIRY)
    def expire(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


def _first_arrival(kv):
    _, deliveries = kv
    ordered = sorted(deliveries, key=lambda pair: pair[0])
    yield ordered[0]
    for _, event in ordered[1:]:
        yield _duplicate(event)


class DeduplicateEvents(beam.PTransform):
    """Drop redeliveries by ``event_id``; outputs ``events`` and ``dead_letter``.

    ``sequenced=True`` takes and yields ``(seq, event)`` pairs (bounded logs).
    """

    def __init__(self, ttl_s: float = 24 * 3600.0, sequenced: bool = False):
        super().__init__()
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0 seconds, got {ttl_s}")
        self._ttl_s = ttl_s
        self._sequenced = sequenced

    def expand(self, events):
        if self._sequenced:
            return (
                events
                | "KeyByEventId" >> beam.Map(lambda pair: (pair[1].event_id, pair))
                | "GroupDeliveries" >> beam.GroupByKey()
                | "KeepFirst"
                >> beam.FlatMap(_first_arrival).with_outputs(DEAD_LETTER, main="events")
            )
        return (
            events
            | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e)).with_output_types(STR_KEYED)
            | "KeepFirst"
            >> beam.ParDo(_DedupFn(self._ttl_s)).with_outputs(DEAD_LETTER, main="events")
        )
