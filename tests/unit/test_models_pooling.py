"""Query/pooling consistency: training pools exactly what the pipeline pools online."""

import models  # noqa: F401, I001  (first, before TensorFlow: sets TF_USE_LEGACY_KERAS)
import numpy as np
import pytest
import tensorflow as tf

from beam_pipelines.embeddings import TableEmbeddings
from beam_pipelines.state import ScoredEvent, StateConfig
from beam_pipelines.state.updaters import update_user
from models.pooling import half_lives_s, history_arrays, pool_user, pooling_coefficients
from models.retrieval import HISTORY_COEF, HISTORY_INDEX, POSITIVE, TwoTowerModel
from models.towers import QUERY_SCALARS, ItemTower, QueryTower

T0 = 1_700_000_000_000
HOUR_MS = 3_600_000
DIM = 4


def test_coefficients_by_hand() -> None:
    # Two events one short half-life apart, rewards 1 and -1: the older weighs 1/2.
    coef = pooling_coefficients([T0 + HOUR_MS, T0], [1.0, -1.0], (3600.0,))
    np.testing.assert_allclose(coef, [[1 / 1.5, -0.5 / 1.5]])
    # Zero rewards and unknown items contribute nothing; nothing left → zeros.
    assert not pooling_coefficients([T0, T0], [0.0, 1.0], (3600.0,), [True, False]).any()


def _table(rng: np.random.Generator, items: list[str]) -> TableEmbeddings:
    return TableEmbeddings({i: rng.standard_normal(DIM) for i in items}, "7")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_user_equals_pipeline_state(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = [f"i{k}" for k in range(12)]
    table = _table(rng, items[:9])  # i9..i11 have no embedding in this version
    config = StateConfig()
    state = None
    # Out of order, repeated timestamps, zero and negative rewards, < 50 events.
    times = T0 + rng.integers(0, 10 * HOUR_MS, size=30)
    for n, t in enumerate(times):
        reward = float(rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0]))
        event = ScoredEvent(
            f"e{n}", "u", str(rng.choice(items)), "like", int(t), reward, reward > 0, True
        )
        state = update_user(state, event, table, config)
    features = state.features()
    pooled = pool_user(
        features["user_recent_items"],
        features["user_recent_ts_ms"],
        features["user_recent_rewards"],
        table.get,
        DIM,
        half_lives_s(config),
    )
    np.testing.assert_allclose(pooled[0], features["user_emb_short"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[1], features["user_emb_long"], rtol=1e-5, atol=1e-6)


def _tiny_model(n_items: int) -> TwoTowerModel:
    catalog = {
        "item_index": np.arange(n_items, dtype=np.int32),
        "title_tokens": np.tile(np.arange(1, 4, dtype=np.int32), (n_items, 1)),
        "genres": (np.arange(n_items, dtype=np.int32) % 3 + 1)[:, None],
        "duration": np.zeros((n_items, 2), np.float32),
    }
    return TwoTowerModel(
        ItemTower(n_items, 3, 16, DIM, 8),
        QueryTower(DIM, 8),
        catalog,
        np.full(n_items, 1.0 / n_items, np.float32),
    )


def test_in_graph_pooling_equals_table_pooling() -> None:
    """The training graph pools the item tower's output like the pipeline pools the table."""
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n_items = 10
    model = _tiny_model(n_items)
    ids = [str(i) for i in range(n_items)]
    index = {item: i for i, item in enumerate(ids)}
    recent_items = [["3", "1", "4", "1"], [], ["9", "nope"]]
    recent_ts = [[T0 + 3 * HOUR_MS, T0 + HOUR_MS, T0, T0], [], [T0, T0 - HOUR_MS]]
    recent_rewards = [[1.0, -0.5, 2.0, 0.0], [], [1.0, 1.0]]
    idx, coef = history_arrays(recent_items, recent_ts, recent_rewards, index, 5)
    batch = {POSITIVE: np.array([0, 1, 2]), HISTORY_INDEX: idx, HISTORY_COEF: coef}
    batch.update({name: rng.random(3).astype(np.float32) for name in QUERY_SCALARS})
    _, pooled = model._embed_batch({k: tf.constant(v) for k, v in batch.items()})
    table = model.catalog_embeddings()
    lookup = TableEmbeddings({i: table[index[i]] for i in ids}, "1").get
    for b in range(3):
        expected = pool_user(recent_items[b], recent_ts[b], recent_rewards[b], lookup, DIM)
        np.testing.assert_allclose(pooled.numpy()[b], expected, rtol=1e-5, atol=1e-6)
