"""One read/write suite for every online store backend, against real servers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beam_pipelines.embedding_source import EmbeddingSource
from beam_pipelines.state import StateConfig
from beam_pipelines.state.keyed import ItemKeyState, encode_item_key, encode_user
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.state.updaters import update_item
from beam_pipelines.transforms.state import _UserStepper
from feature_repo import features as f
from feature_repo.store import (
    FeatureStoreClient,
    StoreUnavailableError,
    load_store_config,
)
from rtp import local_servers as servers
from tests.helpers.components import component
from tests.helpers.events import scored

# google-cloud-bigtable warns on every client it points at an emulator.
pytestmark = pytest.mark.filterwarnings("ignore:Connecting to Bigtable emulator:RuntimeWarning")

BACKENDS = ["sqlite", "redis", "bigtable"]
# Generous for normal calls on a shared machine, short where failure is expected.
TIMEOUT_S = 10.0
FAIL_FAST_S = 1.0
NOW_MS = int(time.time() * 1000)


def _value(kind: str, seed: int) -> Any:
    """A value of ``kind`` exactly representable in float32, distinct per seed."""
    scalar = {
        f.FLOAT: seed / 4,
        f.INT: seed * 1_000_003,
        f.STRING: f"s{seed}",
        f.BYTES: f"b{seed}\x00\xff".encode("latin-1"),
    }
    if kind in scalar:
        return scalar[kind]
    element = kind.removesuffix("_list")
    return [_value(element, seed + k) for k in range(3 + seed % 5)]


def sample_row(view: str, entity_id: str, ts_ms: int, seed: int) -> dict[str, Any]:
    """A full row of ``view`` for ``entity_id`` at event time ``ts_ms`` (epoch ms)."""
    key, schema = f.FEATURE_VIEWS[view]
    row = {name: _value(kind, seed + i) for i, (name, kind) in enumerate(schema.items())}
    return {key: entity_id, f.EVENT_TIMESTAMP: ts_ms, **row}


def _features(row: dict[str, Any], view: str) -> dict[str, Any]:
    _, schema = f.FEATURE_VIEWS[view]
    return {name: row[name] for name in schema}


def store_settings(
    backend: str,
    tmp: Path,
    request: pytest.FixtureRequest | None = None,
    timeout_s: float = TIMEOUT_S,
) -> dict:
    """Store config of ``backend`` in ``tmp``; ``request`` gets the server fixture."""
    common = {
        "registry_path": str(tmp / "registry.db"),
        "offline_dir": str(tmp / "offline"),
        "timeout_s": timeout_s,
    }
    if backend == "sqlite":
        return {"type": "sqlite", "path": str(tmp / "online.db"), **common}
    if backend == "redis":
        assert request is not None
        server = request.getfixturevalue("redis_server")
        return {"type": "redis", "connection_string": server.address, **common}
    assert request is not None
    server = request.getfixturevalue("bigtable_emulator")
    return {
        "type": "bigtable",
        "project": "test-project",
        "instance": "test-instance",
        "emulator_host": server.address,
        **common,
    }


@pytest.fixture(scope="module", params=BACKENDS)
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FeatureStoreClient]:
    tmp = tmp_path_factory.mktemp(request.param)
    config = load_store_config(store_settings(request.param, tmp, request))
    with FeatureStoreClient(config) as opened:
        yield opened


def test_user_and_item_rows_read_back_equal(client: FeatureStoreClient) -> None:
    users = [sample_row(f.USER_REALTIME, f"rt-u{i}", NOW_MS, i) for i in range(3)]
    items = [sample_row(f.ITEM_REALTIME, f"rt-i{i}", NOW_MS, 10 + i) for i in range(3)]
    embeddings = [sample_row(f.ITEM_EMBEDDING, "rt-i0", NOW_MS, 7)]

    assert client.write_rows(f.USER_REALTIME, users) == 3
    assert client.write_rows(f.ITEM_REALTIME, items) == 3
    assert client.write_rows(f.ITEM_EMBEDDING, embeddings) == 1

    got_users = client.read(f.USER_REALTIME, [r[f.USER_KEY] for r in users])
    got_items = client.read(f.ITEM_REALTIME, [r[f.ITEM_KEY] for r in items])
    assert got_users == {r[f.USER_KEY]: _features(r, f.USER_REALTIME) for r in users}
    assert got_items == {r[f.ITEM_KEY]: _features(r, f.ITEM_REALTIME) for r in items}
    assert client.read(f.ITEM_EMBEDDING, ["rt-i0"]) == {
        "rt-i0": _features(embeddings[0], f.ITEM_EMBEDDING)
    }
    assert isinstance(got_users["rt-u0"]["user_recent_items"], list)


def test_unknown_entity_reads_none(client: FeatureStoreClient) -> None:
    client.write_rows(f.USER_REALTIME, [sample_row(f.USER_REALTIME, "known", NOW_MS, 1)])

    got = client.read(f.USER_REALTIME, ["known", "never-written"])

    assert got["never-written"] is None
    assert got["known"] is not None


def test_keyed_state_bytes_read_back_exactly(client: FeatureStoreClient) -> None:
    """What the streaming job's restart reads (transforms.restore): the encoded
    state of real stages, any bytes, newest write wins, absent keys left out."""

    stepper, user, item = _UserStepper(StateConfig(), 600_000, EmbeddingSource()), None, None
    for k in range(5):
        event = scored(f"e{k}", "u1", f"i{k}", "like", NOW_MS + k)
        user, _ = stepper.step(user, event)
        item = update_item(item, event, StateConfig())
    blobs = {
        "user:u1": encode_user(user),
        "item:i1": encode_item_key(ItemKeyState(item, SeenEvents.from_ids({"e1": NOW_MS}))),
        "odd:all-bytes": bytes(range(256)),
    }
    rows = [
        {f.STATE_KEY: key, f.EVENT_TIMESTAMP: NOW_MS, "state": data} for key, data in blobs.items()
    ]
    client.write_rows(f.KEYED_STATE, [{**rows[2], "state": b"older"}])
    client.write_rows(f.KEYED_STATE, rows)

    got = client.read_bytes(f.KEYED_STATE, "state", [*blobs, "user:never-written"])

    assert got == blobs


def test_newer_row_overwrites(client: FeatureStoreClient) -> None:
    old = sample_row(f.ITEM_REALTIME, "ow-i", NOW_MS - 60_000, 1)
    new = sample_row(f.ITEM_REALTIME, "ow-i", NOW_MS, 2)

    client.write_rows(f.ITEM_REALTIME, [old])
    client.write_rows(f.ITEM_REALTIME, [new])

    assert client.read(f.ITEM_REALTIME, ["ow-i"])["ow-i"] == _features(new, f.ITEM_REALTIME)


def test_newest_row_of_a_batch_wins(client: FeatureStoreClient) -> None:
    new = sample_row(f.ITEM_REALTIME, "dup-i", NOW_MS, 5)
    old = sample_row(f.ITEM_REALTIME, "dup-i", NOW_MS - 1, 6)

    assert client.write_rows(f.ITEM_REALTIME, [new, old]) == 1

    got = client.read(f.ITEM_REALTIME, ["dup-i"])["dup-i"]
    assert got == _features(new, f.ITEM_REALTIME)


def test_batch_of_200_entities(client: FeatureStoreClient) -> None:
    rows = [sample_row(f.USER_REALTIME, f"b-u{i}", NOW_MS, i) for i in range(200)]

    assert client.write_rows(f.USER_REALTIME, rows) == 200
    got = client.read(f.USER_REALTIME, [r[f.USER_KEY] for r in rows])

    assert got == {r[f.USER_KEY]: _features(r, f.USER_REALTIME) for r in rows}


@pytest.mark.parametrize(
    ("change", "column"),
    [("drop", "item_trending"), ("add", "not_a_feature"), ("drop", f.EVENT_TIMESTAMP)],
)
def test_bad_columns_are_rejected(client: FeatureStoreClient, change: str, column: str) -> None:
    row = sample_row(f.ITEM_REALTIME, "bad-i", NOW_MS, 1)
    if change == "drop":
        del row[column]
    else:
        row[column] = 1.0

    with pytest.raises(ValueError, match=column):
        client.write_rows(f.ITEM_REALTIME, [row])
    assert client.read(f.ITEM_REALTIME, ["bad-i"]) == {"bad-i": None}


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreachable_store_fails_fast(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = store_settings(backend, tmp_path, request, FAIL_FAST_S)
    closed = f"{servers.HOST}:{servers.free_port()}"
    unreachable = {
        "sqlite": {"path": str(tmp_path / "a-file" / "online.db")},
        "redis": {"connection_string": closed},
        "bigtable": {"emulator_host": closed},
    }[backend]
    (tmp_path / "a-file").write_text("a file where a directory should be")
    client = FeatureStoreClient({**settings, **unreachable})

    with pytest.raises(StoreUnavailableError, match=backend):
        client.open()


# Backends with a server to lose: how to start it and how the config names it.
LOSABLE = {
    "redis": (servers.redis_server, {"connection_string": "{address}"}),
    "bigtable": (
        servers.bigtable_emulator,
        {"emulator_host": "{address}", "project": "p", "instance": "i"},
    ),
}


@pytest.mark.parametrize("backend", sorted(LOSABLE))
def test_server_lost_after_open_fails_fast(backend: str, tmp_path: Path) -> None:
    start, backend_settings = LOSABLE[backend]
    settings = store_settings("sqlite", tmp_path, timeout_s=FAIL_FAST_S)
    del settings["path"]
    with contextlib.ExitStack() as running:
        with component():
            server = running.enter_context(start())
        address = {k: v.format(address=server.address) for k, v in backend_settings.items()}
        client = FeatureStoreClient({**settings, "type": backend, **address}).open()
    row = sample_row(f.USER_REALTIME, "lost-u", NOW_MS, 1)

    for action in (lambda: client.write_rows(f.USER_REALTIME, [row]), client.ping):
        with pytest.raises(StoreUnavailableError):
            action()
    client.close()


def test_reopening_applies_again_and_keeps_data(client: FeatureStoreClient) -> None:
    row = sample_row(f.USER_REALTIME, "reopen-u", NOW_MS, 3)
    client.write_rows(f.USER_REALTIME, [row])

    with FeatureStoreClient(client.config) as reopened:
        got = reopened.read(f.USER_REALTIME, ["reopen-u"])

    assert got == {"reopen-u": _features(row, f.USER_REALTIME)}


def test_offline_history_layout_serves_point_in_time_joins(tmp_path: Path) -> None:
    """Parquet written as definitions.py documents is what Feast's offline store reads."""
    import pandas as pd

    earlier = sample_row(f.USER_REALTIME, "hist-u", NOW_MS - 60_000, 1)
    later = sample_row(f.USER_REALTIME, "hist-u", NOW_MS, 2)
    history = pd.DataFrame([earlier, later])
    history[f.EVENT_TIMESTAMP] = pd.to_datetime(history[f.EVENT_TIMESTAMP], unit="ms", utc=True)
    view_dir = Path(f.offline_view_dir(str(tmp_path / "offline"), f.USER_REALTIME))
    view_dir.mkdir(parents=True)
    history.to_parquet(view_dir / "part-00000.parquet")
    entity_df = pd.DataFrame(
        {
            f.USER_KEY: ["hist-u"],
            f.EVENT_TIMESTAMP: history[f.EVENT_TIMESTAMP][:1] + pd.Timedelta(seconds=1),
        }
    )

    settings = store_settings("sqlite", tmp_path)
    with FeatureStoreClient(settings) as client:
        job = client.store.get_historical_features(
            entity_df=entity_df, features=f.feature_refs(f.USER_REALTIME)
        )
        joined = job.to_df().iloc[0].to_dict()

    expected = _features(earlier, f.USER_REALTIME)
    assert {name: _plain(joined[name]) for name in expected} == expected


def _plain(value: Any) -> Any:
    """numpy scalars and arrays from a DataFrame as Python values."""
    return value.tolist() if hasattr(value, "tolist") else value
