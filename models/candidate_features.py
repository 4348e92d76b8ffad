"""What the candidate ranker sees of a candidate: one implementation for training,
the replay and the service (NumPy only).

The service's candidates are the union of the sequential retriever's and the
co-engagement source's top rows (``models.blend``); each row is described by the
sequential log-probability and rank, the co-engagement cosine and rank, the
item's accepted event count and the user's (``FEATURES``).
"""

from __future__ import annotations

import numpy as np

FEATURES = (
    "seq_log_prob",  # log P_seq(item), floor for items outside the sequential top rows
    "seq_gap",  # log P_seq(best candidate) - log P_seq(item)
    "seq_present",  # 1 if among the sequential source's top rows
    "seq_rank",  # log1p(rank among them), log1p(candidates) when absent
    "co_cosine",  # co-engagement cosine with the user's recent items
    "co_relative",  # cosine / the best candidate's cosine
    "co_present",
    "co_rank",
    "item_log_events",  # log1p(accepted events of the item so far)
    "user_log_events",  # log1p(the user's accepted events so far: user_event_count)
)
LOG_PROB_FLOOR = -20.0


def candidate_features(
    seq_rows: np.ndarray,
    seq_log_prob: np.ndarray,
    co_rows: np.ndarray,
    co_scores: np.ndarray,
    item_events: np.ndarray,
    user_events: float,
    candidates: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, features [n, len(FEATURES)])`` of the union of both sources' rows (sorted).

    ``seq_rows``/``seq_log_prob``: the sequential source's rows, best first, and their
    log-probabilities; ``co_rows``: the co-engagement source's rows, best first;
    ``co_scores`` and ``item_events`` cover every catalogue row; ``candidates``: how
    many rows each source offers (the rank given to an absent row).
    """
    seq_rows = np.asarray(seq_rows, np.int64)
    co_rows = np.asarray(co_rows, np.int64)
    rows = np.union1d(seq_rows, co_rows)
    n = len(rows)
    absent = np.log1p(float(candidates))
    log_prob = np.full(n, LOG_PROB_FLOOR)
    seq_rank = np.full(n, absent)
    seq_at = np.searchsorted(rows, seq_rows)
    if len(seq_rows):
        log_prob[seq_at] = np.maximum(np.asarray(seq_log_prob, np.float64), LOG_PROB_FLOOR)
        seq_rank[seq_at] = np.log1p(np.arange(len(seq_rows), dtype=np.float64))
    best = log_prob.max() if n else 0.0
    co_rank = np.full(n, absent)
    if len(co_rows):
        co_rank[np.searchsorted(rows, co_rows)] = np.log1p(
            np.arange(len(co_rows), dtype=np.float64)
        )
    cosine = np.asarray(co_scores, np.float64)[rows]
    top_cosine = cosine.max() if n else 0.0
    columns = [
        log_prob,
        best - log_prob,
        np.isin(rows, seq_rows).astype(np.float64),
        seq_rank,
        cosine,
        cosine / top_cosine if top_cosine > 0 else np.zeros(n),
        np.isin(rows, co_rows).astype(np.float64),
        co_rank,
        np.log1p(np.maximum(np.asarray(item_events, np.float64)[rows], 0.0)),
        np.full(n, np.log1p(max(float(user_events), 0.0))),
    ]
    return rows, np.stack(columns, axis=1).astype(np.float32) if n else np.zeros(
        (0, len(FEATURES)), np.float32
    )


def blend_scores(features: np.ndarray, weight: float) -> np.ndarray:
    """``models.blend``'s order from the same rows: cosine + weight · P_seq (the
    stand-in ranker of a version trained without one)."""
    x = np.asarray(features, np.float64)
    seq = np.where(
        x[:, FEATURES.index("seq_present")] > 0, np.exp(x[:, FEATURES.index("seq_log_prob")]), 0.0
    )
    return x[:, FEATURES.index("co_cosine")] + weight * seq
