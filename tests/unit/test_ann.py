"""ANN retrieval (``models.ann``): the normalizer estimate by hand, the index against
exact top-K, and the service's sequential path with and without an index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feature_repo import features as f
from models import ann
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.backends.inprocess import InProcessBackend
from serving.catalog import load_catalog
from serving.config import InProcessModelsConfig
from serving.features import ItemSnapshot
from serving.model_set import ModelSet

pytestmark = pytest.mark.timeout(600)
ITEMS = [f"i{i:04d}" for i in range(1500)]
T0 = 1_700_000_000_000


def clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Vectors around 50 fixed centres (queries from the items' own distribution)."""
    centers = np.random.default_rng(99).standard_normal((50, dim))
    return (centers[rng.integers(0, 50, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def test_log_normalizer_by_hand() -> None:
    # 4 items with scores log 1, log 2, log 3, log 4: Z = 10.
    scores = np.log([1.0, 2.0, 3.0, 4.0])
    # The whole table as the sample: exact whatever was found.
    got = ann.log_normalizer(scores[[3]], np.array([3]), scores, np.arange(4), 4)
    assert got == pytest.approx(np.log(10.0))
    # Found rows 3, 2 (4 + 3); sample rows 0, 3: row 3 was found, so the tail is row 0
    # alone, scaled to the 2 rows not found: 7 + 2 · 1 = 9.
    got = ann.log_normalizer(scores[[3, 2]], np.array([3, 2]), scores[[0, 3]], np.array([0, 3]), 4)
    assert got == pytest.approx(np.log(9.0))
    # Padding rows (-1) are not found rows.
    got = ann.log_normalizer(
        np.array([np.log(4.0), -np.inf]), np.array([3, -1]), scores[[0]], np.array([0]), 4
    )
    assert got == pytest.approx(np.log(4.0 + 3 * 1.0))


def test_index_round_trip_finds_the_exact_top_k(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = clustered(20_000, 32, rng)
    built = ann.build(table, 100)
    built.write(tmp_path)
    manifest = json.loads((tmp_path / ann.ANN_DIR / ann.MANIFEST_FILE).read_text())
    assert manifest["library"] == "faiss-cpu" and manifest["metric"] == "inner_product"
    assert manifest["item_count"] == 20_000 and manifest["k"] == 100
    assert 1 <= manifest["nprobe"] <= manifest["nlist"] < 20_000
    loaded = ann.read(tmp_path)
    assert loaded is not None and loaded.manifest == built.manifest
    queries = clustered(50, 32, rng)
    scores, rows = loaded.search(queries)
    assert ann.recall_at(rows, ann.exact_top(table, queries, 100)) >= 0.95
    # Exact inner products of the rows found, best first.
    np.testing.assert_allclose(
        scores, np.einsum("bd,bkd->bk", queries, table[rows]), rtol=1e-4, atol=1e-4
    )
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert ann.read(tmp_path / "elsewhere") is None  # a version without an index


@pytest.fixture(scope="module")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    export_tiny(base, ITEMS, version=1, ann_min_items=1000)  # 1500 items: indexed
    export_tiny(base, ITEMS, version=2, ann_min_items=2000)  # below the threshold
    return base


def open_models(base: Path, version: int, index: ann.Ann | None) -> ModelSet:
    backend = InProcessBackend(InProcessModelsConfig(), str(base), version)
    models = ModelSet(backend, load_catalog(base, version), "sequential", "ranker", ann=index)
    models.open()
    return models


def users(rng: np.random.Generator, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        recent = rng.choice(len(ITEMS), 5, replace=False)
        out.append(
            {
                f.USER_RECENT_ITEMS: [ITEMS[r] for r in recent],
                f.USER_RECENT_TS_MS: [T0 - 60_000 * i for i in range(5)],
                f.USER_RECENT_REWARDS: rng.uniform(0, 1.5, 5).tolist(),
            }
        )
    return out


def test_service_searches_the_index_like_brute_force(model_base: Path) -> None:
    path = model_base / "sequential" / "1"
    index = ann.read(path)
    assert index is not None and index.manifest.item_count == len(ITEMS)
    searched, brute = open_models(model_base, 1, index), open_models(model_base, 1, None)
    try:
        assert searched.ann is index and brute.ann is None
        recalls = []
        for user in users(np.random.default_rng(1), 20):
            rows, p = searched.sequence_candidates(user)
            exact_rows, exact_p = brute.sequence_candidates(user)
            assert len(rows) == len(exact_rows) == index.manifest.k  # the same over-fetch
            recalls.append(len(np.intersect1d(rows[:100], exact_rows[:100])) / 100)
            # Probabilities with an estimated normalizer: close to the exact ones.
            _, i, j = np.intersect1d(rows, exact_rows, return_indices=True)
            np.testing.assert_allclose(p[i], exact_p[j], rtol=0.1)
            # Seen items are still dropped after the search.
            recent = searched.catalog.rows(user[f.USER_RECENT_ITEMS])
            items = ItemSnapshot.empty(len(ITEMS))
            kept, _ = searched.ranked_candidates(user, recent, items, 200)
            assert len(kept) == 200 and not np.isin(kept, recent).any()
        assert np.mean(recalls) >= 0.95
    finally:
        searched.close()
        brute.close()


def test_a_version_without_an_index_is_served_by_brute_force(model_base: Path) -> None:
    assert ann.read(model_base / "sequential" / "2") is None
    models = open_models(model_base, 2, None)
    try:
        assert models.sequential and models.ann is None
        rows, p = models.sequence_candidates(users(np.random.default_rng(2), 1)[0])
        assert len(rows) == 500 and (np.diff(p) <= 1e-12).all()
    finally:
        models.close()
