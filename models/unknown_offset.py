"""The retriever's score offset for items without an id vector, fit on held-out users.

An item no training event targeted has no id vector: it scores from content alone
(``ItemEncoder.id_vectors``). Id dropout teaches content-only vectors the scale of
id vectors, but only for items the log had; a catalogue's unseen items (new
uploads, the long tail that first shows up later) differ from those, so one
scalar added to their logits is fit where the answer is known: on the training
period's held-out users (``candidate_training.ranker_users``, the newest ones,
whose events the retriever did not train on), the offset that maximises recall
at the candidate depth of their next interactions, seen items excluded as served.
Ties go to the offset closest to 0.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from models.candidate_training import EventArrays, histories

OFFSETS = tuple(float(x) for x in np.arange(-4.0, 16.01, 0.5))
DEPTH = 50  # recall@DEPTH: the candidates a retriever hands on (models.blend takes 200)
MAX_LABELS = 5000  # held-out interactions scored, at most (the newest ones)
CHUNK = 256  # queries scored at once (a [CHUNK, catalogue] matrix)


def held_out_targets(
    events: EventArrays, users: np.ndarray, end: int, limit: int | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Positions before ``end`` of ``users``' interactions with an item they had not
    interacted with before (the protocol's scored events), the newest ``limit`` of
    them, and per position the rows its user interacted with before it. One pass."""
    chosen = set(int(u) for u in users)
    seen: dict[int, list[int]] = collections.defaultdict(list)
    positions, before = [], []
    for k in range(end):
        if not events.interaction[k]:
            continue
        user, item = int(events.user_idx[k]), int(events.item_idx[k])
        if user not in chosen:
            continue
        if item not in seen[user]:
            positions.append(k)
            before.append(np.asarray(seen[user], np.int64))
        seen[user].append(item)
    start = 0 if limit is None else max(0, len(positions) - limit)
    return np.asarray(positions[start:], np.int64), before[start:]


def recall_by_offset(
    queries: np.ndarray,
    table: np.ndarray,
    unknown: np.ndarray,
    targets: np.ndarray,
    seen: list[np.ndarray],
    offsets=OFFSETS,
    depth: int = DEPTH,
) -> dict[float, float]:
    """recall@depth of ``targets`` for each offset added to the ``unknown`` rows."""
    hits = np.zeros(len(offsets))
    flag = unknown.astype(np.float64)
    for start in range(0, len(targets), CHUNK):
        part = slice(start, start + CHUNK)
        scores = queries[part] @ table.T
        for i, rows in enumerate(seen[part]):
            scores[i, rows] = -np.inf
        target = targets[part]
        for j, offset in enumerate(offsets):
            shifted = scores + offset * flag[None, :]
            mine = shifted[np.arange(len(target)), target]
            rank = (shifted >= mine[:, None]).sum(axis=1) - 1  # ties count against it
            hits[j] += np.count_nonzero(rank < depth)
    n = max(1, len(targets))
    return {float(o): float(h / n) for o, h in zip(offsets, hits, strict=True)}


def best_offset(recall: dict[float, float]) -> float:
    """The offset of the highest recall; ties to the one closest to 0."""
    top = max(recall.values())
    return min((o for o, r in recall.items() if r == top), key=abs)


def fit_unknown_offset(
    trained, events: EventArrays, held_out: np.ndarray, end: int
) -> tuple[float, dict[str, object]]:
    """The offset for ``trained`` (a ``TrainedSequence`` that did not train on
    ``held_out``'s events) from those users' interactions before ``end``; and what
    was measured (for the training log)."""
    positions, seen = held_out_targets(events, held_out, end, MAX_LABELS)
    trained = dataclasses.replace(trained, unknown_offset=0.0)
    unknown = ~trained.model.encoder.known().numpy()
    if not len(positions) or not unknown.any():
        return 0.0, {"labels": len(positions), "unknown_items": int(unknown.sum())}
    rows, ts, rewards = histories(events, positions, trained.max_len)
    queries = trained.queries(rows, ts, rewards).astype(np.float64)
    table = trained.item_table().astype(np.float64)
    targets = events.item_idx[positions]
    recall = recall_by_offset(queries, table, unknown, targets, seen)
    offset = best_offset(recall)
    return offset, {
        "offset": offset,
        "labels": len(positions),
        "unknown_targets": int(unknown[targets].sum()),
        "unknown_items": int(unknown.sum()),
        f"recall_at_{DEPTH}": recall[offset],
        f"recall_at_{DEPTH}_without": recall[0.0],
    }
