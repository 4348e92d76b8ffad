"""Two-tower retrieval (TFRS ``tasks.Retrieval``) trained on state-before-event → engaged item.

Each example carries the user's last-N events as catalogue rows plus pooling
coefficients (``pooling.history_arrays``); the model embeds those items with the
item tower being trained and pools them into ``user_emb_short``/``user_emb_long``
exactly as the pipeline pools the exported table, then runs the query tower.
Negatives are the other positives of the batch, with the log-popularity
(sampling-probability) correction and accidental-hit removal.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models import fit_verbosity
from models.inputs import with_pooled
from models.towers import QUERY_EMBEDDINGS, QUERY_SCALARS, ItemTower, QueryTower

POSITIVE = "positive"
HISTORY_INDEX = "history_index"
HISTORY_COEF = "history_coef"


class TwoTowerModel(tfrs.Model):
    """Item tower over a fixed catalogue, query tower over pooled state."""

    def __init__(
        self,
        item_tower: ItemTower,
        query_tower: QueryTower,
        catalog_features: Mapping[str, np.ndarray],
        positive_probability: np.ndarray,
        temperature: float | None = None,
    ):
        super().__init__()
        self.item_tower = item_tower
        self.query_tower = query_tower
        self._catalog = {k: tf.constant(v) for k, v in catalog_features.items()}
        self._probability = tf.constant(positive_probability, dtype=tf.float32)
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)

    def embed_rows(self, rows: tf.Tensor) -> tf.Tensor:
        """Item embeddings of catalogue rows ``[N]`` → ``[N, D]``."""
        return self.item_tower({k: tf.gather(v, rows) for k, v in self._catalog.items()})

    def catalog_embeddings(self, batch_size: int = 8192) -> np.ndarray:
        """``[catalogue size, D]`` float32: the exported item table."""
        n = int(self._catalog["item_index"].shape[0])
        parts = [
            self.embed_rows(tf.range(start, min(start + batch_size, n))).numpy()
            for start in range(0, n, batch_size)
        ]
        return np.concatenate(parts).astype(np.float32)

    def _embed_batch(self, batch: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        positive = tf.cast(batch[POSITIVE], tf.int32)
        history = tf.cast(batch[HISTORY_INDEX], tf.int32)
        rows = tf.concat([positive, tf.reshape(history, [-1])], axis=0)
        unique, where = tf.unique(rows)
        embedded = tf.gather(self.embed_rows(unique), where)
        n = tf.shape(positive)[0]
        history_emb = tf.reshape(embedded[n:], [n, tf.shape(history)[1], -1])
        pooled = tf.einsum("bhl,bld->bhd", batch[HISTORY_COEF], history_emb)
        return embedded[:n], pooled

    def query(self, batch: Mapping[str, tf.Tensor], pooled: tf.Tensor) -> tf.Tensor:
        inputs = {name: batch[name] for name in QUERY_SCALARS}
        for h, name in enumerate(QUERY_EMBEDDINGS):
            inputs[name] = pooled[:, h, :]
        return self.query_tower(inputs)

    def compute_loss(self, batch: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        positive_emb, pooled = self._embed_batch(batch)
        queries = self.query(batch, pooled)
        positive = tf.cast(batch[POSITIVE], tf.int32)
        return self.task(
            queries,
            positive_emb,
            candidate_sampling_probability=tf.gather(self._probability, positive),
            candidate_ids=positive,
            compute_metrics=False,
            compute_batch_metrics=False,
        )


def positive_probability(positive_rows: np.ndarray, n_items: int) -> np.ndarray:
    """Share of training positives per catalogue row (smoothed: never 0)."""
    counts = np.bincount(positive_rows, minlength=n_items).astype(np.float64) + 1.0
    return (counts / counts.sum()).astype(np.float32)


def train_retrieval(
    model: TwoTowerModel,
    arrays: Mapping[str, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    verbose: int | None = None,
) -> tf.keras.callbacks.History:
    """Fit on ``arrays`` (``POSITIVE``, ``HISTORY_*`` and the query scalars); ``verbose``
    None: ``models.fit_verbosity()``."""
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
    verbose = fit_verbosity() if verbose is None else verbose
    n = len(arrays[POSITIVE])
    data = (
        tf.data.Dataset.from_tensor_slices(dict(arrays))
        .shuffle(n, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=n >= batch_size)
        .prefetch(2)
    )
    return model.fit(data, epochs=epochs, verbose=verbose)


def query_embeddings(
    query_tower: QueryTower, inputs: Mapping[str, np.ndarray], batch_size: int = 8192
) -> np.ndarray:
    """``[B, D]`` query embeddings of query-tower inputs (NumPy in, NumPy out)."""
    n = len(next(iter(inputs.values())))
    parts = []
    for start in range(0, n, batch_size):
        chunk = {k: tf.constant(v[start : start + batch_size]) for k, v in inputs.items()}
        parts.append(query_tower(chunk).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, query_tower.dim), np.float32)


def pooled_inputs(
    scalars: Mapping[str, np.ndarray],
    history_index: np.ndarray,
    history_coef: np.ndarray,
    table: np.ndarray,
) -> dict[str, np.ndarray]:
    """Query-tower inputs pooled over a fixed item table, as the pipeline does online."""
    pooled = np.zeros((len(history_index), history_coef.shape[1], table.shape[1]), np.float32)
    for start in range(0, len(history_index), 4096):
        part = slice(start, start + 4096)
        pooled[part] = np.einsum("bhl,bld->bhd", history_coef[part], table[history_index[part]])
    return with_pooled({k: scalars[k] for k in QUERY_SCALARS}, pooled)
