"""The registry loads the newest complete version and skips broken ones with a reason."""

import models  # noqa: F401, I001  (first, before TensorFlow: sets TF_USE_LEGACY_KERAS)
import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

from models import export, registry
from models.inputs import RANKER_INPUTS, input_specs
from models.ranker import RankerModel
from models.towers import QUERY_INPUTS, QueryTower

DIM = 4
N_ITEMS = 12


def _inputs(names, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.random((n, *shape[1:])).astype(dtype)
        for name, (dtype, shape) in input_specs(names, DIM).items()
    }


@pytest.fixture(scope="module")
def parts():
    tf.keras.utils.set_random_seed(0)
    query = QueryTower(DIM, 8)
    query(_inputs(QUERY_INPUTS, 2))
    ranker = RankerModel(cross_layers=1, projection_dim=4, hidden=(8,))
    ranker.adapt(_inputs(RANKER_INPUTS, 16))
    ranker(_inputs(RANKER_INPUTS, 2))
    table = np.random.default_rng(1).standard_normal((N_ITEMS, DIM)).astype(np.float32)
    ids = np.array([f"i{k}" for k in range(N_ITEMS)], dtype=object)
    return query, ranker, table, ids


def _export(base, parts, version: int) -> int:
    query, ranker, table, ids = parts
    return export.export_all(
        base,
        query_tower=query,
        ranker=ranker,
        table=table,
        item_ids=ids,
        k=5,
        version=version,
        retrieval_warmup=[_inputs(QUERY_INPUTS, 1)],
        ranker_warmup=[_inputs(RANKER_INPUTS, 3)],
    )


@pytest.fixture(scope="module")
def good(tmp_path_factory, parts):
    """Two good exports, versions 100 and 200, kept as a template."""
    base = tmp_path_factory.mktemp("good")
    _export(base, parts, 100)
    _export(base, parts, 200)
    return base


def _replace_with_100(base, part: str) -> None:
    """A copy of version 100's directory (marker renamed) posing as version 200."""
    shutil.rmtree(base / part / "200")
    shutil.copytree(base / part / "100", base / part / "200")
    (base / part / "200" / export.COMPLETE).write_text('{"version": 200}\n')


def test_newest_complete_version_loads(good) -> None:
    bundle = registry.load_latest(good)
    assert bundle is not None and bundle.version == 200
    assert bundle.k == 5 and bundle.dim == DIM
    assert registry.newest_complete_version(good) == 200


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: shutil.rmtree(b / "ranker" / "200"), "ranker/200 is missing"),
        (lambda b: (b / "retrieval" / "200" / export.COMPLETE).unlink(), "no _COMPLETE marker"),
        (
            lambda b: (b / "ranker" / "200" / "saved_model.pb").write_bytes(b"\x00garbage"),
            "does not load",
        ),
        (
            lambda b: (b / "retrieval" / "200" / "variables" / "variables.index").write_bytes(b""),
            "does not load",
        ),
        (
            lambda b: (b / "item_embeddings" / "200" / export.TABLE_FILE).write_bytes(b"PAR1"),
            "does not load",
        ),
        (lambda b: _replace_with_100(b, "ranker"), "is model version 100, not 200"),
    ],
    ids=[
        "missing-part",
        "no-marker",
        "corrupt-graph",
        "corrupt-variables",
        "corrupt-table",
        "version-mismatch",
    ],
)
def test_broken_newer_version_is_skipped_with_reason(
    good, tmp_path, caplog, damage, reason
) -> None:
    shutil.copytree(good, tmp_path, dirs_exist_ok=True)
    damage(tmp_path)
    with caplog.at_level(logging.WARNING, logger="models.registry"):
        bundle = registry.load_latest(tmp_path)
    assert bundle is not None and bundle.version == 100
    assert any("200" in r.getMessage() and reason in r.getMessage() for r in caplog.records), (
        caplog.text
    )


def test_half_written_export_is_invisible(good, tmp_path) -> None:
    shutil.copytree(good, tmp_path, dirs_exist_ok=True)
    staging = tmp_path / "retrieval" / ".tmp-300-1"
    shutil.copytree(tmp_path / "retrieval" / "100", staging)
    (tmp_path / "ranker" / "300").mkdir()
    assert registry.list_versions(tmp_path) == [300, 200, 100]
    assert registry.newest_complete_version(tmp_path) == 200


def test_no_versions(tmp_path) -> None:
    assert registry.load_latest(tmp_path) is None
    with pytest.raises(registry.ModelLoadError, match="missing"):
        registry.load_version(tmp_path, 1)


def test_export_never_overwrites(good, parts, tmp_path) -> None:
    shutil.copytree(good, tmp_path, dirs_exist_ok=True)
    with pytest.raises(FileExistsError):
        _export(tmp_path, parts, 200)
    assert export.next_version(tmp_path) > 200
