"""Store config and row validation: hermetic, no Feast import, no servers.

Round trips through each backend are in tests/integration/test_feature_store.py
(importing Feast alone takes ~7 s here).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from feature_repo import features as f
from feature_repo.store import (
    BigtableStoreConfig,
    FeatureStoreClient,
    RedisStoreConfig,
    SqliteStoreConfig,
    load_store_config,
)

REPO = Path(__file__).resolve().parents[2]
NOW_MS = int(datetime.now(UTC).timestamp() * 1000)


def item_row(item_id: str = "i1", ts: Any = NOW_MS) -> dict[str, Any]:
    """A valid item_realtime row: 1.5 for floats, 7 for ints."""
    key, schema = f.FEATURE_VIEWS[f.ITEM_REALTIME]
    values = {name: 1.5 if kind == f.FLOAT else 7 for name, kind in schema.items()}
    return {key: item_id, f.EVENT_TIMESTAMP: ts, **values}


def test_type_selects_the_backend() -> None:
    assert isinstance(load_store_config({"type": "sqlite"}), SqliteStoreConfig)
    redis = load_store_config({"type": "redis", "connection_string": "h:1"})
    assert isinstance(redis, RedisStoreConfig)
    bigtable = load_store_config({"type": "bigtable", "project": "p", "instance": "i"})
    assert isinstance(bigtable, BigtableStoreConfig)
    assert bigtable.emulator_host is None


def test_yaml_file_with_env_placeholders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REDIS_HOST", "redis.internal")
    path = tmp_path / "store.yaml"
    path.write_text(
        textwrap.dedent("""\
            type: redis
            connection_string: ${TEST_REDIS_HOST}:6379,db=1
            feast_project: prod_rtp
            timeout_s: 0.5
        """)
    )

    config = load_store_config(path)

    assert config == RedisStoreConfig(
        connection_string="redis.internal:6379,db=1",
        feast_project="prod_rtp",
        timeout_s=0.5,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"type": "redis", "conection_string": "h:1"}, "conection_string"),
        ({"type": "sqlite", "path": "x.db", "emulator_host": "h:1"}, "emulator_host"),
        ({"type": "cassandra"}, "cassandra"),
        ({"path": "x.db"}, "type"),
        ({"type": "bigtable", "project": "p"}, "instance"),
        ({"type": "sqlite", "timeout_s": 0}, "timeout_s"),
        ({"type": "sqlite", "feast_project": "has-dash"}, "feast_project"),
        ({"type": "redis", "key_ttl_s": 0}, "key_ttl_s"),
    ],
)
def test_invalid_settings_name_the_field(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_store_config(settings)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "store.yaml"
    path.write_text("- sqlite\n")
    with pytest.raises(TypeError, match="mapping"):
        load_store_config(path)


def test_configs_are_immutable() -> None:
    config = SqliteStoreConfig(path="a.db")
    with pytest.raises(ValidationError):
        config.path = "b.db"  # type: ignore[misc]


def test_client_checks_its_config_and_state() -> None:
    with pytest.raises(TypeError, match="StoreConfig"):
        FeatureStoreClient(42)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not open"):
        FeatureStoreClient({"type": "sqlite"}).ping()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("item_trending"), "missing column 'item_trending'"),
        (lambda r: r.update(extra=1), "unknown column 'extra'"),
        (lambda r: r.update(item_trending=[1.0]), "item_trending"),
        (lambda r: r.update(item_trending=None), "item_trending"),
        (lambda r: r.update({f.ITEM_KEY: 17}), f.ITEM_KEY),
        (lambda r: r.update({f.EVENT_TIMESTAMP: "2024-01-01"}), "epoch ms"),
        (lambda r: r.update({f.EVENT_TIMESTAMP: datetime(2024, 1, 1)}), "timezone"),
    ],
)
def test_rows_are_validated_before_any_store_call(change: Any, message: str) -> None:
    row = item_row()
    change(row)
    client = FeatureStoreClient({"type": "sqlite"})  # never opened
    with pytest.raises(ValueError, match=message):
        client.write_rows(f.ITEM_REALTIME, [row])


def test_unknown_view_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown feature view"):
        FeatureStoreClient({"type": "sqlite"}).write_rows("nope", [item_row()])


def test_config_and_validation_do_not_import_feast() -> None:
    code = textwrap.dedent("""\
        import sys
        from feature_repo.store import FeatureStoreClient, load_store_config
        client = FeatureStoreClient(load_store_config({"type": "bigtable",
                                    "project": "p", "instance": "i"}))
        assert client.write_rows("item_realtime", []) == 0
        heavy = {"feast", "redis", "google.cloud.bigtable"} & set(sys.modules)
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
