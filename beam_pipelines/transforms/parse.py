"""ParseEvents: bytes → valid events, and dead letters with the reason."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.events import EventValidationError, ValidationConfig, parse_event
from beam_pipelines.transforms.dead_letters import DEAD_LETTER, DeadLetter

EVENTS = "events"


def invalid_letter(err: EventValidationError, data: bytes | str) -> DeadLetter:
    """The dead letter of a message ``parse_event`` rejected: its reason and raw bytes."""
    payload = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    return DeadLetter.now(err.reason.value, err.detail, payload)


class _ParseFn(beam.DoFn):
    def __init__(self, config: ValidationConfig, sequenced: bool):
        self._config = config
        self._sequenced = sequenced
        self._valid = Metrics.counter("rtp", "events_valid")
        self._invalid = Metrics.counter("rtp", "events_invalid")

    def process(self, element):
        seq, data = element if self._sequenced else (None, element)
        try:
            event = parse_event(data, self._config)
        except EventValidationError as err:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, invalid_letter(err, data))
            return
        self._valid.inc()
        yield (seq, event) if self._sequenced else event


class ParseEvents(beam.PTransform):
    """Validate raw messages against the event contract.

    Input: ``bytes`` (Pub/Sub data), or ``(seq, bytes)`` with ``sequenced=True``
    (bounded logs, where ``seq`` is the arrival order). Output: a tuple with
    ``events`` (``EngagementEvent`` or ``(seq, EngagementEvent)``) and ``dead_letter``.
    """

    def __init__(self, config: ValidationConfig, sequenced: bool = False):
        super().__init__()
        self._config = config
        self._sequenced = sequenced

    def expand(self, messages):
        return messages | "Validate" >> beam.ParDo(
            _ParseFn(self._config, self._sequenced)
        ).with_outputs(DEAD_LETTER, main=EVENTS)
