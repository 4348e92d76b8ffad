"""A ranker trained for what it ranks: the new stack's candidates, scored with two heads.

The service's candidates are the union of two sources' top rows (the sequential
retriever's and the co-engagement source's, ``models.blend``). This ranker sees
each candidate through what the service has at request time: the sequential
model's log-probability and rank, the co-engagement cosine and rank, the item's
accepted event count and the user's history length (``candidate_features``, one
implementation for training, the replay and the service). It is trained on the
same candidates the retriever produced for training-period events (``models.
candidate_training``), the interacted item against the retriever's own hard
negatives, never anything from after the label.

Two heads, as the product's ranker: ``P(engage)`` (binary cross-entropy, the
interacted candidate against the others) and ``E[reward | engage]`` (squared
error on the interacted candidates only). One score orders the candidates:

    score = log P(engage) + reward_weight · E[reward | engage]

(``reward_weight`` 0 orders by engagement alone; the evaluation measures it).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models.candidate_features import FEATURES  # noqa: F401  (the model's input columns)

ENGAGED = "engaged"
REWARD = "reward"
INPUT = "candidate_features"
LOGIT = "engagement_logit"
EXPECTED_REWARD = "expected_reward"


@dataclasses.dataclass(frozen=True)
class CandidateRankerConfig:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 4
    batch_size: int = 1024
    learning_rate: float = 0.003
    reward_weight: float = 0.0  # of E[reward | engage] in the score (see the module doc)
    reward_loss_weight: float = 0.5
    seed: int = 0


class CandidateRanker(tfrs.Model):
    """Normalised candidate features → MLP → ``P(engage)`` logit and ``E[reward|engage]``."""

    def __init__(self, config: CandidateRankerConfig | None = None):
        super().__init__()
        self.config = config or CandidateRankerConfig()
        self.normalize = tf.keras.layers.Normalization(axis=-1, name="normalize")
        self.mlp = [
            tf.keras.layers.Dense(units, activation="relu", name=f"dense_{i}")
            for i, units in enumerate(self.config.hidden)
        ]
        self.engagement_head = tf.keras.layers.Dense(1, name="engagement")
        self.reward_head = tf.keras.layers.Dense(1, name="reward")
        self.engagement_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True)
        )

    def call(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        x = self.normalize(tf.cast(features, tf.float32))
        for layer in self.mlp:
            x = layer(x)
        return {
            LOGIT: tf.squeeze(self.engagement_head(x), axis=1),
            EXPECTED_REWARD: tf.squeeze(self.reward_head(x), axis=1),
        }

    def score(self, features: tf.Tensor) -> tf.Tensor:
        """``log P(engage) + reward_weight · E[reward | engage]`` per candidate."""
        out = self(features)
        return tf.math.log_sigmoid(out[LOGIT]) + self.config.reward_weight * out[EXPECTED_REWARD]

    def compute_loss(self, batch: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        out = self(batch[INPUT], training=training)
        engaged = tf.cast(batch[ENGAGED], tf.float32)
        engagement = self.engagement_task(
            labels=engaged, predictions=out[LOGIT], compute_metrics=False
        )
        squared = tf.square(tf.cast(batch[REWARD], tf.float32) - out[EXPECTED_REWARD])
        reward = tf.math.divide_no_nan(tf.reduce_sum(squared * engaged), tf.reduce_sum(engaged))
        return engagement + self.config.reward_loss_weight * reward


def train_candidate_ranker(
    features: np.ndarray,
    engaged: np.ndarray,
    reward: np.ndarray,
    config: CandidateRankerConfig | None = None,
    verbose: int = 0,
) -> CandidateRanker:
    """Fit on ``candidate_training.examples`` output (rows of ``FEATURES``)."""
    config = config or CandidateRankerConfig()
    tf.keras.utils.set_random_seed(config.seed)
    model = CandidateRanker(config)
    model.normalize.adapt(features.astype(np.float32))
    data = (
        tf.data.Dataset.from_tensor_slices(
            {
                INPUT: features.astype(np.float32),
                ENGAGED: engaged.astype(np.float32),
                REWARD: reward.astype(np.float32),
            }
        )
        .shuffle(len(features), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(2)
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    model.fit(data, epochs=config.epochs, verbose=verbose)
    return model


_SCORE_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def predict_scores(model: CandidateRanker, features: np.ndarray) -> np.ndarray:
    """The ordering score of each row (NumPy in and out; one traced graph per model,
    as the replay calls it once per event)."""
    if not len(features):
        return np.zeros(0, np.float64)
    score = _SCORE_GRAPHS.get(model)
    if score is None:
        spec = tf.TensorSpec([None, features.shape[1]], tf.float32)
        score = _SCORE_GRAPHS[model] = tf.function(model.score, input_signature=[spec])
    return score(tf.constant(features, tf.float32)).numpy().astype(np.float64)
