"""Train the new stack on a training period: the sequential retriever, then the
candidate ranker on the retriever's own candidates for held-out users.

One entry point for ``rtp train`` and ``rtp evaluate``. The ranker's users
(``candidate_training.ranker_users``: the newest training users) are held out of
the retriever's training, so the candidates and scores the ranker learns from
are out-of-sample, as they are for the users it will serve.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from models import sequential as sq
from models.blend import BLEND_CANDIDATES
from models.candidate_ranker import (
    CandidateRanker,
    CandidateRankerConfig,
    predict_scores,
    train_candidate_ranker,
)
from models.candidate_training import (
    RANKER_USER_SHARE,
    EventArrays,
    examples,
    order_ndcg,
    ranker_users,
)
from models.catalog import Catalog
from models.sequence_training import TrainedSequence, train_more, train_sequence, user_sequences
from models.unknown_offset import fit_unknown_offset

LOG = logging.getLogger(__name__)
FINISH_EPOCHS = 3
VALIDATION_LABELS = 5000  # validation interactions the two orders are compared on, at most


@dataclasses.dataclass
class TrainedStack:
    sequential: TrainedSequence
    ranker: CandidateRanker | None  # None: no held-out user had a usable example
    ranker_users: int
    ranker_examples: int
    seconds: float
    measured: dict = dataclasses.field(default_factory=dict)  # measure_orders' answer
    unknown_offset: dict = dataclasses.field(default_factory=dict)  # fit_unknown_offset's

    def score(self, features: np.ndarray) -> np.ndarray:
        assert self.ranker is not None
        return predict_scores(self.ranker, features)


def train_stack(
    catalog: Catalog,
    events: EventArrays,
    n_train: int,
    seq_config: sq.SequentialConfig,
    ranker_config: CandidateRankerConfig | None = None,
    share: float = RANKER_USER_SHARE,
    candidates: int = BLEND_CANDIDATES,
    finish_epochs: int = FINISH_EPOCHS,
    pretrained: np.ndarray | None = None,
    train_ranker: bool = True,
) -> TrainedStack:
    """Both models on the first ``n_train`` events (``share`` 0: no ranker, no held-out
    users). The retriever trains without the held-out users first; their events fit
    its offset for items without an id vector (``models.unknown_offset``) and train
    the ranker (unless ``train_ranker`` is false); then it trains ``finish_epochs``
    more on every user's events."""
    started = time.perf_counter()
    train = slice(0, n_train)
    held_out = ranker_users(events.user_idx[train], share) if share > 0 else np.zeros(0, np.int64)
    keep = ~np.isin(events.user_idx[train], held_out)
    sequences = user_sequences(
        events.user_idx[train][keep],
        events.item_idx[train][keep],
        events.ts_ms[train][keep],
        events.rewards[train][keep],
        events.interaction[train][keep],
    )
    sequential = train_sequence(catalog, sequences, seq_config, pretrained=pretrained)
    unknown = {}
    if len(held_out):
        offset, unknown = fit_unknown_offset(sequential, events, held_out, n_train)
        sequential = dataclasses.replace(sequential, unknown_offset=offset)
        LOG.info("sequential retriever: offset for items without an id vector %s", unknown)
    ranker, n_examples = None, 0
    if len(held_out) and train_ranker:
        ex = examples(events, held_out, sequential, candidates, seed=seq_config.seed, end=n_train)
        n_examples = int(ex.engaged.sum())
        if n_examples:
            config = ranker_config or CandidateRankerConfig(seed=seq_config.seed)
            ranker = train_candidate_ranker(ex.features, ex.engaged, ex.reward, config)
        LOG.info(
            "candidate ranker: %d held-out users, %d labels, %d rows",
            len(held_out),
            n_examples,
            len(ex.engaged),
        )
    if len(held_out) and finish_epochs > 0:
        # The ranker learnt from out-of-sample scores, as it will serve unseen users;
        # the served retriever should still know the newest users' events.
        everyone = user_sequences(
            events.user_idx[train],
            events.item_idx[train],
            events.ts_ms[train],
            events.rewards[train],
            events.interaction[train],
        )
        sequential = train_more(sequential, everyone, finish_epochs)
    return TrainedStack(
        sequential,
        ranker,
        len(held_out),
        n_examples,
        time.perf_counter() - started,
        unknown_offset=unknown,
    )


def measure_orders(
    stack: TrainedStack,
    events: EventArrays,
    n_train: int,
    candidates: int = BLEND_CANDIDATES,
    limit: int = VALIDATION_LABELS,
) -> dict[str, object]:
    """NDCG@10 of the blend's and the ranker's orders on the interactions after
    ``n_train`` (the first ``limit``), and the order the service should use."""
    positions = np.flatnonzero(events.interaction)
    positions = positions[positions >= n_train][:limit]
    if stack.ranker is None or not len(positions):
        return {"order": "blend", "ndcg_at_10": None, "validation_labels": 0}
    ndcg = order_ndcg(events, positions, stack.sequential, stack.score, candidates)
    order = "ranker" if ndcg["ranker"] > ndcg["blend"] else "blend"
    return {"order": order, "ndcg_at_10": ndcg, "labels": len(positions)}
