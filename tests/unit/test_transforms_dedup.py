"""DeduplicateEvents: the first delivery of an event_id wins, later ones become
dead letters with reason ``duplicate`` (streaming state and bounded-log modes)."""

from __future__ import annotations

import apache_beam as beam
import pytest

from beam_pipelines.transforms.dead_letters import DEAD_LETTER
from beam_pipelines.transforms.dedup import DeduplicateEvents
from tests.helpers.events import T0_MS, event
from tests.helpers.pipelines import assert_outputs, batch_pipeline, state_pipeline

# Redeliveries of e1 differ in their item so the test can tell which one won.
E1_FIRST = event("e1", "u1", "i-first", t_ms=T0_MS)
E1_SECOND = event("e1", "u1", "i-second", t_ms=T0_MS)
E1_THIRD = event("e1", "u1", "i-third", t_ms=T0_MS)
E2 = event("e2", "u2", "i2", t_ms=T0_MS + 5)
E3 = event("e3", "u1", "i3", t_ms=T0_MS + 9)


def _letter(letter):
    return letter.reason, letter.event_id, letter.event_time_ms, letter.payload


def _duplicate_of(e):
    return "duplicate", e.event_id, e.timestamp_ms, e.to_json()


def test_streaming_keeps_the_first_delivery_per_event_id():
    # The stateful DoFn sees one key's elements in the order of the bundle.
    p = state_pipeline()
    deliveries = [E1_FIRST, E2, E1_SECOND, E3, E1_THIRD, E2]
    unique = p | beam.Create(deliveries) | DeduplicateEvents(ttl_s=3600)
    letters = unique[DEAD_LETTER] | beam.Map(_letter)
    expected = [_duplicate_of(e) for e in (E1_SECOND, E1_THIRD, E2)]
    assert_outputs(
        {"events": (unique["events"], [E1_FIRST, E2, E3]), "letters": (letters, expected)}
    )
    p.run().wait_until_finish()


def test_bounded_log_keeps_the_lowest_sequence_number_whatever_the_input_order():
    p = batch_pipeline()
    deliveries = [(7, E1_THIRD), (3, E1_SECOND), (1, E1_FIRST), (2, E2), (4, E3), (9, E2)]
    unique = p | beam.Create(deliveries) | DeduplicateEvents(sequenced=True)
    letters = unique[DEAD_LETTER] | beam.Map(_letter)
    expected = [_duplicate_of(e) for e in (E1_SECOND, E1_THIRD, E2)]
    first = [(1, E1_FIRST), (2, E2), (4, E3)]
    assert_outputs({"events": (unique["events"], first), "letters": (letters, expected)})
    p.run().wait_until_finish()


@pytest.mark.parametrize("ttl_s", [0, -1.0])
def test_ttl_must_be_positive(ttl_s):
    with pytest.raises(ValueError, match="ttl_s"):
        DeduplicateEvents(ttl_s=ttl_s)
