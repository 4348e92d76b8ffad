"""Restart-safe state on a real (SQLite) store: a streaming run stopped with part
of its writes lost, then restarted on a replay of its input, ends with the same
online rows as one uninterrupted run: every event applied once to every stage.

The stop is simulated by a sink that never stores one stage's rows (the rows in
flight when a job is killed); the restart replays every event, as the seek to
the progress mark does (``beam_pipelines.resume``), and so sees redeliveries.
"""

from __future__ import annotations

import pytest

from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.sinks import FeastSinkFactory
from beam_pipelines.streaming import WriteAllFeatures
from beam_pipelines.transforms.graph import ComputeFeatures, FeatureSettings
from beam_pipelines.transforms.restore import STAGES, StateRestore
from beam_pipelines.transforms.retry import RetryPolicy
from feature_repo.features import (
    ITEM_COENGAGEMENT,
    ITEM_REALTIME,
    KEYED_STATE,
    STATE_KEY,
    USER_COENGAGEMENT,
    USER_REALTIME,
)
from feature_repo.store import FeatureStoreClient, sqlite_settings
from tests.helpers.events import SECOND_MS, T0_MS, event_json
from tests.helpers.pipelines import StreamBuilder, streaming_pipeline

TYPES = ("like", "share", "impression", "skip", "like", "hide")
EVENTS = [
    event_json(f"e{k}", f"u{k % 5}", f"i{(k * 7) % 9}", TYPES[k % 6], T0_MS + k * SECOND_MS)
    for k in range(60)
]
USERS = [f"u{k}" for k in range(5)]
ITEMS = [f"i{k}" for k in range(9)]
VIEWS = {
    USER_REALTIME: USERS,
    ITEM_REALTIME: ITEMS,
    USER_COENGAGEMENT: USERS,
    ITEM_COENGAGEMENT: ITEMS,
}


class LosingSinkFactory:
    """The store's shared sink, except that the rows (and state) of ``lost`` views
    are never stored: what a kill loses of the writes in flight."""

    def __init__(self, config: dict, lost: tuple[str, ...]):
        self._store = FeastSinkFactory(config)
        self._lost = lost

    def __call__(self):
        return _LosingSink(self._store(), self._lost)


class _LosingSink:
    def __init__(self, sink, lost):
        self._sink, self._lost = sink, lost
        self._prefixes = tuple(f"{STAGES[view]}:" for view in lost)

    def open(self):
        self._sink.open()

    def close(self):
        self._sink.close()

    def write_rows(self, view, rows):
        if view in self._lost:
            return 0
        if view == KEYED_STATE:
            rows = [r for r in rows if not r[STATE_KEY].startswith(self._prefixes)]
        return self._sink.write_rows(view, rows)


def _run(config: dict, messages: list[bytes], lost: tuple[str, ...] = ()) -> None:
    stream = StreamBuilder(T0_MS)
    for start in range(0, len(messages), 7):  # several bundles
        stream = stream.deliver([(m, T0_MS) for m in messages[start : start + 7]])
    restore = StateRestore(FeastSinkFactory(config), RetryPolicy(max_retries=0, backoff_s=0))
    settings = FeatureSettings(rewards=SHORT_VIDEO, restore=restore)
    p = streaming_pipeline()
    features = p | stream.build() | ComputeFeatures(settings)
    _ = features | WriteAllFeatures(
        LosingSinkFactory(config, lost), batch_size=500, max_retries=0, backoff_s=0
    )
    p.run().wait_until_finish()


def _online(config: dict) -> dict:
    with FeatureStoreClient(config) as client:
        return {view: client.read(view, ids) for view, ids in VIEWS.items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    config = sqlite_settings(tmp_path_factory.mktemp("whole") / "online.db")
    _run(config, EVENTS)
    return _online(config)


@pytest.mark.parametrize(
    "lost",
    [
        (),
        (ITEM_REALTIME, ITEM_COENGAGEMENT),
        (USER_REALTIME,),
        (USER_REALTIME, USER_COENGAGEMENT),
        (ITEM_COENGAGEMENT,),
        (USER_COENGAGEMENT, ITEM_REALTIME),
    ],
)
def test_a_restart_after_lost_writes_ends_as_an_uninterrupted_run(lost, uninterrupted, tmp_path):
    config = sqlite_settings(tmp_path / "online.db")
    _run(config, EVENTS[:35], lost)  # stopped: the writes of ``lost`` never landed
    _run(config, EVENTS[:20] + EVENTS)  # restarted: a replay, with redeliveries
    restarted = _online(config)
    assert restarted[USER_REALTIME]["u0"]["user_event_count"] == 12
    assert all(uninterrupted[USER_REALTIME].values()) and all(uninterrupted[ITEM_REALTIME].values())
    for view in VIEWS:
        for entity, row in uninterrupted[view].items():
            assert restarted[view][entity] == row, (view, entity)


def test_without_restore_a_restart_forgets(tmp_path):
    """The failure restoring prevents: each key's first event rebuilds from nothing."""
    config = sqlite_settings(tmp_path / "online.db")
    _run(config, EVENTS[:35])
    stream = StreamBuilder(T0_MS).deliver([(m, T0_MS) for m in EVENTS[35:]])
    p = streaming_pipeline()
    features = p | stream.build() | ComputeFeatures(FeatureSettings(rewards=SHORT_VIDEO))
    _ = features | WriteAllFeatures(FeastSinkFactory(config), 500, 0, 0)
    p.run().wait_until_finish()
    with FeatureStoreClient(config) as client:
        assert client.read(USER_REALTIME, ["u0"])["u0"]["user_event_count"] == 5  # not 12
