"""New items by content (``serving.new_items``): profile, cosine, reserved slots,
and the background cache over an item table directory and a fake store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from beam_pipelines.state.config import StateConfig
from feature_repo import features as f
from serving.catalog import ItemCatalog
from serving.config import NewItemsConfig, load_serving_config
from serving.features import ITEM_COLUMNS, ItemSnapshot
from serving.new_item_prior import NeighbourPrior, nearest_neighbours, posteriors
from serving.new_items import (
    ContentSnapshot,
    NewItemsCache,
    best_new_items,
    content_profile,
    new_slots,
    place,
)

V = "enc@1"
X, Y, Z = np.eye(3, dtype=np.float32)


def snapshot(new: dict[str, np.ndarray], catalogue: dict[str, np.ndarray]) -> ContentSnapshot:
    ids = tuple(new)
    vectors = np.stack([new[i] for i in ids]).astype(np.float32)
    return ContentSnapshot(ids, vectors, {**catalogue, **new}, V, 0)


NEW = {"n1": X, "n2": np.array([0.6, 0.8, 0], np.float32), "n3": Z}
SNAPSHOT = snapshot(NEW, {"a": X, "b": Y})


def test_the_profile_is_the_unit_mean_of_the_newest_recent_vectors() -> None:
    np.testing.assert_allclose(
        content_profile(SNAPSHOT, ["a", "b", "n3"], 2), [2**-0.5, 2**-0.5, 0]
    )
    assert content_profile(SNAPSHOT, ["unknown"], 10) is None
    assert content_profile(SNAPSHOT, [], 10) is None


def test_new_items_are_ranked_by_cosine_above_the_threshold() -> None:
    # Profile x: cosines n1 1.0, n2 0.6, n3 0.0.
    assert best_new_items(SNAPSHOT, ["a"], 5, 0.5, 10) == [("n1", 1.0), ("n2", pytest.approx(0.6))]
    assert best_new_items(SNAPSHOT, ["a"], 1, 0.5, 10) == [("n1", 1.0)]
    # Profile (x + y)/√2: n2 (0.99) before n1 (0.71).
    assert [i for i, _ in best_new_items(SNAPSHOT, ["a", "b"], 2, 0.5, 10)] == ["n2", "n1"]


def test_a_recent_new_item_shapes_the_profile_but_is_not_shown_again() -> None:
    assert best_new_items(SNAPSHOT, ["n1"], 5, 0.5, 10) == [("n2", pytest.approx(0.6))]


def test_no_profile_or_no_new_items_gives_nothing() -> None:
    assert best_new_items(SNAPSHOT, ["unknown"], 5, -1.0, 10) == []
    assert best_new_items(ContentSnapshot.empty(), ["a"], 5, -1.0, 10) == []
    assert best_new_items(SNAPSHOT, ["a"], 0, -1.0, 10) == []


def test_new_items_take_at_most_half_of_k() -> None:
    assert [new_slots(k, 2) for k in (1, 2, 3, 10)] == [0, 1, 1, 2]


def test_place_spreads_new_items_over_the_top_k() -> None:
    ranked = ["r1", "r2", "r3", "r4", "r5"]
    assert place(ranked, ["n1", "n2"], 5) == ["r1", "n1", "r2", "n2", "r3"]
    assert place(["r1"], ["n1"], 10) == ["r1", "n1"]
    assert place([], ["n1"], 3) == ["n1"]
    assert place(ranked, [], 3) == ["r1", "r2", "r3"]


def test_the_config_is_typed_and_closed() -> None:
    config = load_serving_config({"model_base": "m", "new_items": {"table_path": "out/items"}})
    assert config.new_items == NewItemsConfig(table_path="out/items")
    with pytest.raises(ValidationError, match="max_itmes"):
        load_serving_config({"model_base": "m", "new_items": {"table_path": "t", "max_itmes": 3}})
    with pytest.raises(ValidationError, match="table_path"):
        load_serving_config({"model_base": "m", "new_items": {}})


class FakeStore:
    """``item_content`` rows by id; ``reads`` records every read's ids."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.reads: list[list[str]] = []

    def put(self, item: str, vector: np.ndarray, version: str = V) -> None:
        self.rows[item] = {
            f.ITEM_CONTENT_EMBEDDING: [float(x) for x in vector],
            f.ITEM_CONTENT_VERSION: version,
        }

    def open(self) -> FakeStore:
        return self

    def read(self, view: str, ids: list[str]) -> dict[str, Any]:
        assert view == f.ITEM_CONTENT
        self.reads.append(list(ids))
        return {i: self.rows.get(i) for i in ids}

    def close(self) -> None:
        pass


def write_table(directory: Path, name: str, items: dict[str, int]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "item_id": list(items),
            "upload_ms": pa.array(list(items.values()), pa.int64()),
            "encoded_at_ms": pa.array([1] * len(items), pa.int64()),
        }
    )
    pq.write_table(table, directory / name)


def cache(tmp_path: Path, store: FakeStore, **config: Any) -> NewItemsCache:
    ids = np.array(["a", "b"], dtype=object)
    catalog = ItemCatalog(1, ids, np.zeros((2, 2), np.float32), {"a": 0, "b": 1})
    settings = NewItemsConfig(table_path=str(tmp_path / "items"), **config)
    return NewItemsCache(catalog, lambda: store, settings, clock=lambda: 1000.0)


def test_the_cache_keeps_new_items_with_a_stored_vector(tmp_path: Path) -> None:
    store = FakeStore()
    store.put("a", X)
    store.put("n1", X)
    items = cache(tmp_path, store)
    assert items.refresh() and items.snapshot.item_ids == ()  # no table yet

    write_table(tmp_path / "items", "items-1.parquet", {"a": 5, "n1": 10, "n2": 20})
    assert items.refresh()
    # a is in the catalogue; n2 has no vector in the store yet.
    assert items.snapshot.item_ids == ("n1",)
    assert set(items.snapshot.known) == {"a", "n1"}

    store.put("n2", Z)
    store.reads.clear()
    assert items.refresh()
    assert items.snapshot.item_ids == ("n2", "n1")  # newest upload first
    assert store.reads == [["n2"]]  # the file is not read again, n1 not re-read
    assert best_new_items(items.snapshot, ["a"], 2, 0.5, 10) == [("n1", 1.0)]


def test_the_cache_keeps_the_newest_max_items_of_one_encoder(tmp_path: Path) -> None:
    store = FakeStore()
    for n, item in enumerate(["n1", "n2", "n3"]):
        store.put(item, np.eye(3)[n], version="old@0" if item == "n3" else V)
    write_table(tmp_path / "items", "items-1.parquet", {"n1": 30, "n2": 10, "n3": 20})
    items = cache(tmp_path, store, max_items=2)
    assert items.refresh()
    # n2 is the oldest: dropped; n3 is of another encoder than the newest: left out.
    assert items.snapshot.item_ids == ("n1",)
    assert items.snapshot.version == V


def test_a_file_being_written_is_read_once_complete(tmp_path: Path) -> None:
    store = FakeStore()
    store.put("n1", X)
    (tmp_path / "items").mkdir()
    (tmp_path / "items" / "items-1.parquet").write_bytes(b"PAR1 half a file")
    items = cache(tmp_path, store)
    assert items.refresh() and items.snapshot.item_ids == ()
    write_table(tmp_path / "items", "items-1.parquet", {"n1": 10})
    assert items.refresh() and items.snapshot.item_ids == ("n1",)


def test_a_store_error_keeps_the_previous_snapshot(tmp_path: Path) -> None:
    store = FakeStore()
    store.put("n1", X)
    write_table(tmp_path / "items", "items-1.parquet", {"n1": 10})
    items = cache(tmp_path, store)
    assert items.refresh()

    def down(view: str, ids: list[str]) -> dict[str, Any]:
        raise OSError("store down")

    store.read = down  # type: ignore[method-assign]
    write_table(tmp_path / "items", "items-2.parquet", {"n2": 20})
    assert not items.refresh()
    assert items.snapshot.item_ids == ("n1",) and "store down" in (items.last_error or "")


# The neighbour prior and its Thompson draws. Catalogue posteriors are stored
# α, β with their last event at AT_MS (no decay) unless a test says otherwise.
AT_MS = 1_000_000
STATE = StateConfig()  # prior α = β = 1: the global prior mean is 0.5
ALPHA, BETA, LAST = (
    ITEM_COLUMNS.index(c) for c in (f.ITEM_BETA_ALPHA, f.ITEM_BETA_BETA, f.ITEM_LAST_EVENT_MS)
)


def stats(*rows: tuple[float, float, int]) -> ItemSnapshot:
    """An item snapshot whose row i has stored (α, β, last event ms) ``rows[i]``."""
    values = np.zeros((len(rows), len(ITEM_COLUMNS)))
    for i, (alpha, beta, last_ms) in enumerate(rows):
        values[i, [ALPHA, BETA, LAST]] = alpha, beta, last_ms
    return ItemSnapshot(values, np.ones(len(rows), dtype=bool), AT_MS)


def test_neighbours_are_the_nearest_catalogue_rows_by_cosine_clipped_at_zero() -> None:
    catalogue = np.stack([X, Y, Z, -X])
    new = np.array([[0.8, 0.6, 0.0], [0.0, 0.0, 1.0]], np.float32)
    rows, weights = nearest_neighbours(new, catalogue, 2)
    assert rows.tolist() == [[0, 1], [2, 0]]  # ties (X and Y at 0 for the second): lower row
    np.testing.assert_allclose(weights, [[0.8, 0.6], [1.0, 0.0]])
    rows, weights = nearest_neighbours(new, catalogue, 10)  # k past the catalogue: all 4
    assert rows[0].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(weights[0], [0.8, 0.6, 0.0, 0.0])  # -X: -0.8 clipped
    blocked = nearest_neighbours(new, catalogue, 3, chunk_cells=1)  # one new row a block
    np.testing.assert_array_equal(blocked[0], nearest_neighbours(new, catalogue, 3)[0])
    assert nearest_neighbours(new, np.zeros((0, 0), np.float32), 3)[0].shape == (2, 0)


def test_the_prior_mean_is_the_cosine_weighted_mean_of_the_neighbours_posteriors() -> None:
    # Neighbour means 3/4, 1/4, 2/4 at cosines 0.5, 0.25, 0.25:
    # m = (0.5·0.75 + 0.25·0.25 + 0.25·0.5) / 1.0 = 0.5625; strength 10: (5.625, 4.375).
    catalogue = stats((3, 1, AT_MS), (1, 3, AT_MS), (2, 2, AT_MS), (50, 1, AT_MS))
    prior = NeighbourPrior(
        np.array([[0, 1, 2], [3, 0, 1]]),
        np.array([[0.5, 0.25, 0.25], [0.0, 0.0, 0.0]], np.float32),  # 2nd: none usable
        ItemSnapshot.empty(2),  # no row of their own yet
    )
    alpha, beta = posteriors(prior, np.array([0, 1]), catalogue, AT_MS, STATE, 10.0)
    np.testing.assert_allclose(alpha, [5.625, 5.0])  # 2nd: the global mean 0.5
    np.testing.assert_allclose(beta, [4.375, 5.0])


def test_the_items_own_evidence_is_added_on_top_of_the_prior() -> None:
    catalogue = stats((3, 1, AT_MS), (1, 3, AT_MS), (2, 2, AT_MS))
    rows, weights = np.array([[0, 1, 2]]), np.array([[0.5, 0.25, 0.25]], np.float32)
    # Stored α = 1 + 2 engagements, β = 1 + 3 non-engagements (the pipeline's prior 1, 1).
    fresh = NeighbourPrior(rows, weights, stats((3, 4, AT_MS)))
    alpha, beta = posteriors(fresh, np.array([0]), catalogue, AT_MS, STATE, 10.0)
    np.testing.assert_allclose([alpha[0], beta[0]], [5.625 + 2, 4.375 + 3])
    # Last event one long half-life ago: the evidence counts half, as a catalogue item's.
    half_life_ms = int(STATE.item_long_half_life_s * 1000)
    old = NeighbourPrior(rows, weights, stats((3, 4, AT_MS - half_life_ms)))
    alpha, beta = posteriors(old, np.array([0]), catalogue, AT_MS, STATE, 10.0)
    np.testing.assert_allclose([alpha[0], beta[0]], [5.625 + 1, 4.375 + 1.5])
