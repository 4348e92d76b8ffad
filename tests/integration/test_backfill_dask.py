"""The backfill on Beam's DaskRunner, on a real ``dask.distributed`` LocalCluster
of two worker processes, writes what the local runner writes on the same log:
the same history rows, summary counts and dead letters, and with ``--online`` the
same rows in the online store (SQLite, or a real Redis), read back through Feast."""

from __future__ import annotations

import json
import uuid

import pyarrow.parquet as pq
import pytest
import yaml

from beam_pipelines import backfill
from beam_pipelines.transforms.dead_letters import DeadLetter
from beam_pipelines.transforms.restore import STAGES, progress_key, state_key
from feature_repo.features import (
    ITEM_COENGAGEMENT,
    ITEM_KEY,
    ITEM_REALTIME,
    KEYED_STATE,
    USER_COENGAGEMENT,
    USER_KEY,
    USER_REALTIME,
)
from feature_repo.store import FeatureStoreClient, sqlite_settings
from rtp.simulator.config import DirtyKind, SimulatorConfig
from rtp.simulator.simulation import simulate
from tests.helpers.components import require_import

pytestmark = pytest.mark.timeout(300)

SIM = SimulatorConfig(
    n_events=3000,
    n_users=60,
    n_items=150,
    seed=7,
    dirty_fraction=0.05,
    dirty_kinds=(
        DirtyKind.DUPLICATE,
        DirtyKind.LATE,
        DirtyKind.MALFORMED_JSON,
        DirtyKind.BAD_TIMESTAMP,
    ),
)


def _rows(out, view):
    rows = pq.read_table(out / "offline" / view).to_pylist()
    return sorted(rows, key=repr)


def _letters(out):
    letters = [
        DeadLetter.from_json(line)._replace(failed_at_ms=None)
        for path in (out / "dead_letters").glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    return sorted(letters, key=repr)


def _counts(out):
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in ("wall_s", "events_per_s")}


def _store(online, run, request) -> tuple[list[str], dict | None]:
    """``--online`` arguments of one run and its store config (a store of its own)."""
    if online is None:
        return [], None
    if online == "sqlite":
        path = run / "store" / "online.db"
        return ["--online", "--store_path", str(path)], sqlite_settings(path)
    server = request.getfixturevalue("redis_server")
    config = {
        "type": "redis",
        "connection_string": server.address,
        "feast_project": f"dask{uuid.uuid4().hex[:8]}",  # its own keys in the shared server
        "registry_path": str(run / "store" / "registry.db"),
        "offline_dir": str(run / "store" / "offline"),
    }
    path = run.parent / f"{run.name}-store.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["--online", "--store_config", str(path)], config


def _online(config, out) -> dict:
    """Every online row of the backfill's entities (from its history), by view:
    the realtime and co-engagement views (features and event times) and the keyed
    state of each (none is written by a backfill, so absent on both runners)."""
    users = sorted({row[USER_KEY] for row in _rows(out, USER_REALTIME)})
    items = sorted({row[ITEM_KEY] for row in _rows(out, ITEM_REALTIME)})
    ids = {
        USER_REALTIME: users,
        ITEM_REALTIME: items,
        USER_COENGAGEMENT: users,
        ITEM_COENGAGEMENT: items,
    }
    # The stages whose state rides on these views (not the experiment branch's).
    states = [progress_key(view) for view in ids if view in STAGES]
    states += [state_key(view, entity) for view in ids if view in STAGES for entity in ids[view]]
    with FeatureStoreClient({**config, "apply_on_open": False}) as client:
        rows = {view: client.read(view, entities) for view, entities in ids.items()}
        for view, entities in ids.items():
            rows[f"{view} event times"] = client.read_event_times(view, entities)
        rows[KEYED_STATE] = client.read(KEYED_STATE, states)
    return rows


@pytest.mark.parametrize("online", [None, "sqlite", "redis"])
def test_dask_backfill_matches_the_local_runner(online, tmp_path, request):
    require_import("distributed", "pip install '.[dask]'")
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(r.data + b"\n" for r in simulate(SIM)))
    common = ["--events", str(log), "--events_per_shard", "700"]  # 5 shards
    local, dask = tmp_path / "local", tmp_path / "dask"
    local_store, local_config = _store(online, local, request)
    dask_store, dask_config = _store(online, dask, request)
    backfill.run_backfill([*common, "--out", str(local), *local_store])
    backfill.run_backfill(
        [*common, "--out", str(dask), "--runner", "DaskRunner", "--dask_workers", "2", *dask_store]
    )

    assert len(list((dask / "offline" / USER_REALTIME).glob("*.parquet"))) > 1
    for view in (USER_REALTIME, ITEM_REALTIME):
        assert _rows(local, view) == _rows(dask, view), view
    assert _letters(local) == _letters(dask)
    counts = _counts(local)
    assert counts["dead_lettered"] > 0 and counts["applied"] > 0
    assert counts == _counts(dask)
    if online:
        local_rows, dask_rows = _online(local_config, local), _online(dask_config, dask)
        for view in (USER_REALTIME, ITEM_REALTIME):
            assert all(local_rows[view].values()), view  # every entity written
        for view in (USER_COENGAGEMENT, ITEM_COENGAGEMENT):  # those that paired
            assert any(local_rows[view].values()), view
        assert not any(local_rows[KEYED_STATE].values())
        assert local_rows == dask_rows
