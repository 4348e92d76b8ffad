"""The two towers: items from id + content, queries from the rolling user state.

The query tower's inputs are user_realtime feature names (``QUERY_INPUTS``), so
the values the pipeline writes online feed it unchanged.
"""

from __future__ import annotations

import tensorflow as tf

from feature_repo import features as f

QUERY_EMBEDDINGS = (f.USER_EMB_SHORT, f.USER_EMB_LONG)
QUERY_COUNTS = (f.USER_EVENT_COUNT, f.USER_EVENTS_SHORT, f.USER_EVENTS_LONG)
QUERY_RATES = (
    f.USER_REWARD_RATE_SHORT,
    f.USER_REWARD_RATE_LONG,
    f.USER_ENGAGEMENT_RATE_SHORT,
    f.USER_ENGAGEMENT_RATE_LONG,
)
QUERY_SCALARS = QUERY_COUNTS + QUERY_RATES
QUERY_INPUTS = QUERY_EMBEDDINGS + QUERY_SCALARS


def _masked_mean(embedded: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean over the non-padding (id > 0) positions of ``[N, T, D]``; zeros if none."""
    mask = tf.cast(ids > 0, embedded.dtype)[..., None]
    total = tf.reduce_sum(embedded * mask, axis=1)
    return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def user_scalars(inputs: dict[str, tf.Tensor]) -> tf.Tensor:
    """``[B, 7]``: log1p of the counts, the rates as they are."""
    counts = [tf.math.log1p(tf.maximum(tf.cast(inputs[n], tf.float32), 0.0)) for n in QUERY_COUNTS]
    rates = [tf.cast(inputs[n], tf.float32) for n in QUERY_RATES]
    return tf.stack(counts + rates, axis=1)


class ItemTower(tf.keras.layers.Layer):
    """``item_features.encode_items`` rows → ``[N, dim]`` item embeddings."""

    def __init__(
        self,
        n_ids: int,
        n_genres: int,
        title_buckets: int,
        dim: int = f.EMBEDDING_DIM,
        hidden: int = 64,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n_ids, self.n_genres, self.title_buckets = n_ids, n_genres, title_buckets
        self.dim, self.hidden = dim, hidden
        self.id_embedding = tf.keras.layers.Embedding(n_ids + 1, dim, name="id_embedding")
        self.title_embedding = tf.keras.layers.Embedding(title_buckets, dim, name="title_embedding")
        self.genre_embedding = tf.keras.layers.Embedding(n_genres + 1, dim, name="genre_embedding")
        self.mlp = tf.keras.layers.Dense(hidden, activation="relu", name="hidden")
        self.out = tf.keras.layers.Dense(dim, name="out")

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        ids = features["item_index"]
        content = tf.concat(
            [
                _masked_mean(
                    self.title_embedding(features["title_tokens"]), features["title_tokens"]
                ),
                _masked_mean(self.genre_embedding(features["genres"]), features["genres"]),
                tf.cast(features["duration"], tf.float32),
            ],
            axis=1,
        )
        identity = self.id_embedding(ids)
        return identity + self.out(self.mlp(tf.concat([identity, content], axis=1)))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "n_ids": self.n_ids,
            "n_genres": self.n_genres,
            "title_buckets": self.title_buckets,
            "dim": self.dim,
            "hidden": self.hidden,
        }


class QueryTower(tf.keras.layers.Layer):
    """user_realtime features (``QUERY_INPUTS``) → ``[B, dim]`` query embeddings.

    A linear map of the pooled short/long embeddings (they already live in the
    item space) plus an MLP over embeddings, counts and rates.
    """

    def __init__(self, dim: int = f.EMBEDDING_DIM, hidden: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden = dim, hidden
        self.linear = tf.keras.layers.Dense(dim, use_bias=False, name="linear")
        self.mlp = tf.keras.layers.Dense(hidden, activation="relu", name="hidden")
        self.out = tf.keras.layers.Dense(dim, name="out")

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        pooled = tf.concat([tf.cast(inputs[n], tf.float32) for n in QUERY_EMBEDDINGS], axis=1)
        x = tf.concat([pooled, user_scalars(inputs)], axis=1)
        return self.linear(pooled) + self.out(self.mlp(x))

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "hidden": self.hidden}
