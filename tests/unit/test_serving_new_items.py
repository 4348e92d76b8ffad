"""New items by content (``serving.new_items``): profile, cosine, reserved slots,
the neighbour prior of their Thompson draws (``serving.new_item_prior``), and the
background cache over an item table directory and a fake store."""

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
from serving import new_items
from serving.catalog import ItemCatalog
from serving.config import NewItemsConfig, load_serving_config
from serving.features import ITEM_COLUMNS, ItemSnapshot
from serving.new_item_prior import NeighbourPrior, nearest_neighbours, posteriors
from serving.new_items import (
    ContentSnapshot,
    NewItemsCache,
    best_new_items,
    choose_new_items,
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
    """``item_content`` and ``item_realtime`` rows by id; ``reads`` records every
    content read's ids, ``realtime_reads`` every item_realtime read's."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.reads: list[list[str]] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self.realtime_reads: list[list[str]] = []
        self.realtime_down = False

    def put_stats(self, item: str, alpha: float, beta: float, last_ms: int) -> None:
        row = dict.fromkeys(f.ITEM_FEATURES, 0)
        row.update(
            {f.ITEM_BETA_ALPHA: alpha, f.ITEM_BETA_BETA: beta, f.ITEM_LAST_EVENT_MS: last_ms}
        )
        self.stats[item] = row

    def put(self, item: str, vector: np.ndarray, version: str = V) -> None:
        self.rows[item] = {
            f.ITEM_CONTENT_EMBEDDING: [float(x) for x in vector],
            f.ITEM_CONTENT_VERSION: version,
        }

    def open(self) -> FakeStore:
        return self

    def read(self, view: str, ids: list[str]) -> dict[str, Any]:
        if view == f.ITEM_REALTIME:
            self.realtime_reads.append(list(ids))
            if self.realtime_down:
                raise OSError("item_realtime read timed out")
            return {i: self.stats.get(i) for i in ids}
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


def cache(
    tmp_path: Path, store: FakeStore, clock: Any = lambda: 1000.0, **config: Any
) -> NewItemsCache:
    ids = np.array(["a", "b"], dtype=object)
    catalog = ItemCatalog(1, ids, np.zeros((2, 2), np.float32), {"a": 0, "b": 1})
    settings = NewItemsConfig(table_path=str(tmp_path / "items"), **config)
    return NewItemsCache(catalog, lambda: store, settings, clock=clock)


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


# Two new items equally close to the profile x (cosine 0.6); "n-poor" is the newer
# upload (first), so the cosine order alone prefers it. "n-good" lies near catalogue
# item g (engaged 30 of 40 times: mean 31/42), "n-poor" near p (5 of 50: 6/52).
G, P = np.array([0, 0.8, 0.6], np.float32), np.array([0, -0.8, 0.6], np.float32)
TIE = ContentSnapshot(
    ("n-poor", "n-good"),
    np.stack([np.array([0.6, -0.8, 0], np.float32), np.array([0.6, 0.8, 0], np.float32)]),
    {"r": X, "g": G, "p": P},
    V,
    0,
    NeighbourPrior(np.array([[1], [0]]), np.ones((2, 1), np.float32), ItemSnapshot.empty(2)),
)
CATALOGUE = stats((31, 11, AT_MS), (6, 46, AT_MS))  # rows: g, p


def chosen(config: NewItemsConfig, seed: int, n: int = 1) -> list[tuple[str, float]]:
    rng = np.random.default_rng(seed)
    return choose_new_items(TIE, ["r"], n, config, CATALOGUE, AT_MS, STATE, rng)


def test_an_item_whose_neighbours_engage_beats_an_equally_relevant_one() -> None:
    config = NewItemsConfig(table_path="t", min_cosine=0.5)
    winners = [chosen(config, seed)[0][0] for seed in range(1000)]
    # Beta(7.4, 2.6) against Beta(1.2, 8.8): the good one draws higher ~99.9% of the time.
    assert winners.count("n-good") >= 990
    assert chosen(config, 0)[0][1] == pytest.approx(0.6)  # the score stays the cosine
    # Both fit two slots: both shown, the higher draw first.
    assert {i for i, _ in chosen(config, 0, n=2)} == {"n-good", "n-poor"}


def test_prior_none_is_exactly_the_cosine_order() -> None:
    none = NewItemsConfig(table_path="t", min_cosine=0.5, prior="none")
    assert [chosen(none, seed) for seed in range(20)] == [[("n-poor", pytest.approx(0.6))]] * 20
    for recent, n, min_cosine in [(["a"], 5, 0.5), (["a", "b"], 2, 0.5), (["n1"], 5, -1.0)]:
        config = NewItemsConfig(table_path="t", min_cosine=min_cosine, prior="none")
        rng = np.random.default_rng(0)
        before = rng.bit_generator.state
        got = choose_new_items(SNAPSHOT, recent, n, config, CATALOGUE, AT_MS, STATE, rng)
        assert got == best_new_items(SNAPSHOT, recent, n, min_cosine, 10)
        assert rng.bit_generator.state == before  # no draw


def test_the_draws_choose_among_the_best_by_cosine_only() -> None:
    # Profile x: n1 (1.0) > n2 (0.6) > n3 (0.0). One slot, one candidate per slot:
    # n1 whatever the draws. Ten per slot: n1 or n2 (no prior read: equal priors),
    # n3 never, below min_cosine.
    one = NewItemsConfig(table_path="t", min_cosine=-1.0, candidates_per_slot=1)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        assert choose_new_items(SNAPSHOT, ["a"], 1, one, CATALOGUE, AT_MS, STATE, rng)[0][0] == "n1"
    gated = NewItemsConfig(table_path="t", min_cosine=0.5, candidates_per_slot=10)
    winners = {
        choose_new_items(SNAPSHOT, ["a"], 1, gated, CATALOGUE, AT_MS, STATE, rng)[0][0]
        for rng in map(np.random.default_rng, range(20))
    }
    assert winners == {"n1", "n2"}


def test_the_prior_settings_are_validated() -> None:
    assert NewItemsConfig(table_path="t").prior == "content_neighbours"  # by default
    with pytest.raises(ValidationError, match="prior"):
        NewItemsConfig(table_path="t", prior="neighbours")
    with pytest.raises(ValidationError, match="prior_strength"):
        NewItemsConfig(table_path="t", prior_strength=0)
    with pytest.raises(ValidationError, match="candidates_per_slot"):
        NewItemsConfig(table_path="t", candidates_per_slot=0)


def counting_neighbours(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of new rows of each ``nearest_neighbours`` call the cache makes."""
    calls: list[int] = []

    def counted(new: np.ndarray, catalogue: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(new))
        return nearest_neighbours(new, catalogue, k)

    monkeypatch.setattr(new_items, "nearest_neighbours", counted)
    return calls


def test_the_refresh_finds_neighbours_only_for_items_not_met_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_neighbours(monkeypatch)
    store = FakeStore()
    store.put("a", X)
    store.put("b", Y)
    store.put("n1", np.array([0.6, 0.8, 0]))
    store.put_stats("n1", 3, 4, 900_000)
    write_table(tmp_path / "items", "items-1.parquet", {"n1": 10})
    items = cache(tmp_path, store, neighbours=2, batch_size=1)
    assert items.refresh()
    prior = items.snapshot.prior
    assert prior is not None and calls == [1]
    assert prior.rows.tolist() == [[1, 0]]  # catalogue rows of b (0.8), a (0.6)
    np.testing.assert_allclose(prior.weights, [[0.8, 0.6]], rtol=1e-6)
    assert prior.own.known.tolist() == [True]
    assert prior.own.column(f.ITEM_BETA_ALPHA).tolist() == [3.0]

    store.put("n2", Z)
    write_table(tmp_path / "items", "items-2.parquet", {"n2": 20})
    store.realtime_reads.clear()
    assert items.refresh()
    assert calls == [1, 1]  # n2 alone
    assert items.snapshot.item_ids == ("n2", "n1")
    assert items.snapshot.prior is not None
    assert items.snapshot.prior.rows.tolist() == [[0, 1], [1, 0]]  # n2: a, b tie at 0
    assert store.realtime_reads == [["n2"], ["n1"]]  # every kept item, batch_size 1

    assert items.refresh()
    assert calls == [1, 1]  # nothing new: no product at all


def test_new_catalogue_vectors_make_every_neighbour_be_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_neighbours(monkeypatch)
    store = FakeStore()
    store.put("a", X)
    store.put("n1", Y)
    store.put("n2", X)
    write_table(tmp_path / "items", "items-1.parquet", {"n1": 10, "n2": 20})
    now = [1000.0]
    items = cache(tmp_path, store, clock=lambda: now[0], catalog_refresh_s=60)
    assert items.refresh() and calls == [2]
    now[0] += 60  # the catalogue is read again, unchanged: nothing to find again
    assert items.refresh() and calls == [2]
    store.put("b", Y)  # a catalogue item's vector arrives
    now[0] += 60
    assert items.refresh() and calls == [2, 2]
    prior = items.snapshot.prior
    assert prior is not None and prior.rows[:, 0].tolist() == [0, 1]  # n2: a, n1: b


def test_a_store_failure_during_the_evidence_read_keeps_the_old_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_neighbours(monkeypatch)
    store = FakeStore()
    store.put("a", X)
    store.put("n1", X)
    store.put_stats("n1", 3, 4, 900_000)
    write_table(tmp_path / "items", "items-1.parquet", {"n1": 10})
    items = cache(tmp_path, store)
    assert items.refresh()
    before = items.snapshot

    store.realtime_down = True
    store.put("n2", Z)
    write_table(tmp_path / "items", "items-2.parquet", {"n2": 20})
    assert not items.refresh()
    assert items.snapshot is before and "item_realtime read timed out" in (items.last_error or "")

    store.realtime_down = False
    store.put_stats("n1", 5, 4, 950_000)
    assert items.refresh() and items.last_error is None
    assert items.snapshot.item_ids == ("n2", "n1")
    assert items.snapshot.prior is not None
    assert items.snapshot.prior.own.column(f.ITEM_BETA_ALPHA).tolist() == [0.0, 5.0]
    assert calls == [1, 1]  # n2's neighbours, found in the failed refresh, are kept


def test_prior_none_reads_no_engagement_and_finds_no_neighbour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_neighbours(monkeypatch)
    store = FakeStore()
    store.put("n1", X)
    write_table(tmp_path / "items", "items-1.parquet", {"n1": 10})
    items = cache(tmp_path, store, prior="none")
    assert items.refresh() and items.snapshot.item_ids == ("n1",)
    assert items.snapshot.prior is None and calls == [] and store.realtime_reads == []
