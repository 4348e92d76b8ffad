"""The retriever's score offset for items without an id vector, fit on held-out users.

An item no training event targeted has no id vector: it scores from content alone
(the shared out-of-vocabulary id row plus its content projection). Trained as a
negative everywhere, that vector sits below the catalogue's, so one scalar is
added to these items' logits, fit where the answer is known: on the training
period's held-out users (``candidate_training.ranker_users``, the newest ones,
whose events the retriever did not train on), ranking the catalogue for their
interactions with items new to them, seen items excluded as served.

The rule is calibrated exposure (Steck, "Calibrated recommendations", RecSys
2018, applied to one group): the smallest offset at which items without an id
vector take at least the share of the held-out top ``DEPTH`` that they take of
the held-out interactions, among the offsets that keep held-out recall@DEPTH
within ``RECALL_TOLERANCE`` of its best. Recall alone is flat over a wide band
of offsets (a few hundred cold labels move it by less than the noise), so
maximising it picked anything from 0 (no new item ever shown) to +3.5 between
two seeds; the exposure share rises steeply and smoothly with the offset and
lands within one step across seeds. When no admissible offset reaches the
share, the admissible offset with the largest share, ties to the one closest to
0. An id-only model gets 0: its items without an id vector share one vector, so
an offset could only show an arbitrary one of them.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from models.candidate_training import EventArrays, histories

OFFSETS = tuple(float(x) for x in np.arange(-4.0, 16.01, 0.5))
DEPTH = 50  # recall@DEPTH: the candidates a retriever hands on (models.blend takes 200)
RECALL_TOLERANCE = 0.03  # the exposure may cost at most this share of held-out recall
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


@dataclasses.dataclass(frozen=True)
class OffsetMeasure:
    """At one offset: held-out recall@depth, and the share of the top ``depth``
    slots taken by items without an id vector (mean over queries)."""

    recall: float
    unknown_share: float


def measure_offsets(
    queries: np.ndarray,
    table: np.ndarray,
    unknown: np.ndarray,
    targets: np.ndarray,
    seen: list[np.ndarray],
    offsets=OFFSETS,
    depth: int = DEPTH,
) -> dict[float, OffsetMeasure]:
    """recall@depth of ``targets`` and the unknown rows' share of the top ``depth``
    for each offset added to the ``unknown`` rows."""
    hits = np.zeros(len(offsets))
    slots = np.zeros(len(offsets))
    flag = unknown.astype(np.float64)
    for start in range(0, len(targets), CHUNK):
        part = slice(start, start + CHUNK)
        scores = queries[part] @ table.T
        for i, rows in enumerate(seen[part]):
            scores[i, rows] = -np.inf
        target = targets[part]
        top = min(depth, scores.shape[1])  # a catalogue smaller than depth: all of it
        for j, offset in enumerate(offsets):
            shifted = scores + offset * flag[None, :]
            mine = shifted[np.arange(len(target)), target]
            rank = (shifted >= mine[:, None]).sum(axis=1) - 1  # ties count against it
            hits[j] += np.count_nonzero(rank < depth)
            slots[j] += unknown_slots(shifted, unknown, top).sum() / top
    n = max(1, len(targets))
    return {
        float(o): OffsetMeasure(float(h / n), float(c / n))
        for o, h, c in zip(offsets, hits, slots, strict=True)
    }


def unknown_slots(scores: np.ndarray, unknown: np.ndarray, depth: int) -> np.ndarray:
    """Per row of ``scores``, the expected number of the top ``depth`` slots that
    ``unknown`` columns take, rows tied at the cut sharing the slots left (a random
    tie-break): an id-only model's unknown items all tie and would otherwise count
    as thousands of slots."""
    kth = -np.partition(-scores, depth - 1, axis=1)[:, depth - 1]
    above = scores > kth[:, None]
    tied = scores == kth[:, None]
    left = depth - above.sum(1)
    tied_unknown = (tied & unknown[None, :]).sum(1)
    return (above & unknown[None, :]).sum(1) + left * tied_unknown / np.maximum(tied.sum(1), 1)


def calibrated_offset(
    measured: dict[float, OffsetMeasure],
    target_share: float,
    tolerance: float = RECALL_TOLERANCE,
) -> float:
    """The module's rule: the smallest admissible offset (recall ≥ (1 − tolerance) ×
    the best) whose unknown share reaches ``target_share``; else the admissible one
    of the largest share, ties to the one closest to 0."""
    best = max(m.recall for m in measured.values())
    admissible = {o: m for o, m in measured.items() if m.recall >= (1.0 - tolerance) * best}
    reaching = [o for o, m in admissible.items() if m.unknown_share >= target_share]
    if reaching:
        return min(reaching)
    top = max(m.unknown_share for m in admissible.values())
    return min((o for o, m in admissible.items() if m.unknown_share == top), key=abs)


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
    table = trained.item_table().astype(np.float64)
    if len(np.unique(table[unknown], axis=0)) < 2:
        return 0.0, {
            "labels": len(positions),
            "unknown_items": int(unknown.sum()),
            "reason": "they share one vector (no content to tell them apart): offset 0",
        }
    rows, ts, rewards = histories(events, positions, trained.max_len)
    queries = trained.queries(rows, ts, rewards).astype(np.float64)
    targets = events.item_idx[positions]
    measured = measure_offsets(queries, table, unknown, targets, seen)
    target_share = float(unknown[targets].mean())
    offset = calibrated_offset(measured, target_share)
    return offset, {
        "offset": offset,
        "labels": len(positions),
        "unknown_targets": int(unknown[targets].sum()),
        "unknown_items": int(unknown.sum()),
        "unknown_target_share": round(target_share, 4),
        f"unknown_share_at_{DEPTH}": round(measured[offset].unknown_share, 4),
        f"recall_at_{DEPTH}": measured[offset].recall,
        f"recall_at_{DEPTH}_without": measured[0.0].recall,
        f"recall_at_{DEPTH}_best": max(m.recall for m in measured.values()),
    }
