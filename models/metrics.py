"""Validation metrics: full-catalogue recall@K, AUC and RMSE (NumPy only).

Recall follows EVALUATION.md: every catalogue item is a candidate except the
items the user interacted with before the event; the rank of the target is the
number of other candidates scoring at least as high (ties count against the
target, so a constant scorer gets nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

Scorer = Callable[[slice], np.ndarray]


def target_ranks(
    scorer: Scorer, targets: np.ndarray, exclude: Sequence[np.ndarray], chunk: int = 2048
) -> np.ndarray:
    """0-based rank of each target; ``scorer(slice)`` gives ``[rows, N]`` scores."""
    ranks = np.zeros(len(targets), dtype=np.int64)
    for start in range(0, len(targets), chunk):
        part = slice(start, min(start + chunk, len(targets)))
        scores = np.array(scorer(part), dtype=np.float64, copy=True)
        rows = np.arange(scores.shape[0])
        target_scores = scores[rows, targets[part]]
        for r, excluded in enumerate(exclude[part]):
            if len(excluded):
                scores[r, excluded] = -np.inf
        scores[rows, targets[part]] = -np.inf
        ranks[part] = np.sum(scores >= target_scores[:, None], axis=1)
    return ranks


def recall_at(ranks: np.ndarray, ks: Sequence[int] = (10, 50, 100)) -> dict[str, float]:
    if len(ranks) == 0:
        return {f"recall@{k}": float("nan") for k in ks}
    return {f"recall@{k}": float(np.mean(ranks < k)) for k in ks}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (Mann–Whitney, ties averaged); NaN with a single class."""
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def rmse(targets: np.ndarray, predictions: np.ndarray) -> float:
    diff = np.asarray(targets, np.float64) - np.asarray(predictions, np.float64)
    return float(np.sqrt(np.mean(diff**2))) if len(diff) else float("nan")


def seen_before(
    user_ids: np.ndarray,
    item_rows: np.ndarray,
    timestamps_ms: np.ndarray,
    query_users: np.ndarray,
    query_ms: np.ndarray,
) -> list[np.ndarray]:
    """For each query, the catalogue rows the user interacted with strictly before ``query_ms``."""
    history: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    frame = pd.DataFrame({"u": user_ids, "i": item_rows, "t": timestamps_ms}).sort_values(
        ["u", "t"], kind="stable"
    )
    for user, group in frame.groupby("u", sort=False):
        history[user] = (group["t"].to_numpy(), group["i"].to_numpy())
    out = []
    empty = np.zeros(0, dtype=np.int64)
    for user, t in zip(query_users, query_ms, strict=True):
        times, items = history.get(user, (None, None))
        if times is None:
            out.append(empty)
            continue
        out.append(np.unique(items[: np.searchsorted(times, t, side="left")]))
    return out
