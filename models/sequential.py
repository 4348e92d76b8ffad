"""Sequential retriever: causal self-attention over the user's last N events (SASRec family).

Its input is exactly what the streaming pipeline keeps per user in
``user_realtime`` (``user_recent_items``, ``user_recent_ts_ms``,
``user_recent_rewards``: the last N events, newest first), so every streamed
event changes the next request's candidates with no retraining. Items embed
from id plus content (hashed title tokens, genres/topic, duration: the
``item_features`` encoding), and the output layer is the same item table, so an
item with few or no training interactions still gets a content vector that can
be retrieved. Next-item objective, full softmax over the catalogue.

Arrays here are oldest → newest left to right, left-padded with row ``-1``
(``history_arrays`` turns the pipeline's newest-first lists around). Catalogue
rows index ``content`` (``item_features.encode_items``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

PAD = -1
GAP_BUCKETS = 24  # log2 of the gap in seconds, 0 (same second) .. 23 (> ~97 days)
REWARD_BUCKETS = 9  # reward clipped to [-2, 2] in steps of 0.5


@dataclasses.dataclass(frozen=True)
class SequentialConfig:
    """Hyper-parameters; ``max_len`` is the pipeline's ``recent_events`` (N)."""

    max_len: int = 50
    dim: int = 64
    heads: int = 2
    blocks: int = 2
    dropout: float = 0.2
    epochs: int = 12
    # Larger logs get fewer epochs: at most this many gradient steps in all (about
    # 5 minutes on 2 cores for ml-latest-small's catalogue), so training time
    # stays bounded on a bigger MovieLens set. ml-latest-small takes 12 x 47 steps.
    max_steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 0.002
    seed: int = 0
    # Logs that record exposures as events of their own (short video: an impression,
    # reward 0) would teach "the next engaged item is the one just shown", which a
    # retriever asked before the showing cannot use: such events are not inputs.
    ignore_zero_reward: bool = False


def gap_buckets(ts_ms: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """``[B, L]`` bucket of the gap to the previous listed event: 0 for the same second
    (and for the first event or padding), else 1 + floor(log2(seconds)), capped."""
    ts = tf.cast(ts_ms, tf.float64)
    gap_s = tf.maximum(ts[:, 1:] - ts[:, :-1], 0.0) / 1000.0
    gap_s = tf.concat([tf.zeros_like(ts[:, :1]), gap_s], axis=1)
    previous = tf.concat([tf.zeros_like(valid[:, :1]), valid[:, :-1]], axis=1)
    log2 = tf.math.floor(tf.math.log(tf.maximum(gap_s, 1.0)) / np.log(2.0))
    buckets = tf.clip_by_value(tf.where(gap_s >= 1.0, 1.0 + log2, 0.0), 0.0, GAP_BUCKETS - 1.0)
    return tf.where(tf.logical_and(valid, previous), tf.cast(buckets, tf.int32), 0)


def reward_buckets(rewards: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Reward clipped to [-2, 2] in steps of 0.5 → 0..8 (0 for padding too)."""
    r = tf.clip_by_value(tf.cast(rewards, tf.float32), -2.0, 2.0)
    return tf.where(valid, tf.cast(tf.round((r + 2.0) * 2.0), tf.int32), 0)


class ItemEncoder(tf.keras.layers.Layer):
    """Catalogue rows → ``[.., dim]``: id embedding + a projection of content."""

    def __init__(
        self,
        content: Mapping[str, np.ndarray],
        n_ids: int,
        n_genres: int,
        title_buckets: int,
        dim: int,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._content = {k: tf.constant(v) for k, v in content.items()}
        self.dim = dim
        self.id_embedding = tf.keras.layers.Embedding(n_ids + 1, dim, name="id_embedding")
        self.title_embedding = tf.keras.layers.Embedding(title_buckets, dim, name="title")
        self.genre_embedding = tf.keras.layers.Embedding(n_genres + 1, dim, name="genre")
        self.content_out = tf.keras.layers.Dense(dim, name="content_out")

    @staticmethod
    def _mean(embedded: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(ids > 0, embedded.dtype)[..., None]
        return tf.reduce_sum(embedded * mask, -2) / tf.maximum(tf.reduce_sum(mask, -2), 1.0)

    def known(self) -> tf.Tensor:
        """``[catalogue]`` bool: the row has an id vector (a training event targeted it)."""
        return self._content["item_index"] > 0

    def all_items(self) -> tf.Tensor:
        """``[catalogue, dim]``: every row's vector (the output table). Rows without
        an id vector share the out-of-vocabulary id row 0."""
        c = self._content
        content = tf.concat(
            [
                self._mean(self.title_embedding(c["title_tokens"]), c["title_tokens"]),
                self._mean(self.genre_embedding(c["genres"]), c["genres"]),
                c["duration"],
            ],
            axis=1,
        )
        return self.id_embedding(c["item_index"]) + self.content_out(content)


class SequentialRetriever(tf.keras.Model):
    """Right-aligned history (rows, event times, rewards) → a query state per position."""

    def __init__(self, encoder: ItemEncoder, config: SequentialConfig, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.config = encoder, config
        d = config.dim
        self.position = tf.keras.layers.Embedding(config.max_len, d, name="position")
        self.gap = tf.keras.layers.Embedding(GAP_BUCKETS, d, name="gap")
        self.reward = tf.keras.layers.Embedding(REWARD_BUCKETS, d, name="reward")
        self.attention = [
            tf.keras.layers.MultiHeadAttention(
                config.heads, d // config.heads, dropout=config.dropout
            )
            for _ in range(config.blocks)
        ]
        self.ffn = [
            tf.keras.Sequential(
                [tf.keras.layers.Dense(d, activation="gelu"), tf.keras.layers.Dense(d)]
            )
            for _ in range(config.blocks)
        ]
        self.norm1 = [
            tf.keras.layers.LayerNormalization(epsilon=1e-6) for _ in range(config.blocks)
        ]
        self.norm2 = [
            tf.keras.layers.LayerNormalization(epsilon=1e-6) for _ in range(config.blocks)
        ]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.drop = tf.keras.layers.Dropout(config.dropout)

    def encode(
        self,
        rows: tf.Tensor,
        ts_ms: tf.Tensor,
        rewards: tf.Tensor,
        table: tf.Tensor,
        training: bool = False,
    ) -> tf.Tensor:
        """``[B, L]`` right-aligned history (row -1 = padding, event times in ms,
        rewards) → ``[B, L, dim]`` hidden states (causal)."""
        rows = tf.cast(rows, tf.int32)
        valid = rows >= 0
        if self.config.ignore_zero_reward:
            valid = tf.logical_and(valid, tf.cast(rewards, tf.float32) != 0.0)
        items = tf.gather(table, tf.maximum(rows, 0))
        length = tf.shape(rows)[1]
        x = (
            items
            + self.gap(gap_buckets(ts_ms, valid))
            + self.reward(reward_buckets(rewards, valid))
            + self.position(tf.range(length))[None]
        )
        x = self.drop(x * tf.cast(valid, x.dtype)[..., None], training=training)
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
        mask = tf.logical_and(causal[None], valid[:, None, :])
        for attn, ffn, n1, n2 in zip(self.attention, self.ffn, self.norm1, self.norm2, strict=True):
            h = n1(x)
            x = x + attn(h, h, attention_mask=mask, training=training)
            x = x + self.drop(ffn(n2(x)), training=training)
        return self.final_norm(x)

    def query(self, rows: tf.Tensor, ts_ms: tf.Tensor, rewards: tf.Tensor) -> tf.Tensor:
        """``[B, dim]``: the newest position's state."""
        return self.encode(rows, ts_ms, rewards, self.encoder.all_items())[:, -1, :]

    def train_step(self, data):
        rows, ts_ms, rewards, targets = data
        with tf.GradientTape() as tape:
            table = self.encoder.all_items()
            hidden = self.encode(rows, ts_ms, rewards, table, training=True)
            # An item without an id vector is no target: its label would move every
            # such item together (their shared vector), which the fitted offset
            # (``models.unknown_offset``) does instead, out of sample.
            known = tf.gather(self.encoder.known(), tf.maximum(targets, 0))
            where = tf.where(tf.logical_and(targets >= 0, known))
            logits = tf.matmul(tf.gather_nd(hidden, where), table, transpose_b=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=tf.gather_nd(targets, where), logits=logits
                )
            )
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return {"loss": loss}


def training_windows(
    sequences: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], max_len: int
) -> tuple[np.ndarray, ...]:
    """Per-user ``(rows, ts_ms, rewards, is_target)`` in time order → training windows.

    Position t's label is the row of event t+1 when that event is a target
    interaction, else -1 (no loss). Windows of ``max_len`` inputs, right-aligned,
    overlapping by half so every event is seen with a long left context.
    """
    out_rows, out_ts, out_rw, out_tg = [], [], [], []
    stride = max(1, max_len // 2)
    for rows, ts, rewards, is_target in sequences:
        n = len(rows)
        if n < 2:
            continue
        labels = np.where(is_target[1:], rows[1:], PAD)
        ends = list(range(n - 1, 0, -stride))  # exclusive end of the input window
        for end in ends:
            start = max(0, end - max_len)
            width = end - start
            r = np.full(max_len, PAD, np.int64)
            t = np.zeros(max_len, np.int64)
            w = np.zeros(max_len, np.float32)
            g = np.full(max_len, PAD, np.int64)
            r[-width:], t[-width:], w[-width:] = rows[start:end], ts[start:end], rewards[start:end]
            g[-width:] = labels[start:end]
            out_rows.append(r), out_ts.append(t), out_rw.append(w), out_tg.append(g)
            if start == 0:
                break
    return (np.array(out_rows), np.array(out_ts), np.array(out_rw), np.array(out_tg))


def fit(
    model: SequentialRetriever,
    windows: tuple[np.ndarray, ...],
    config: SequentialConfig,
    verbose: int = 0,
) -> list[float]:
    """Train on ``training_windows`` output; returns the loss per epoch."""
    rows, ts, rewards, targets = windows
    data = (
        tf.data.Dataset.from_tensor_slices(
            (
                rows.astype(np.int32),
                ts.astype(np.int64),
                rewards.astype(np.float32),
                targets.astype(np.int32),
            )
        )
        .shuffle(len(rows), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(2)
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    history = model.fit(data, epochs=epochs_within(len(rows), config), verbose=verbose)
    return [float(x) for x in history.history["loss"]]


def epochs_within(n_windows: int, config: SequentialConfig) -> int:
    """``config.epochs``, fewer if they would take more than ``config.max_steps`` steps."""
    steps_per_epoch = max(1, -(-n_windows // config.batch_size))
    return max(1, min(config.epochs, config.max_steps // steps_per_epoch))
