"""The engagement simulator: determinism, validity, labelled dirt, ground truth, CLI."""

from __future__ import annotations

import collections
import functools
import json
import time

import pytest
from pydantic import ValidationError

from beam_pipelines.events import EventValidationError, Reason, parse_event
from rtp.simulator import publish
from rtp.simulator.catalogue import TOPIC_VOCABULARY
from rtp.simulator.cli import main
from rtp.simulator.config import DEFAULT_START_MS, EXPECTED_REASON, DirtyKind, SimulatorConfig
from rtp.simulator.encoding import rfc3339
from rtp.simulator.records import SimRecord
from rtp.simulator.simulation import simulate
from rtp.simulator.writer import sidecar_paths
from tests.helpers.clock import FakeClock

NOW_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z: after every simulated event
SMALL = {"n_users": 200, "n_items": 1000}
POSITIVE = frozenset({"like", "share", "follow"})


@functools.cache
def _records(**overrides) -> tuple[SimRecord, ...]:
    return tuple(simulate(SimulatorConfig(**{**SMALL, **overrides})))


def _reason(data: bytes) -> Reason | None:
    try:
        parse_event(data, now_ms=NOW_MS)
    except EventValidationError as err:
        return err.reason
    return None


def test_same_seed_same_bytes_other_seed_other_bytes():
    first = _records(n_events=3000, seed=7, dirty_fraction=0.05)
    again = tuple(simulate(SimulatorConfig(**SMALL, n_events=3000, seed=7, dirty_fraction=0.05)))
    other = _records(n_events=3000, seed=8, dirty_fraction=0.05)
    assert [r.data for r in first] == [r.data for r in again]
    assert [r.label() for r in first] == [r.label() for r in again]
    assert [r.data for r in first] != [r.data for r in other]


def test_clean_lines_are_valid_ordered_and_exactly_n():
    records = _records(n_events=5000)
    assert len(records) == 5000 and all(r.is_clean for r in records)
    events = [parse_event(r.data, now_ms=NOW_MS) for r in records]
    times = [e.timestamp_ms for e in events]
    assert times == sorted(times) and times[0] >= DEFAULT_START_MS
    assert all(r.event_time_ms == e.timestamp_ms for r, e in zip(records, events, strict=True))
    assert len({e.event_id for e in events}) == len(events)
    assert {e.event_type for e in events} >= {"impression", "view", "like", "skip", "hide"}
    assert all(b"\n" not in r.data for r in records)


def test_view_events_carry_watch_and_duration():
    events = [parse_event(r.data, now_ms=NOW_MS) for r in _records(n_events=5000)]
    views = [e for e in events if e.event_type == "view"]
    assert views and all(e.surface == "short_video_feed" for e in events)
    for e in views:
        assert 5000 <= e.item_duration_ms <= 90_000
        assert 0 < e.watch_ms <= 3 * e.item_duration_ms
    skips = [e for e in events if e.event_type == "skip"]
    assert all(e.watch_ms < e.item_duration_ms for e in skips)


def test_prefix_and_clean_stream_do_not_depend_on_length_or_dirt():
    clean = [r.data for r in _records(n_events=3000, seed=7)]
    shorter = [r.data for r in _records(n_events=1000, seed=7)]
    dirty = [r.data for r in _records(n_events=3000, seed=7, dirty_fraction=0.05) if r.is_clean]
    assert shorter == clean[:1000]
    assert dirty == clean


def test_dirty_fraction_is_exact_and_every_kind_appears():
    records = _records(n_events=5000, dirty_fraction=0.05)
    dirty = [r for r in records if not r.is_clean]
    assert sum(r.is_clean for r in records) == 5000
    assert len(dirty) == round(5000 * 0.05 / 0.95)
    assert {r.kind for r in dirty} == {k.value for k in DirtyKind}
    assert [r.line for r in records] == list(range(len(records)))


def test_dirty_lines_fail_with_their_expected_reason():
    for record in _records(n_events=5000, dirty_fraction=0.05):
        if record.is_clean or record.kind in ("duplicate", "late"):
            continue
        assert b"\n" not in record.data
        assert _reason(record.data) is record.expected_reason, record.label()
        assert record.expected_reason is EXPECTED_REASON[DirtyKind(record.kind)]


def test_duplicates_repeat_a_recent_clean_line_byte_for_byte():
    records = _records(n_events=5000, dirty_fraction=0.05)
    duplicates = [r for r in records if r.kind == "duplicate"]
    assert duplicates
    for dup in duplicates:
        earlier = records[max(0, dup.line - 50) : dup.line]
        assert any(r.is_clean and r.data == dup.data for r in earlier)


def test_late_lines_are_valid_fresh_and_late_for_their_user():
    records = _records(n_events=5000, dirty_fraction=0.05)
    late_ms = SimulatorConfig().late_by_s * 1000
    newest: dict[str, int] = {}
    ids: set[str] = set()
    seen_late = 0
    for record in records:
        if record.kind == "duplicate" or _reason(record.data) is not None:
            continue
        event = parse_event(record.data, now_ms=NOW_MS)
        assert event.event_id not in ids
        ids.add(event.event_id)
        if record.kind == "late":
            seen_late += 1
            assert event.user_id in newest
            assert newest[event.user_id] - event.timestamp_ms >= late_ms
        newest[event.user_id] = max(newest.get(event.user_id, 0), event.timestamp_ms)
    assert seen_late > 0


def test_unparseable_timestamps_have_no_event_time():
    records = _records(n_events=5000, dirty_fraction=0.05)
    bad = [r for r in records if r.kind == "bad_timestamp"]
    assert bad and all(r.event_time_ms is None for r in bad)
    others = [r for r in records if r.kind != "bad_timestamp"]
    assert all(isinstance(r.event_time_ms, int) for r in others)


def test_items_carry_topic_signal_and_popularity():
    sim = simulate(SimulatorConfig(**SMALL, n_events=0))
    assert list(sim) == []
    items = sim.items
    assert len(items) == 1000 and items[0].item_id == "i000000"
    assert all(5000 <= i.duration_ms <= 90_000 for i in items)
    for item in items:
        words = set(item.title.split())
        assert words & set(TOPIC_VOCABULARY[item.topic]), item
        assert max(item.topic_weights, key=item.topic_weights.get) == item.topic
    pops = sorted((i.base_popularity for i in items), reverse=True)
    assert pops[0] == 1.0 and pops[9] < 0.15  # Zipf: a short head


def _positive_on_topic(events, topic: str, items: dict[str, str]) -> tuple[int, int]:
    """(positive engagements on ``topic``, all positive engagements) among ``events``."""
    positive = [e for e in events if e.event_type in POSITIVE]
    return sum(items[e.item_id] == topic for e in positive), len(positive)


def test_interest_shifts_are_recorded_and_followed_by_the_new_topic():
    config = SimulatorConfig(n_items=1000, n_users=40, n_events=8000, shift_probability=0.3)
    sim = simulate(config)
    events = [parse_event(r.data, now_ms=NOW_MS) for r in sim if r.is_clean]
    items = {i.item_id: i.topic for i in sim.items}
    changes = collections.defaultdict(list)  # user -> clean event indexes of changes
    for change in sim.shifts:
        changes[change.user_id].append(change.event_index)
        assert events[change.event_index].user_id == change.user_id
        assert events[change.event_index].timestamp_ms == change.time_ms
    shifts = [s for s in sim.shifts if s.kind == "shift"]
    assert len(shifts) >= 30
    totals = {"before": [0, 0], "after": [0, 0]}
    for shift in shifts:
        marks = changes[shift.user_id]
        start = max((i for i in marks if i < shift.event_index), default=0)
        end = min((i for i in marks if i > shift.event_index), default=len(events))
        windows = {
            "before": events[start : shift.event_index],
            "after": events[shift.event_index : end],
        }
        for name, window in windows.items():
            mine = [e for e in window if e.user_id == shift.user_id]
            on_topic, positive = _positive_on_topic(mine, shift.new_topic, items)
            totals[name][0] += on_topic
            totals[name][1] += positive
    share = {name: hits / max(1, n) for name, (hits, n) in totals.items()}
    assert share["before"] < 0.1, share
    assert share["after"] > 0.5, share


def test_gradual_drift_changes_the_top_topic_and_is_recorded():
    config = SimulatorConfig(**SMALL, n_events=4000, drift_rate_per_h=0.3, shift_probability=0.0)
    sim = simulate(config)
    collections.deque(sim, maxlen=0)
    assert sim.shifts and {s.kind for s in sim.shifts} == {"drift"}
    assert all(s.old_topic != s.new_topic for s in sim.shifts)


def test_config_rejects_unknown_fields_and_reads_rfc3339_start():
    with pytest.raises(ValidationError):
        SimulatorConfig(n_event=3)
    assert SimulatorConfig(start_ms="2026-01-01T00:00:00Z").start_ms == DEFAULT_START_MS
    with pytest.raises(ValidationError):
        SimulatorConfig(start_ms="tomorrow")


def test_rfc3339_round_trips_through_the_parser():
    from beam_pipelines.events import parse_timestamp_ms

    for ms in (DEFAULT_START_MS, DEFAULT_START_MS + 1, 1_767_312_000_999):
        assert parse_timestamp_ms(rfc3339(ms)) == ms


def test_cli_writes_stream_and_sidecars_deterministically(tmp_path, capsys):
    outs = [tmp_path / "a" / "events.jsonl", tmp_path / "b" / "events.jsonl"]
    for out in outs:
        argv = ["--events", "2000", "--users", "100", "--items", "500"]
        assert main([*argv, "--dirty-fraction", "0.05", "--seed", "3", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["clean_events"] == 2000 and summary["dirty_lines"] == 105
    for name in ("labels", "items", "truth"):
        paths = [sidecar_paths(out)[name] for out in outs]
        assert paths[0].read_bytes() == paths[1].read_bytes()
    assert outs[0].read_bytes() == outs[1].read_bytes()
    lines = outs[0].read_bytes().split(b"\n")[:-1]
    labels = [json.loads(x) for x in sidecar_paths(outs[0])["labels"].read_text().splitlines()]
    assert len(lines) == 2105 and len(labels) == 105
    for label in labels:
        if label["kind"] not in ("duplicate", "late"):
            assert _reason(lines[label["line"]]).value == label["expected_reason"]
    truth = json.loads(sidecar_paths(outs[0])["truth"].read_text())
    assert truth["counts"]["lines"] == 2105 and len(truth["users"]) == 100


def test_cli_needs_a_destination():
    with pytest.raises(SystemExit):
        main(["--events", "10"])


def test_token_bucket_paces_to_the_rate():
    clock = FakeClock()
    bucket = publish.TokenBucket(100.0, burst=5, clock=clock, sleep=clock.sleep)
    for _ in range(505):
        bucket.take()
    assert clock.now == pytest.approx(5.0, rel=0.01)


class _FakeFuture:
    def __init__(self) -> None:
        import concurrent.futures

        self.inner = concurrent.futures.Future()
        self.inner.set_result("id")


class _FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, **attrs: str):
        self.sent.append((topic, data, attrs))
        return _FakeFuture().inner


def test_publish_sets_event_ts_and_line_attributes():
    records = _records(n_events=600, dirty_fraction=0.05)
    fake = _FakePublisher()
    topic = "projects/p/topics/t"
    started_ms = int(time.time() * 1000)
    stats = publish.publish_records(records, topic, publisher=fake, create_topic=False)
    ended_ms = int(time.time() * 1000)
    assert stats.published == len(records) and stats.failed == 0
    for record, (_, data, attrs) in zip(records, fake.sent, strict=True):
        assert data == record.data and attrs["line"] == str(record.line)
        if record.event_time_ms is not None:
            assert attrs["event_ts"] == str(record.event_time_ms)
        else:
            assert started_ms <= int(attrs["event_ts"]) <= ended_ms
    with pytest.raises(ValueError, match="topic_path"):
        publish.publish_records(records, "topics/t", publisher=fake)


def test_uploads_are_published_as_item_metadata_when_the_stream_reaches_them():
    """Items released after the start go to the uploads topic as the item contract's
    metadata (no latent truth), each before the first event at or after its release."""
    from beam_pipelines.items import parse_item

    config = SimulatorConfig(**{**SMALL, "n_events": 3000})
    sim = simulate(config)
    uploads = publish.uploads_after(sim.items, config.start_ms)
    records = tuple(sim)
    assert uploads and all(u.release_ms > config.start_ms for u in uploads)
    fake = _FakePublisher()
    events, items = "projects/p/topics/events", "projects/p/topics/items"
    stats = publish.publish_records(
        records, events, publisher=fake, create_topic=False, uploads=uploads, uploads_topic=items
    )
    assert stats.published == len(records) and stats.uploads == len(uploads)
    newest_event_ms = 0
    for topic, data, attrs in fake.sent:
        if topic == events:
            newest_event_ms = max(newest_event_ms, int(attrs["event_ts"]))
            continue
        item = parse_item(data)
        assert item.upload_ms == int(attrs["upload_ts"])
        assert b"quality" not in data and b"base_popularity" not in data
        # published no earlier than needed: every event before it was older than its release
        assert newest_event_ms < item.upload_ms or newest_event_ms == 0
    with pytest.raises(ValueError, match="uploads_topic"):
        publish.publish_records(records, events, publisher=fake, uploads=uploads)
