"""Train the sequential retriever on the training period of an event log.

One entry point for ``rtp evaluate`` and ``rtp train``: per-user event
sequences (catalogue rows, event times in ms, rewards, whether the event is an
interaction the model should predict) in time order → a trained
``SequentialRetriever`` wrapped as ``TrainedSequence`` (NumPy in, NumPy out).
Reproducible under ``seed`` (``tf.keras.utils.set_random_seed`` and op determinism).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import tensorflow as tf

from models import sequential as sq
from models.catalog import Catalog
from models.item_features import ItemVocab, encode_items

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainedSequence:
    """A trained model over a fixed catalogue order (``SequenceScorer``)."""

    model: sq.SequentialRetriever
    config: sq.SequentialConfig
    vocab: ItemVocab
    losses: list[float]
    seconds: float
    # Added to the logits of items without an id vector (``models.unknown_offset``).
    unknown_offset: float = 0.0

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def item_bias(self) -> np.ndarray:
        """``[catalogue]`` float32: ``unknown_offset`` for rows without an id vector."""
        unknown = ~self.model.encoder.known().numpy()
        return (self.unknown_offset * unknown).astype(np.float32)

    def item_table(self) -> np.ndarray:
        """``[catalogue, dim + 1]``: item vectors and their bias as the last column, so
        that ``table @ query`` (``queries`` ends in a 1) is the logit."""
        table = self.model.encoder.all_items().numpy()
        return np.concatenate([table, self.item_bias()[:, None]], axis=1)

    def queries(self, rows: np.ndarray, ts_ms: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        """``[B, dim + 1]``: the newest position's state, then a 1 (``item_table``)."""
        table = self.model.encoder.all_items()
        out = []
        for start in range(0, len(rows), 512):
            part = slice(start, start + 512)
            hidden = self.model.encode(
                tf.constant(rows[part], tf.int32),
                tf.constant(ts_ms[part], tf.int64),
                tf.constant(rewards[part], tf.float32),
                table,
            )
            out.append(hidden[:, -1, :].numpy())
        hidden = np.concatenate(out) if out else np.zeros((0, self.config.dim), np.float32)
        return np.concatenate([hidden, np.ones((len(hidden), 1), hidden.dtype)], axis=1)


def user_sequences(
    user_idx: np.ndarray,
    item_rows: np.ndarray,
    ts_ms: np.ndarray,
    rewards: np.ndarray,
    is_target: np.ndarray,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Events in time order → one ``(rows, ts_ms, rewards, is_target)`` per user."""
    order = np.argsort(user_idx, kind="stable")
    bounds = np.flatnonzero(np.diff(user_idx[order])) + 1
    return [
        (item_rows[part], ts_ms[part], rewards[part].astype(np.float32), is_target[part])
        for part in np.split(order, bounds)
        if len(part)
    ]


def train_sequence(
    catalog: Catalog,
    sequences: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    config: sq.SequentialConfig,
    verbose: int = 0,
    pretrained: np.ndarray | None = None,
) -> TrainedSequence:
    """Fit on the given sequences; the id vocabulary is the items they target.
    ``pretrained``: ``[catalogue, D]`` content vectors the items also embed from
    (``models.content_items``)."""
    started = time.perf_counter()
    tf.keras.utils.set_random_seed(config.seed)
    targets = {int(r) for rows, _, _, is_target in sequences for r in rows[is_target].tolist()}
    vocab = ItemVocab.fit([catalog.item_ids[r] for r in sorted(targets)], catalog)
    content = encode_items(catalog, vocab)
    sizes = (content, len(vocab.item_ids), len(vocab.genres), vocab.title_buckets, config.dim)
    if pretrained is None:
        encoder = sq.ItemEncoder(*sizes)
    else:
        from models.content_items import ContentItemEncoder

        encoder = ContentItemEncoder(*sizes, pretrained=pretrained)
    model = sq.SequentialRetriever(encoder, config)
    windows = sq.training_windows(sequences, config.max_len)
    LOG.info(
        "sequential retriever: %d training windows of %d events", len(windows[0]), config.max_len
    )
    losses = sq.fit(model, windows, config, verbose=verbose)
    seconds = time.perf_counter() - started
    LOG.info(
        "sequential retriever: trained in %.0f s, loss %s", seconds, [round(x, 3) for x in losses]
    )
    return TrainedSequence(model, config, vocab, losses, seconds)


def train_more(
    trained: TrainedSequence,
    sequences: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    epochs: int,
    verbose: int = 0,
) -> TrainedSequence:
    """Continue training ``trained`` on ``sequences`` for ``epochs`` more epochs (the
    same vocabulary: items new to these sequences keep their content vector)."""
    if epochs < 1:
        return trained
    started = time.perf_counter()
    config = dataclasses.replace(trained.config, epochs=epochs)
    windows = sq.training_windows(sequences, config.max_len)
    losses = sq.fit(trained.model, windows, config, verbose=verbose)
    seconds = time.perf_counter() - started
    LOG.info(
        "sequential retriever: %d more epochs in %.0f s, loss %s",
        len(losses),
        seconds,
        [round(x, 3) for x in losses],
    )
    return dataclasses.replace(
        trained, losses=trained.losses + losses, seconds=trained.seconds + seconds
    )
