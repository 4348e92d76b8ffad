"""Ranker: TFRS deep & cross network with two heads (engagement probability, expected reward).

Inputs are user_realtime and item_realtime feature names plus the item's table
embedding (``inputs.RANKER_INPUTS``); derived features (log counts, per-exposure
rates, the Beta mean, user·item dot products and element-wise products) are
computed inside the model, so the serving signature takes the stored values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from feature_repo import features as f
from models import fit_verbosity
from models.inputs import ITEM_EMBEDDING
from models.towers import user_scalars

ENGAGED = "engaged"
REWARD = "reward"
LOGIT = "engagement_logit"
EXPECTED_REWARD = "expected_reward"


def _f(inputs: Mapping[str, tf.Tensor], name: str) -> tf.Tensor:
    return tf.cast(inputs[name], tf.float32)


def _log1p(x: tf.Tensor) -> tf.Tensor:
    return tf.math.log1p(tf.maximum(x, 0.0))


def item_scalars(inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """``[B, 10]`` item statistics on comparable scales."""
    imp_s, imp_l = _f(inputs, f.ITEM_IMPRESSIONS_SHORT), _f(inputs, f.ITEM_IMPRESSIONS_LONG)
    eng_s, eng_l = _f(inputs, f.ITEM_ENGAGEMENTS_SHORT), _f(inputs, f.ITEM_ENGAGEMENTS_LONG)
    alpha, beta = _f(inputs, f.ITEM_BETA_ALPHA), _f(inputs, f.ITEM_BETA_BETA)
    columns = [
        _log1p(_f(inputs, f.ITEM_EVENT_COUNT)),
        _log1p(imp_s),
        _log1p(imp_l),
        _log1p(eng_s),
        _log1p(eng_l),
        _f(inputs, f.ITEM_REWARD_SUM_SHORT) / (imp_s + 1.0),
        _f(inputs, f.ITEM_REWARD_SUM_LONG) / (imp_l + 1.0),
        eng_l / (imp_l + 1.0),
        tf.math.divide_no_nan(alpha, alpha + beta),
        tf.math.log(tf.maximum(_f(inputs, f.ITEM_TRENDING), 1e-6)),
    ]
    return tf.stack(columns, axis=1)


def embedding_features(inputs: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """(dots ``[B, 2]``, embeddings and products ``[B, 5D]``)."""
    short, long = _f(inputs, f.USER_EMB_SHORT), _f(inputs, f.USER_EMB_LONG)
    item = _f(inputs, ITEM_EMBEDDING)
    dots = tf.stack([tf.reduce_sum(short * item, 1), tf.reduce_sum(long * item, 1)], axis=1)
    return dots, tf.concat([short, long, item, short * item, long * item], axis=1)


def dense_features(inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """The scalar block that gets normalised: user scalars, item scalars, dots."""
    dots, _ = embedding_features(inputs)
    return tf.concat([user_scalars(inputs), item_scalars(inputs), dots], axis=1)


class RankerModel(tfrs.Model):
    """``Cross`` layers over [normalised scalars, embeddings] → MLP → two heads."""

    def __init__(
        self,
        cross_layers: int = 2,
        projection_dim: int = 32,
        hidden: Sequence[int] = (128, 64),
        reward_weight: float = 1.0,
    ):
        super().__init__()
        self.normalize = tf.keras.layers.Normalization(axis=-1, name="normalize")
        self.cross = [
            tfrs.layers.dcn.Cross(projection_dim=projection_dim, name=f"cross_{i}")
            for i in range(cross_layers)
        ]
        self.mlp = [
            tf.keras.layers.Dense(units, activation="relu", name=f"dense_{i}")
            for i, units in enumerate(hidden)
        ]
        self.engagement_head = tf.keras.layers.Dense(1, name="engagement")
        self.reward_head = tf.keras.layers.Dense(1, name="reward")
        self.engagement_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True)
        )
        self.reward_task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError())
        self.reward_weight = reward_weight

    def adapt(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Fit the normalisation of the scalar block on training inputs."""
        tensors = {k: tf.constant(v) for k, v in inputs.items()}
        self.normalize.adapt(dense_features(tensors).numpy())

    def call(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        _, embeddings = embedding_features(inputs)
        x0 = tf.concat([self.normalize(dense_features(inputs)), embeddings], axis=1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        for layer in self.mlp:
            x = layer(x)
        return {
            LOGIT: tf.squeeze(self.engagement_head(x), axis=1),
            EXPECTED_REWARD: tf.squeeze(self.reward_head(x), axis=1),
        }

    def compute_loss(self, batch: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        outputs = self(batch, training=training)
        engagement = self.engagement_task(
            labels=tf.cast(batch[ENGAGED], tf.float32),
            predictions=outputs[LOGIT],
            compute_metrics=False,
        )
        reward = self.reward_task(
            labels=tf.cast(batch[REWARD], tf.float32),
            predictions=outputs[EXPECTED_REWARD],
            compute_metrics=False,
        )
        return engagement + self.reward_weight * reward


def train_ranker(
    model: RankerModel,
    arrays: Mapping[str, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    verbose: int | None = None,
) -> tf.keras.callbacks.History:
    """Fit on ranker inputs plus ``ENGAGED`` and ``REWARD`` labels; ``verbose`` None:
    ``models.fit_verbosity()``."""
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
    verbose = fit_verbosity() if verbose is None else verbose
    return model.fit(dataset(arrays, batch_size, seed), epochs=epochs, verbose=verbose)


def dataset(arrays: Mapping[str, np.ndarray], batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled batches of ranker inputs and labels."""
    n = len(arrays[ENGAGED])
    return (
        tf.data.Dataset.from_tensor_slices(dict(arrays))
        .shuffle(n, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(2)
    )


def predict(model: RankerModel, inputs: Mapping[str, np.ndarray], batch_size: int = 8192):
    """(engagement probability ``[B]``, expected reward ``[B]``) as NumPy."""
    n = len(next(iter(inputs.values())))
    probs, rewards = [], []
    for start in range(0, n, batch_size):
        out = model({k: tf.constant(v[start : start + batch_size]) for k, v in inputs.items()})
        probs.append(tf.sigmoid(out[LOGIT]).numpy())
        rewards.append(out[EXPECTED_REWARD].numpy())
    if not probs:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(probs), np.concatenate(rewards)
