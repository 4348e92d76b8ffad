"""Export of the sequential retriever for TF Serving and the in-process service.

``sequential/<version>/`` is a SavedModel whose signatures take the pipeline's
own ``user_realtime`` lists, exactly as the online store holds them (newest
first, any length; longer lists are cut to the model's N, shorter ones padded):

- ``serving_default``: ``user_recent_items`` string ``[-1, -1]``,
  ``user_recent_ts_ms`` int64 ``[-1, -1]``, ``user_recent_rewards`` float32
  ``[-1, -1]`` → ``scores`` float32 ``[-1, K]`` and ``item_ids`` string ``[-1, K]``,
  best first, over the full catalogue (items the user has seen are not removed).
- ``candidate_rows``: the same inputs → ``scores`` and ``item_rows`` int32, rows of
  the version's item table (``item_embeddings/<version>``) instead of id strings.
- ``query``: the same inputs → ``query`` float32 ``[-1, d + 1]``, the vector whose
  inner products with the item table (each row's bias appended, ``output_table``)
  are the scores. With an ANN index (catalogues of at
  least ``ann_min_items``, ``models.ann``, written under ``assets.extra/ann/``) a
  client searches the index with it instead of calling the brute-force signatures.
- ``rank_candidates`` (when trained with a candidate ranker,
  ``models.candidate_ranker``): ``candidate_features`` float32 ``[-1, F]`` (the
  columns of ``models.candidate_features.FEATURES``) → ``score`` (the order),
  ``engagement_probability`` and ``expected_reward`` per candidate.

Ids unknown to the export (empty strings pad) count as padding. The item table is
computed once at export (id + content vectors), so a request costs one pass of
the attention blocks and one ``[d] × [catalogue, d]`` product.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow as tf

from beam_pipelines.console import verbose_requested
from feature_repo.features import USER_RECENT_ITEMS, USER_RECENT_REWARDS, USER_RECENT_TS_MS
from models import ann
from models.candidate_features import FEATURES
from models.candidate_ranker import EXPECTED_REWARD as RANKER_REWARD
from models.candidate_ranker import LOGIT
from models.sequential import SequentialRetriever

SEQUENTIAL = "sequential"
SEQUENCE_INPUTS = (USER_RECENT_ITEMS, USER_RECENT_TS_MS, USER_RECENT_REWARDS)
SCORES, ITEM_IDS, ITEM_ROWS = "scores", "item_ids", "item_rows"
MIN_K = 500  # top rows exported at least: the blend takes 200 after the recent 50 are dropped
LOG_NORMALIZER = "log_normalizer"  # logsumexp of all catalogue scores: P = exp(score - it)
ROWS_SIGNATURE = "candidate_rows"
QUERY_SIGNATURE, QUERY = "query", "query"
RANK_SIGNATURE = "rank_candidates"
CANDIDATE_FEATURES = "candidate_features"
SCORE, ENGAGEMENT_PROBABILITY, EXPECTED_REWARD = (
    "score",
    "engagement_probability",
    "expected_reward",
)


def input_signature() -> dict[str, tf.TensorSpec]:
    return {
        USER_RECENT_ITEMS: tf.TensorSpec([None, None], tf.string, name=USER_RECENT_ITEMS),
        USER_RECENT_TS_MS: tf.TensorSpec([None, None], tf.int64, name=USER_RECENT_TS_MS),
        USER_RECENT_REWARDS: tf.TensorSpec([None, None], tf.float32, name=USER_RECENT_REWARDS),
    }


def _right_aligned(values: tf.Tensor, max_len: int, pad) -> tf.Tensor:
    """Newest-first ``[B, n]`` → oldest-first ``[B, max_len]``, padding on the left."""
    values = values[:, :max_len]
    missing = max_len - tf.shape(values)[1]
    values = tf.pad(values, [[0, 0], [0, missing]], constant_values=pad)
    return tf.reverse(values, axis=[1])


class SequentialModule(tf.Module):
    """The trained model, the catalogue's id → row table and the exported item table."""

    def __init__(
        self,
        model: SequentialRetriever,
        item_ids: np.ndarray,
        k: int,
        version: int,
        ranker: tf.keras.Model | None = None,
        item_bias: np.ndarray | None = None,
        ann_min_items: int | None = None,
    ):
        """``item_bias``: ``[catalogue]`` added to the scores (``TrainedSequence.item_bias``;
        None: zeros). ``ann_min_items``: ``save`` also builds an ANN index when the
        catalogue has at least this many items (None: never)."""
        super().__init__()
        self.model = model
        self.ranker = ranker
        ids = tf.constant(np.asarray(item_ids).astype(str))
        self.item_ids = ids
        self.lookup = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(ids, tf.range(tf.size(ids), dtype=tf.int64)), -1
        )
        self.table = tf.Variable(model.encoder.all_items(), trainable=False, name="item_table")
        bias = np.zeros(len(item_ids), np.float32) if item_bias is None else item_bias
        self.item_bias = tf.Variable(
            np.asarray(bias, np.float32), trainable=False, name="item_bias"
        )
        self.k = int(min(k, len(item_ids)))
        self.max_len = int(model.config.max_len)
        self.with_ann = ann_min_items is not None and len(item_ids) >= ann_min_items
        self.model_version = tf.Variable(str(version), trainable=False, name="model_version")
        specs = input_signature()
        self.serve = tf.function(self._serve, input_signature=[specs])
        self.rows = tf.function(self._rows, input_signature=[specs])
        self.query = tf.function(self._query, input_signature=[specs])
        if ranker is not None:
            width = len(FEATURES)
            spec = tf.TensorSpec([None, width], tf.float32, name=CANDIDATE_FEATURES)
            self.rank = tf.function(self._rank, input_signature=[spec])

    def _hidden(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """``[B, dim]``: the newest position's state."""
        items = _right_aligned(inputs[USER_RECENT_ITEMS], self.max_len, "")
        ts = _right_aligned(inputs[USER_RECENT_TS_MS], self.max_len, tf.constant(0, tf.int64))
        rewards = _right_aligned(inputs[USER_RECENT_REWARDS], self.max_len, 0.0)
        rows = self.lookup.lookup(items)
        return self.model.encode(rows, ts, rewards, self.table)[:, -1, :]

    def output_table(self) -> tf.Tensor:
        """``[catalogue, dim + 1]``: the item table, each row's bias as the last column,
        so that the scores are inner products with the ``query`` signature's vector
        (the state, then a 1). Built for the ANN index at save, not per request."""
        return tf.concat([self.table, self.item_bias[:, None]], axis=1)

    def _top(self, inputs: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        scores = tf.matmul(self._hidden(inputs), self.table, transpose_b=True) + self.item_bias
        values, rows = tf.math.top_k(scores, k=self.k)
        return values, rows, tf.reduce_logsumexp(scores, axis=1)

    def _serve(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        values, rows, normalizer = self._top(inputs)
        return {
            SCORES: values,
            ITEM_IDS: tf.gather(self.item_ids, rows),
            LOG_NORMALIZER: normalizer,
        }

    def _rows(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        values, rows, normalizer = self._top(inputs)
        return {SCORES: values, ITEM_ROWS: rows, LOG_NORMALIZER: normalizer}

    def _query(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        hidden = self._hidden(inputs)
        return {QUERY: tf.concat([hidden, tf.ones_like(hidden[:, :1])], axis=1)}

    def _rank(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self.ranker(features)
        return {
            SCORE: self.ranker.score(features),
            ENGAGEMENT_PROBABILITY: tf.sigmoid(out[LOGIT]),
            EXPECTED_REWARD: out[RANKER_REWARD],
        }

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        out = {
            "serving_default": self.serve.get_concrete_function(),
            ROWS_SIGNATURE: self.rows.get_concrete_function(),
            QUERY_SIGNATURE: self.query.get_concrete_function(),
        }
        if self.ranker is not None:
            out[RANK_SIGNATURE] = self.rank.get_concrete_function()
        return out


def warmup_batches(
    histories: list[Mapping[str, list]], sizes=(1, 8)
) -> list[dict[str, np.ndarray]]:
    """Warm-up requests: batches of the given sizes from real (newest-first) histories."""
    out = []
    for size in sizes:
        chosen = (histories * size)[:size] if histories else [{}] * size
        width = max(1, max(len(h.get(USER_RECENT_ITEMS) or []) for h in chosen))

        def column(name, dtype, pad, chosen=chosen, width=width):
            rows = [list(h.get(name) or [])[:width] for h in chosen]
            return np.array([r + [pad] * (width - len(r)) for r in rows], dtype=dtype)

        out.append(
            {
                USER_RECENT_ITEMS: column(USER_RECENT_ITEMS, object, ""),
                USER_RECENT_TS_MS: column(USER_RECENT_TS_MS, np.int64, 0),
                USER_RECENT_REWARDS: column(USER_RECENT_REWARDS, np.float32, 0.0),
            }
        )
    return out


class KerasMetadataNotes(logging.Filter):
    """Drops Keras's notes that a subclassed layer's Python config cannot be saved
    ("Skipping full serialization ...", "... non-serializable objects"): the contract
    is the exported signatures, which load without that config, so every export
    would print lines nobody can act on. Other TensorFlow warnings pass."""

    NOTES = (
        "Skipping full serialization of TF-Keras layer",
        "Model's `__init__()` arguments contain non-serializable objects",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOTES)


@contextlib.contextmanager
def keras_metadata_notes_dropped() -> Iterator[None]:
    """``KerasMetadataNotes`` on the ``tensorflow`` logger, unless verbose."""
    if verbose_requested():
        yield
        return
    logger, notes = logging.getLogger("tensorflow"), KerasMetadataNotes()
    logger.addFilter(notes)
    try:
        yield
    finally:
        logger.removeFilter(notes)


def save(module: SequentialModule, directory: pathlib.Path) -> None:
    """The SavedModel and, if ``module.with_ann``, its ANN index over the item table
    (``models.ann``: the same K as the brute-force signatures, so the same over-fetch)."""
    with keras_metadata_notes_dropped():
        tf.saved_model.save(module, str(directory), signatures=module.signatures())
    if module.with_ann:
        table = module.output_table().numpy()
        ann.build(table, module.k, probes=probe_queries(module)).write(directory)


def probe_queries(module: SequentialModule, users: int = 200, events: int = 10) -> np.ndarray:
    """Query vectors of ``users`` made-up histories (``events`` random catalogue items
    a minute apart, reward 1): the model's own queries for the index's calibration,
    closer to what it will be asked than rows of the item table."""
    rng = np.random.default_rng(0)
    ids = module.item_ids.numpy()
    items = ids[rng.integers(0, len(ids), (users, events))]
    ts = 1_700_000_000_000 - 60_000 * np.arange(events, dtype=np.int64)
    inputs = {
        USER_RECENT_ITEMS: tf.constant(items),
        USER_RECENT_TS_MS: tf.constant(np.tile(ts, (users, 1))),
        USER_RECENT_REWARDS: tf.ones((users, events), tf.float32),
    }
    return module.query(inputs)[QUERY].numpy()
