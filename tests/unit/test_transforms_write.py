"""WriteFeatures: batches keep the newest row per entity, failed writes are retried
with backoff, and rows whose writes keep failing become ``store_write_failed``
dead letters (nothing is lost). The sink records every call in a file."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.transforms.dead_letters import DEAD_LETTER
from beam_pipelines.transforms.retry import RetryPolicy
from beam_pipelines.transforms.write import STORE_WRITE_FAILED, WriteFeatures, _WriteFn
from feature_repo.features import EVENT_TIMESTAMP, USER_KEY, USER_REALTIME
from tests.helpers.pipelines import StreamBuilder, batch_pipeline, counters, streaming_pipeline
from tests.helpers.sinks import RecordingSinkFactory


def _row(user_id: str, t_ms: int, count: int) -> dict:
    return {USER_KEY: user_id, EVENT_TIMESTAMP: t_ms, "user_event_count": count}


# Rows of one entity are cumulative: only the newest of a batch needs writing.
# Rows are stamped with the entity's newest event time, so an older event applied
# later gives a row with the same time and a higher count: d's count-2 row wins.
ROWS = [
    _row("a", 10, 1),
    _row("b", 10, 1),
    _row("a", 30, 3),
    _row("a", 20, 2),
    _row("c", 5, 1),
    _row("d", 40, 1),
    _row("d", 40, 2),
]
NEWEST = {
    "a": _row("a", 30, 3),
    "b": _row("b", 10, 1),
    "c": _row("c", 5, 1),
    "d": _row("d", 40, 2),
}


def _letter(letter):
    payload = json.loads(letter.payload)
    assert payload["view"] == USER_REALTIME and payload["state"] is None
    return letter.reason, letter.detail, payload["row"]


def _run(factory: RecordingSinkFactory, expected_letters: list, max_retries: int = 3) -> dict:
    """Write ROWS; assert the dead letters; return the pipeline's counters."""
    p = batch_pipeline()
    letters = (
        p
        | beam.Create(ROWS)
        | WriteFeatures(factory, USER_REALTIME, max_retries=max_retries, backoff_s=0.0)
    )
    assert_that(letters | beam.Map(_letter), equal_to(expected_letters))
    result = p.run()
    result.wait_until_finish()
    return counters(result)


def test_newest_row_per_entity_is_written_once(tmp_path):
    factory = RecordingSinkFactory(tmp_path / "sink.jsonl")
    totals = _run(factory, [])
    writes = factory.writes()
    assert len(writes) == 1 and writes[0]["view"] == USER_REALTIME
    assert sorted(writes[0]["rows"], key=lambda r: r[USER_KEY]) == list(NEWEST.values())
    assert factory.calls()[0]["call"] == "open"
    assert totals["rows_written_user_realtime"] == len(NEWEST)


def test_failed_writes_are_retried_until_they_succeed(tmp_path):
    factory = RecordingSinkFactory(tmp_path / "sink.jsonl", fail_first=2)
    totals = _run(factory, [], max_retries=3)
    assert [w["ok"] for w in factory.writes()] == [False, False, True]
    assert factory.stored(USER_REALTIME, USER_KEY) == NEWEST
    assert totals["write_retries_user_realtime"] == 2
    assert totals.get("write_failures_user_realtime", 0) == 0


def test_exhausted_retries_dead_letter_every_row_of_the_batch(tmp_path):
    factory = RecordingSinkFactory(tmp_path / "sink.jsonl", always_fail=True)
    # Nothing lost: each entity's newest row is in a dead letter, ready to replay.
    detail = f"user_realtime: injected failure writing {len(NEWEST)} user_realtime rows"
    expected = [(STORE_WRITE_FAILED, detail, row) for row in NEWEST.values()]
    totals = _run(factory, expected, max_retries=2)
    assert len(factory.writes(ok=False)) == 3 and factory.writes(ok=True) == []
    assert totals["write_failures_user_realtime"] == len(NEWEST)


def test_streaming_rows_gathered_into_batches_keep_the_newest_per_entity(tmp_path):
    """With ``max_buffering_s`` rows are first gathered per entity shard by
    GroupIntoBatches; arriving one per bundle, they still end as the newest."""
    factory = RecordingSinkFactory(tmp_path / "sink.jsonl")
    stream = StreamBuilder(0)
    for k, row in enumerate(ROWS):
        stream = stream.deliver([(row, k)])
    p = streaming_pipeline()
    letters = (
        p
        | stream.build()
        | WriteFeatures(factory, USER_REALTIME, batch_size=3, max_buffering_s=0.05, backoff_s=0)
    )
    assert_that(letters, equal_to([]))
    p.run().wait_until_finish()
    assert factory.stored(USER_REALTIME, USER_KEY) == NEWEST
    assert all(len(w["rows"]) <= 3 for w in factory.writes())


def test_grouped_rows_are_written_newest_per_entity_in_batches(tmp_path):
    """``group_shards`` (bounded input on the DaskRunner): rows grouped by entity
    shard, each group's newest rows written in batches of at most batch_size."""
    factory = RecordingSinkFactory(tmp_path / "sink.jsonl")
    p = batch_pipeline()
    letters = (
        p
        | beam.Create(ROWS)
        | WriteFeatures(factory, USER_REALTIME, batch_size=1, backoff_s=0, group_shards=2)
    )
    assert_that(letters, equal_to([]))
    p.run().wait_until_finish()
    assert factory.stored(USER_REALTIME, USER_KEY) == NEWEST
    assert [len(w["rows"]) for w in factory.writes()] == [1] * len(NEWEST)


def test_grouped_rows_are_dead_lettered_by_process_not_finish_bundle(tmp_path):
    """The DaskRunner runs finish_bundle but drops its outputs: with grouped rows
    every failed row's dead letter comes out of ``process``."""
    fn = _WriteFn(
        RecordingSinkFactory(tmp_path / "sink.jsonl", always_fail=True),
        USER_REALTIME,
        batch_size=3,
        retry=RetryPolicy(max_retries=0, backoff_s=0),
        flush_groups=True,
    )
    fn.setup()
    fn.start_bundle()
    out = [*fn.process((0, ROWS[:4])), *fn.process((1, ROWS[4:]))]
    assert list(fn.finish_bundle() or ()) == []
    fn.teardown()
    rows = [json.loads(o.value.payload)["row"] for o in out]
    assert all(o.tag == DEAD_LETTER for o in out)
    assert sorted(rows, key=lambda r: r[USER_KEY]) == list(NEWEST.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"view": "nope"}, "view"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_retries": -1}, "max_retries"),
        ({"backoff_s": -0.1}, "backoff_s"),
        ({"max_buffering_s": 0}, "max_buffering_s"),
        ({"group_shards": 0}, "group_shards"),
        ({"group_shards": 2, "max_buffering_s": 1.0}, "group_shards"),
    ],
)
def test_arguments_are_validated(kwargs, match, tmp_path):
    args = {"view": USER_REALTIME, **kwargs}
    with pytest.raises(ValueError, match=match):
        WriteFeatures(RecordingSinkFactory(tmp_path / "s.jsonl"), **args)
