"""``rtp train`` end to end on a simulated stream: the real Beam backfill, Feast
point-in-time features, both models, export; then reproducibility under --seed."""

import models  # noqa: F401, I001  (first, before TensorFlow: sets TF_USE_LEGACY_KERAS)
import json
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from rtp.simulator.config import SimulatorConfig
from rtp.simulator.simulation import simulate
from rtp.simulator.writer import StreamWriter, sidecar_paths
from models import registry
from models.train import WORK_DIR
from tests.helpers.components import missing
from rtp.jobs import train as train_cli


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    out = tmp_path_factory.mktemp("sim") / "events.jsonl"
    sim = simulate(SimulatorConfig(n_events=3000, n_users=60, n_items=300, seed=5))
    with StreamWriter(out) as writer:
        for _ in writer.tee(sim):
            pass
        writer.finish(sim)
    return out, sidecar_paths(out)["items"]


@pytest.fixture(scope="module")
def first_run(stream, tmp_path_factory):
    events, items = stream
    base = tmp_path_factory.mktemp("models")
    argv = [
        "--events",
        str(events),
        "--items",
        str(items),
        "--out",
        str(base),
        "--seed",
        "7",
        "--epochs",
        "1",
    ]
    assert train_cli.main(argv) == 0
    return base


def test_train_writes_metrics_models_and_config(first_run) -> None:
    base = first_run
    metrics = json.loads((base / "metrics.json").read_text())
    version = metrics["version"]
    assert metrics["validation_examples"] > 0
    for key in ("recall@10", "recall@50", "recall@100"):
        assert 0 <= metrics["retrieval"][key] <= 1
    assert 0 <= metrics["ranker"]["auc"] <= 1
    assert registry.newest_complete_version(base) == version
    assert (base / "models.config").is_file()
    table = pq.read_table(base / "item_embeddings" / str(version) / "item_embeddings.parquet")
    assert set(table.column("version").to_pylist()) == {str(version)}
    assert table.num_rows == 300  # the simulator's catalogue


def test_saved_model_cli_lists_the_signatures(first_run) -> None:
    version = json.loads((first_run / "metrics.json").read_text())["version"]
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    if not cli.exists():
        missing("saved_model_cli next to the interpreter", "pip install tensorflow (it ships it)")
    for name, signatures in (
        ("retrieval", ("serving_default", "query_embedding")),
        ("ranker", ("serving_default",)),
    ):
        shown = subprocess.run(
            [str(cli), "show", "--dir", str(first_run / name / str(version)), "--all"],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        for signature in signatures:
            assert f"signature_def['{signature}']" in shown
        assert "inputs['user_emb_short']" in shown


def test_same_seed_same_models(first_run, stream, tmp_path) -> None:
    """A second run over the first run's history reproduces its table and metrics."""
    events, items = stream
    history = first_run / WORK_DIR / "backfill" / "offline"
    argv = [
        "--events",
        str(events),
        "--items",
        str(items),
        "--out",
        str(tmp_path),
        "--seed",
        "7",
        "--epochs",
        "1",
        "--history",
        str(history),
    ]
    assert train_cli.main(argv) == 0
    first = json.loads((first_run / "metrics.json").read_text())
    second = json.loads((tmp_path / "metrics.json").read_text())
    assert first["retrieval"] == second["retrieval"] and first["ranker"] == second["ranker"]
    tables = [registry.load_latest(b).table for b in (first_run, tmp_path)]
    np.testing.assert_array_equal(tables[0], tables[1])
