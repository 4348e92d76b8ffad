"""One default online store for ``rtp stream``, ``rtp backfill --online`` and
``rtp serve`` (``feature_repo.store.DEFAULT_SQLITE_PATH``), and ``rtp serve
--store-path`` to point the service at another SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import backfill
from beam_pipelines.jobs_common import store_config
from beam_pipelines.options import StreamingOptions
from feature_repo.store import DEFAULT_SQLITE_PATH, sqlite_settings
from serving import app


def serve_config(*flags: str):
    return app.config_from_args(app.parser().parse_args(["--models", "m", *flags]))


def test_stream_backfill_and_serve_default_to_the_same_file() -> None:
    stream = PipelineOptions([]).view_as(StreamingOptions).store_path
    backfilled = backfill.parser().parse_args(["--events", "e.jsonl", "--out", "o"]).store_path
    served = serve_config().store
    assert stream == backfilled == DEFAULT_SQLITE_PATH
    assert served.type == "sqlite"
    assert Path(served.path).resolve() == Path(DEFAULT_SQLITE_PATH).resolve()
    # The registry and offline history the jobs write beside it, the service reads.
    written = store_config(None, stream)
    assert Path(served.registry_path).resolve() == Path(written["registry_path"])
    assert Path(served.offline_dir).resolve() == Path(written["offline_dir"])


def test_sqlite_settings_put_registry_and_history_beside_the_file(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path / "features" / "online.db")
    assert settings == {
        "type": "sqlite",
        "path": str(tmp_path / "features" / "online.db"),
        "registry_path": str(tmp_path / "features" / "registry.db"),
        "offline_dir": str(tmp_path / "features" / "offline"),
    }


def test_serve_store_path_points_the_service_at_another_file(tmp_path: Path) -> None:
    store = serve_config("--store-path", str(tmp_path / "demo" / "online.db")).store
    assert (store.type, store.path) == ("sqlite", str(tmp_path / "demo" / "online.db"))
    assert store.registry_path == str(tmp_path / "demo" / "registry.db")
    assert store.timeout_s == serve_config().store.timeout_s  # the service's SQLite bound


def test_serve_store_path_and_store_config_are_exclusive(tmp_path: Path) -> None:
    yaml = tmp_path / "store.yaml"
    yaml.write_text("type: sqlite\npath: x.db\n")
    with pytest.raises(ValueError, match="--store-config or --store-path"):
        serve_config("--store-config", str(yaml), "--store-path", "y.db")
