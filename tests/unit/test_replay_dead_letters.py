"""``rtp replay-dead-letters``: the rows a store outage left as dead letters are
written again (with their state), only where the store holds no newer row, and a
second replay writes nothing."""

from __future__ import annotations

import json

from beam_pipelines import replay_dead_letters
from beam_pipelines.transforms.dead_letters import DeadLetter
from beam_pipelines.transforms.restore import STATE_COLUMN, state_key
from beam_pipelines.transforms.write import write_letter
from feature_repo.features import (
    ENCODED_STATE,
    EVENT_TIMESTAMP,
    ITEM_COENGAGEMENT,
    KEYED_STATE,
    USER_FEATURES,
    USER_KEY,
    USER_REALTIME,
)
from feature_repo.store import FeatureStoreClient, sqlite_settings
from tests.helpers.events import SECOND_MS, T0_MS


def _user_row(user: str, count: int, t_ms: int) -> dict:
    row = {name: 0.0 for name, kind in USER_FEATURES.items() if kind == "float"}
    row.update({n: [] for n, k in USER_FEATURES.items() if k.endswith("_list")})
    row.update(
        {
            USER_KEY: user,
            EVENT_TIMESTAMP: t_ms,
            "user_embedding_version": "v",
            "user_event_count": count,
            "user_last_event_ms": t_ms,
            STATE_COLUMN: f"state-{user}-{count}".encode(),
        }
    )
    return row


def _pairs_row(item: str, t_ms: int) -> dict:
    return {
        "item_id": item,
        EVENT_TIMESTAMP: t_ms,
        "item_neighbors": ["x"],
        "item_neighbor_pairs": [1.0],
        STATE_COLUMN: b"pairs",
    }


def _write(directory, letters: list[DeadLetter]) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "dead-letters-1.jsonl").write_bytes(b"\n".join(x.to_json() for x in letters))


def test_replay_writes_the_newest_missing_rows_once(tmp_path, capsys):
    config = sqlite_settings(tmp_path / "online.db")
    error = RuntimeError("redis down")
    stored_newer = _user_row("u2", 9, T0_MS + 90 * SECOND_MS)
    with FeatureStoreClient(config) as client:
        client.write_rows(
            USER_REALTIME, [{k: v for k, v in stored_newer.items() if k != STATE_COLUMN}]
        )
    letters = [
        write_letter(USER_REALTIME, _user_row("u1", 1, T0_MS), error),
        write_letter(USER_REALTIME, _user_row("u1", 2, T0_MS + SECOND_MS), error),  # newest
        write_letter(USER_REALTIME, _user_row("u2", 3, T0_MS), error),  # the store is newer
        write_letter(ITEM_COENGAGEMENT, _pairs_row("i1", T0_MS), error),
        DeadLetter.now("late", "behind", b"{}", event_id="e1"),  # left alone
    ]
    directory = tmp_path / "dead_letters"
    _write(directory, letters)
    args = [str(directory), "--store_path", str(tmp_path / "online.db")]

    assert replay_dead_letters.main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["written"] == {USER_REALTIME: 1, ITEM_COENGAGEMENT: 1}
    assert first["already_stored"] == {USER_REALTIME: 1, ITEM_COENGAGEMENT: 0}
    assert first["by_reason"] == {"store_write_failed": 4, "late": 1}
    with FeatureStoreClient(config) as client:
        users = client.read(USER_REALTIME, ["u1", "u2"])
        keys = [state_key(USER_REALTIME, "u1"), state_key(ITEM_COENGAGEMENT, "i1")]
        states = client.read_bytes(KEYED_STATE, ENCODED_STATE, keys)
        marks = client.read_bytes(KEYED_STATE, ENCODED_STATE, ["progress:user_realtime"])
    assert users["u1"]["user_event_count"] == 2 and users["u2"]["user_event_count"] == 9
    assert states == {keys[0]: b"state-u1-2", keys[1]: b"pairs"}
    assert marks == {}  # a replay of old rows marks no progress

    assert replay_dead_letters.main(args) == 0  # idempotent
    second = json.loads(capsys.readouterr().out)
    assert second["written"] == {USER_REALTIME: 0, ITEM_COENGAGEMENT: 0}
