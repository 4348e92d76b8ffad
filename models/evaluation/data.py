"""Event logs in, protocol-sorted scored events out.

Two formats: ``movielens`` (CSV ``user,item,rating,timestamp`` or ml-latest-small's
``userId,movieId,rating,timestamp``; timestamps in epoch seconds) and ``jsonl``
(one engagement event per line, the contract of ``beam_pipelines.events``). Both
are read by the backfill's reader and parser (``beam_pipelines.event_logs.parse_log``).
Rewards come from ``beam_pipelines.transforms.rewards.score_event``: the same code
the pipeline runs.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib

import numpy as np

from beam_pipelines.event_logs import parse_log, tie_key
from beam_pipelines.events import EngagementEvent, ValidationConfig
from beam_pipelines.rewards import RewardConfig
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.transforms.rewards import score_event
from models.candidate_training import EventArrays

FORMATS = ("movielens", "jsonl")
DEFAULT_REWARD = {"movielens": "movielens", "jsonl": "short_video"}
# Offline replay of a log: "now" is no bound on event time, so the future check is off.
_FAR_FUTURE_MS = 2**62
# Nor is the distant past: a ratings file's timestamps are taken as they are.
_MOVIELENS_VALIDATION = ValidationConfig(min_timestamp_ms=0)


@dataclasses.dataclass
class RawLog:
    """Parsed events in file order plus counts of what was skipped and why."""

    events: list[EngagementEvent]
    skipped: collections.Counter[str]


def read_movielens(path: str | pathlib.Path) -> RawLog:
    """Ratings CSV → ``rating`` events with ``context={"rating": r}``, times in ms."""
    events, skipped = parse_log(
        str(path), "movielens", _MOVIELENS_VALIDATION, now_ms=_FAR_FUTURE_MS
    )
    return RawLog(events, skipped)


def read_jsonl(path: str | pathlib.Path, reward: RewardConfig) -> RawLog:
    """Engagement events, one per line; invalid lines and duplicate ids are counted."""
    config = ValidationConfig(event_types=reward.event_types)
    events, skipped = parse_log(str(path), "jsonl", config, now_ms=_FAR_FUTURE_MS)
    return RawLog(events, skipped)


def _id_key(ids: list[str]) -> dict[str, int | str] | None:
    """Numeric sort keys when every id is a decimal integer (MovieLens), else None."""
    try:
        return {i: int(i) for i in ids}
    except ValueError:
        return None


@dataclasses.dataclass
class ReplayLog:
    """Protocol-sorted scored events with dense user/item indices.

    ``interaction``: the event is an interaction of the protocol (a target in the
    test stream, a history entry, a popularity count). ``n_train``: the first
    ``n_train`` events are the training period. ``source``: the parsed events in
    the same order. Times are epoch milliseconds.
    """

    events: list[ScoredEvent]
    users: list[str]
    items: list[str]
    user_idx: np.ndarray
    item_idx: np.ndarray
    ts_ms: np.ndarray
    interaction: np.ndarray
    n_train: int
    skipped: dict[str, int]
    source: list[EngagementEvent] = dataclasses.field(default_factory=list, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def arrays(self) -> EventArrays:
        """The columns the sequence and candidate code reads (computed once)."""
        cached = self.__dict__.get("_arrays")
        if cached is None:
            rewards = np.fromiter((e.reward for e in self.events), np.float32, len(self.events))
            cached = EventArrays(
                self.user_idx, self.item_idx, self.ts_ms, rewards, self.interaction, self.n_items
            )
            self.__dict__["_arrays"] = cached
        return cached


def build_log(
    raw: RawLog, reward: RewardConfig, interactions: str, train_fraction: float = 0.8
) -> ReplayLog:
    """Sort by ``(timestamp, user, tie_key(user, item))`` (stable), score, index and split.

    ``interactions``: ``all`` (every event, MovieLens ratings) or ``engaged``
    (the reward config's engagement flag). Ids sort numerically when all are integers.
    """
    if interactions not in ("all", "engaged"):
        raise ValueError(f"interactions must be 'all' or 'engaged', got {interactions!r}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not raw.events:
        raise ValueError("no valid events")
    users = sorted({e.user_id for e in raw.events})
    items = sorted({e.item_id for e in raw.events})
    ukey, ikey = _id_key(users), _id_key(items)
    if ukey is not None:
        users.sort(key=ukey.__getitem__)
    if ikey is not None:
        items.sort(key=ikey.__getitem__)
    upos = {u: i for i, u in enumerate(users)}
    ipos = {it: i for i, it in enumerate(items)}
    # Sorting by dense user positions equals sorting by the (typed) ids themselves;
    # within one user and timestamp the tie hash decides (EVALUATION.md, step 1).
    order = sorted(
        range(len(raw.events)),
        key=lambda k: (
            raw.events[k].timestamp_ms,
            upos[raw.events[k].user_id],
            tie_key(raw.events[k].user_id, raw.events[k].item_id),
        ),
    )
    scored = [score_event(raw.events[k], reward, seq=n) for n, k in enumerate(order)]
    interaction = np.array([interactions == "all" or e.engaged for e in scored], dtype=bool)
    return ReplayLog(
        events=scored,
        users=users,
        items=items,
        user_idx=np.array([upos[e.user_id] for e in scored], dtype=np.int64),
        item_idx=np.array([ipos[e.item_id] for e in scored], dtype=np.int64),
        ts_ms=np.array([e.timestamp_ms for e in scored], dtype=np.int64),
        interaction=interaction,
        n_train=int(len(scored) * train_fraction),
        skipped=dict(raw.skipped),
        source=[raw.events[k] for k in order],
    )
