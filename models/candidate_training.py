"""Training examples for the candidate ranker: the retriever's own candidates.

Walks the training period in protocol order with the streaming co-engagement
state (``beam_pipelines.state.coengagement``, as the replay and the pipeline keep
it). At each chosen interaction (the ranker's held-out users, see
``ranker_users``), *before* applying it, it asks both sources for their
candidates exactly as the service does (``models.blend``'s union, the user's seen
items excluded) and writes the interacted item as the positive and candidates
as negatives. Everything an example holds comes from before its label's time:

- the sequential query is the user's last N events strictly before the event;
- co-engagement counts, item event counts and seen items are the state after
  the previous event;
- negatives are only items that had an event before the label (an item first
  seen later is not a candidate the system could have known), and an example
  whose interacted item had no event before is skipped, so "no event yet"
  never tells the positive apart.

The sequential model scoring these examples must not have trained on them: the
ranker's users are held out of its training (``ranker_users``), as the replay's
test users are.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from beam_pipelines.state.coengagement import CoEngagement, PairWindow
from models.blend import BLEND_WEIGHT
from models.candidate_features import FEATURES, candidate_features

RANKER_USER_SHARE = 0.15  # of training-period events whose users train the ranker
NEGATIVES = 32  # per positive, drawn from the union of both sources' candidates


class SequenceScorer(Protocol):
    max_len: int

    def item_table(self) -> np.ndarray: ...

    def queries(self, rows: np.ndarray, ts_ms: np.ndarray, rewards: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class EventArrays:
    """Events in protocol order: dense user and item rows, times (ms), rewards,
    whether each is an interaction of the protocol."""

    user_idx: np.ndarray
    item_idx: np.ndarray
    ts_ms: np.ndarray
    rewards: np.ndarray
    interaction: np.ndarray
    n_items: int


@dataclasses.dataclass
class Examples:
    features: np.ndarray  # [n, len(FEATURES)]
    engaged: np.ndarray  # [n] 1 for the interacted candidate
    reward: np.ndarray  # [n] the event's reward (the positive's label)
    label_position: np.ndarray  # [n] event index of the label
    item_row: np.ndarray  # [n] the candidate's catalogue row
    first_event: np.ndarray  # [n] event index of the candidate's first event


def ranker_users(user_idx: np.ndarray, share: float = RANKER_USER_SHARE) -> np.ndarray:
    """Users whose events train the ranker: the newest users by first event, until
    their events reach ``share`` of ``user_idx`` (the training period). They are
    the most like the replay's test users (mostly new, streaming their first events)."""
    users, first, counts = np.unique(user_idx, return_index=True, return_counts=True)
    order = np.argsort(-first, kind="stable")
    taken = np.cumsum(counts[order]) <= share * len(user_idx)
    return np.sort(users[order][taken])


def histories(
    events: EventArrays, positions: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each position's user's last ``max_len`` events strictly before it (right-aligned,
    row -1 = padding)."""
    rows = np.full((len(positions), max_len), -1, dtype=np.int64)
    ts = np.zeros((len(positions), max_len), dtype=np.int64)
    rewards = np.zeros((len(positions), max_len), dtype=np.float32)
    past: dict[int, collections.deque[int]] = collections.defaultdict(
        lambda: collections.deque(maxlen=max_len)
    )
    out_row = {int(p): i for i, p in enumerate(positions)}
    last = int(np.max(positions)) if len(positions) else -1
    for k in range(last + 1):
        user = int(events.user_idx[k])
        i = out_row.get(k)
        if i is not None and past[user]:
            h = list(past[user])
            rows[i, -len(h) :] = events.item_idx[h]
            ts[i, -len(h) :] = events.ts_ms[h]
            rewards[i, -len(h) :] = events.rewards[h]
        past[user].append(k)
    return rows, ts, rewards


def top_unseen(scores: np.ndarray, seen: np.ndarray, n: int, positive: bool = False) -> np.ndarray:
    """The ``n`` best rows outside ``seen`` (only scores > 0 with ``positive``), best first."""
    masked = scores.astype(np.float64, copy=True)
    masked[seen] = -np.inf
    if positive:
        masked[masked <= 0] = -np.inf
    k = min(n, masked.size)
    if k == 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-masked, k - 1)[:k]
    top = top[np.isfinite(masked[top])]
    return top[np.argsort(-masked[top], kind="stable")]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    return z - np.log(np.exp(z).sum())


@dataclasses.dataclass
class CandidateSet:
    """Both sources' candidates for the event at ``position``, from the state before it."""

    position: int
    rows: np.ndarray  # union of both sources' rows, sorted
    features: np.ndarray  # [len(rows), len(FEATURES)]
    known: np.ndarray  # [len(rows)] the row had an event before ``position``
    blend_scores: np.ndarray  # [len(rows)] ``models.blend``'s order of the same rows


def candidate_sets(
    events: EventArrays,
    positions: np.ndarray,
    scorer: SequenceScorer,
    candidates: int,
    blend_weight: float = BLEND_WEIGHT,
    end: int | None = None,
) -> Iterator[CandidateSet]:
    """Walk the first ``end`` events (all by default) in order, applying each to the
    co-engagement state as the replay does; at each of ``positions`` whose item the
    user has not interacted with, first yield that event's candidates."""
    end = len(events.user_idx) if end is None else end
    positions = np.asarray(positions, np.int64)
    table = scorer.item_table().astype(np.float64)
    queries = _queries(scorer, events, positions, table.shape[1])
    query_of = {int(p): i for i, p in enumerate(positions)}
    n_items = events.n_items
    co = CoEngagement(n_items)
    windows: dict[int, PairWindow] = collections.defaultdict(PairWindow)
    seen: dict[int, dict[int, None]] = collections.defaultdict(dict)
    item_events = np.zeros(n_items, dtype=np.float64)
    user_events: collections.Counter[int] = collections.Counter()
    for k in range(end):
        user, item = int(events.user_idx[k]), int(events.item_idx[k])
        q = query_of.get(k)
        if q is not None and item not in seen[user]:
            seen_rows = np.fromiter(seen[user], dtype=np.int64, count=len(seen[user]))
            log_prob = log_softmax(table @ queries[q])
            seq_rows = top_unseen(log_prob, seen_rows, candidates)
            recent = windows[user].recent()
            co_scores = co.score(recent, item_events) if recent else np.zeros(n_items)
            co_scores[seen_rows] = 0.0
            co_rows = top_unseen(co_scores, seen_rows, candidates, positive=True)
            rows, x = candidate_features(
                seq_rows,
                log_prob[seq_rows],
                co_rows,
                co_scores,
                item_events,
                user_events[user],
                candidates,
            )
            probability = np.zeros(n_items)
            probability[seq_rows] = np.exp(log_prob[seq_rows])
            blended = co_scores[rows] + blend_weight * probability[rows]
            yield CandidateSet(k, rows, x, item_events[rows] > 0, blended)
        item_events[item] += 1.0  # apply event k, as the replay's World does
        if events.interaction[k]:
            previous = windows[user].push(item)
            if previous is not None:
                co.add_pairs(item, previous)
            seen[user][item] = None
        user_events[user] += 1


def _queries(
    scorer: SequenceScorer, events: EventArrays, positions: np.ndarray, dim: int
) -> np.ndarray:
    rows, ts, rewards = histories(events, positions, scorer.max_len)
    parts = [
        scorer.queries(rows[s : s + 1024], ts[s : s + 1024], rewards[s : s + 1024])
        for s in range(0, len(positions), 1024)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, dim))


def examples(
    events: EventArrays,
    users: np.ndarray,
    scorer: SequenceScorer,
    candidates: int,
    negatives: int = NEGATIVES,
    seed: int = 0,
    end: int | None = None,
) -> Examples:
    """Examples at the interactions of ``users`` among the first ``end`` events."""
    end = len(events.user_idx) if end is None else end
    chosen = np.isin(events.user_idx[:end], users) & events.interaction[:end]
    rng = np.random.default_rng(seed)
    first_event = _first_events(events, end)
    out: dict[str, list] = {k: [] for k in ("x", "y", "r", "pos", "item")}
    for c in candidate_sets(events, np.flatnonzero(chosen), scorer, candidates, end=end):
        item = int(events.item_idx[c.position])
        at = np.searchsorted(c.rows, item)
        if at == len(c.rows) or c.rows[at] != item or not c.known[at]:
            continue  # not a candidate, or no event before: nothing to learn from it
        known = np.flatnonzero(c.known & (c.rows != item))
        pick = rng.choice(known, min(negatives, len(known)), replace=False)
        take = np.concatenate([[at], pick]).astype(np.int64)
        out["x"].append(c.features[take])
        out["y"].append((take == at).astype(np.float32))
        out["r"].append(np.full(len(take), events.rewards[c.position], np.float32))
        out["pos"].append(np.full(len(take), c.position, np.int64))
        out["item"].append(c.rows[take])
    if not out["x"]:
        empty = np.zeros(0, np.int64)
        return Examples(
            np.zeros((0, len(FEATURES)), np.float32),
            empty.astype(np.float32),
            empty.astype(np.float32),
            empty,
            empty,
            empty,
        )
    item_rows = np.concatenate(out["item"])
    return Examples(
        np.concatenate(out["x"]),
        np.concatenate(out["y"]),
        np.concatenate(out["r"]),
        np.concatenate(out["pos"]),
        item_rows,
        first_event[item_rows],
    )


def _first_events(events: EventArrays, end: int) -> np.ndarray:
    """Index of each item's first event among the first ``end`` (-1: none)."""
    first = np.full(events.n_items, -1, dtype=np.int64)
    items, at = np.unique(events.item_idx[:end], return_index=True)
    first[items] = at
    return first


def order_ndcg(
    events: EventArrays,
    positions: np.ndarray,
    scorer: SequenceScorer,
    ranker_score: Callable[[np.ndarray], np.ndarray],
    candidates: int,
    k: int = 10,
) -> dict[str, float]:
    """NDCG@k of the blend's and the ranker's orders of the same candidates at
    ``positions`` (a target outside the candidates counts 0 for both)."""
    gains = {"blend": [], "ranker": []}
    for c in candidate_sets(events, positions, scorer, candidates):
        item = int(events.item_idx[c.position])
        at = np.searchsorted(c.rows, item)
        hit = at < len(c.rows) and c.rows[at] == item
        for name, scores in (("blend", c.blend_scores), ("ranker", None)):
            if not hit:
                gains[name].append(0.0)
                continue
            s = ranker_score(c.features) if scores is None else scores
            rank = int(np.count_nonzero(s > s[at]) + np.count_nonzero(s[:at] == s[at]))
            gains[name].append(1.0 / np.log2(rank + 2) if rank < k else 0.0)
    return {name: float(np.mean(g)) if g else 0.0 for name, g in gains.items()}
