"""Deterministic engagement stream for a short-video feed, with its ground truth.

``simulate(config)`` yields one ``SimRecord`` per output line: clean events in
global event-time order, and, when ``dirty_fraction > 0``, labelled dirty lines
inserted between them. Item metadata and every change of a user's top interest
(gradual drift or abrupt shift) are kept as ground truth on the returned
``Simulation`` (``items``, ``shifts``, ``truth()``). ``main`` is ``rtp simulate``:
JSONL plus sidecars, and/or Pub/Sub.

Randomness comes from ``numpy.random.Generator(PCG64)`` streams spawned from the
seed: one for the catalog, one for user behaviour, one for dirty lines, so the
clean lines are the same whatever ``dirty_fraction`` is. Times are epoch
milliseconds (UTC) unless a name says otherwise.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import datetime as dt
import enum
import heapq
import json
import math
import pathlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from beam_pipelines.events import (
    MAX_ID_CHARS,
    MAX_MESSAGE_BYTES,
    EventValidationError,
    Reason,
    parse_timestamp_ms,
)

SURFACE = "short_video_feed"
DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_SECOND_MS = 1000
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS
_DUPLICATE_WINDOW_LINES = 50
_TS_1990_MS = 631_152_000_000  # 1990-01-01T00:00:00Z

_VOCABULARY_TEXT = {
    "cooking": "recipe pasta kitchen chef baking spicy dinner dessert",
    "fitness": "workout gym squat cardio protein stretch abs running",
    "gaming": "gameplay speedrun boss console esports minecraft loot controller",
    "music": "guitar cover beat singing piano remix concert lyrics",
    "dance": "choreo dance moves ballet hiphop routine groove salsa",
    "comedy": "prank sketch standup joke parody skit bloopers roast",
    "pets": "puppy kitten dog cat parrot hamster grooming paws",
    "travel": "beach roadtrip hotel backpacking island flight passport itinerary",
    "fashion": "outfit streetwear thrift sneakers lookbook denim runway haul",
    "beauty": "makeup skincare lipstick contour nails serum eyeliner glow",
    "tech": "smartphone laptop unboxing gadget coding keyboard chip ai",
    "diy": "woodworking crafts repair upcycle glue drill shelf workbench",
    "sports": "football basketball goal dunk tennis highlights stadium referee",
    "cars": "supercar engine horsepower detailing turbo racing garage exhaust",
    "science": "experiment physics chemistry space rocket telescope molecule lab",
    "finance": "stocks budget investing crypto savings taxes dividends mortgage",
    "art": "painting sketching canvas watercolor sculpture mural portrait charcoal",
    "nature": "forest waterfall wildlife mountain sunset birds river camping",
    "parenting": "toddler baby mom dad nursery bedtime lunchbox homeschool",
    "movies": "trailer scene actor cinema oscars sequel spoilers plot",
}
TOPIC_VOCABULARY: dict[str, tuple[str, ...]] = {
    name: tuple(words.split()) for name, words in _VOCABULARY_TEXT.items()
}
# Words that carry no topic signal, as in real titles.
FILLER_WORDS = (
    "pov:",
    "best",
    "new",
    "daily",
    "quick",
    "part 2",
    "wait for it",
    "#fyp",
    "must see",
    "day 1",
)
DEVICES = ("ios", "android", "web")


class DirtyKind(str, enum.Enum):
    """Kinds of dirty line the simulator inserts; see ``EXPECTED_REASON``."""

    MALFORMED_JSON = "malformed_json"
    JSON_ARRAY = "json_array"
    MISSING_USER_ID = "missing_user_id"
    EMPTY_ITEM_ID = "empty_item_id"
    ID_TOO_LONG = "id_too_long"
    CONTROL_CHAR_ID = "control_char_id"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_1990 = "timestamp_1990"
    NEGATIVE_WATCH_MS = "negative_watch_ms"
    WATCH_EXCEEDS_DURATION = "watch_exceeds_duration"
    OVERSIZE = "oversize"
    INVALID_UTF8 = "invalid_utf8"
    DUPLICATE = "duplicate"
    LATE = "late"


EXPECTED_REASON: dict[DirtyKind, Reason] = {
    DirtyKind.MALFORMED_JSON: Reason.MALFORMED_JSON,
    DirtyKind.JSON_ARRAY: Reason.NOT_OBJECT,
    DirtyKind.MISSING_USER_ID: Reason.MISSING_FIELD,
    DirtyKind.EMPTY_ITEM_ID: Reason.EMPTY_FIELD,
    DirtyKind.ID_TOO_LONG: Reason.FIELD_TOO_LONG,
    DirtyKind.CONTROL_CHAR_ID: Reason.CONTROL_CHARACTERS,
    DirtyKind.UNKNOWN_EVENT_TYPE: Reason.UNKNOWN_EVENT_TYPE,
    DirtyKind.BAD_TIMESTAMP: Reason.BAD_TIMESTAMP,
    DirtyKind.TIMESTAMP_1990: Reason.TIMESTAMP_OUT_OF_RANGE,
    DirtyKind.NEGATIVE_WATCH_MS: Reason.NEGATIVE_WATCH_MS,
    DirtyKind.WATCH_EXCEEDS_DURATION: Reason.WATCH_EXCEEDS_DURATION,
    DirtyKind.OVERSIZE: Reason.OVERSIZE,
    DirtyKind.INVALID_UTF8: Reason.NOT_UTF8,
    DirtyKind.DUPLICATE: Reason.DUPLICATE,
    DirtyKind.LATE: Reason.LATE,
}
# These need earlier clean lines; before the first one another kind is drawn.
_NEEDS_HISTORY = frozenset({DirtyKind.DUPLICATE, DirtyKind.LATE})


# --------------------------------------------------------------------------- config


class SimulatorConfig(BaseModel):
    """Everything that shapes the stream. Same config (seed included) → same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_events: int = Field(
        10_000, ge=0, description="Clean events to emit; dirty lines come on top."
    )
    n_users: int = Field(1_000, ge=1, description="Number of users.")
    n_items: int = Field(5_000, ge=1, description="Number of items in the catalog.")
    n_topics: int = Field(20, ge=4, le=1000, description="Number of latent topics.")
    min_interests: int = Field(2, ge=1, description="Fewest topics a user starts interested in.")
    max_interests: int = Field(3, ge=1, description="Most topics a user starts interested in.")
    drift_rate_per_h: float = Field(
        0.005,
        ge=0,
        description="Gradual drift, 1/hour: between sessions a share 1-exp(-rate*gap_h) of the "
        "interest mass moves towards the user's drift target topic.",
    )
    shift_probability: float = Field(
        0.03, ge=0, le=1, description="Probability of an abrupt interest shift at a session start."
    )
    shift_strength: float = Field(
        0.7,
        gt=0.5,
        le=1,
        description="Share of interest mass an abrupt shift puts on the new topic (> 0.5, so the "
        "new topic becomes the top one).",
    )
    start_ms: int = Field(
        DEFAULT_START_MS, description="Stream start, epoch ms (RFC 3339 strings accepted)."
    )
    seed: int = Field(0, ge=0, description="Seed of every random draw.")
    dirty_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction of output lines that are dirty."
    )
    dirty_kinds: tuple[DirtyKind, ...] = Field(
        tuple(DirtyKind), min_length=1, description="Dirty kinds to draw from, uniformly."
    )
    late_by_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="A late line's event time is this many seconds before its user's newest event "
        "time. Keep it above the pipeline's allowed lateness (10 minutes by default).",
    )
    session_items_mean: float = Field(
        15.0, ge=1, description="Mean items shown per session (geometric)."
    )
    session_gap_median_s: float = Field(
        3 * 3600.0, gt=0, description="Median gap between a user's sessions, seconds (log-normal)."
    )
    session_gap_sigma: float = Field(1.0, ge=0, description="Log-space sigma of the session gap.")
    first_session_spread_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="First sessions start uniformly in this many seconds after start.",
    )
    feed_interest_share: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Share of feed slots filled from the user's interests (as the feed knew "
        "them one session ago); the rest are popular items.",
    )
    zipf_exponent: float = Field(
        1.0, gt=0, description="Exponent of the Zipf base popularity by rank."
    )
    catalog_age_days: float = Field(
        30.0, ge=0, description="Items are released from this many days before start..."
    )
    release_horizon_days: float = Field(
        7.0, ge=0, description="...to this many days after start, uniformly."
    )
    popularity_rise_h: float = Field(
        6.0, gt=0, description="Rise time constant of an item's popularity, hours."
    )
    popularity_decay_median_h: float = Field(
        72.0,
        gt=0,
        description="Median decay time constant of an item's popularity, hours (log-normal).",
    )
    evergreen_floor: float = Field(
        0.05, ge=0, description="Popularity multiplier an item keeps forever after its release."
    )
    duration_median_s: float = Field(
        20.0, gt=0, description="Median item duration, seconds (log-normal)."
    )
    duration_sigma: float = Field(0.6, ge=0, description="Log-space sigma of the item duration.")
    min_duration_s: float = Field(5.0, gt=0, description="Shortest item, seconds.")
    max_duration_s: float = Field(90.0, gt=0, description="Longest item, seconds.")
    web_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of users on the web client, which sends RFC 3339 timestamps.",
    )

    @field_validator("start_ms", mode="before")
    @classmethod
    def _start_from_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            try:
                return parse_timestamp_ms(value)
            except EventValidationError as err:
                raise ValueError(f"start_ms: {err.detail}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SimulatorConfig:
        if not self.min_interests <= self.max_interests <= self.n_topics - 3:
            raise ValueError("need min_interests <= max_interests <= n_topics - 3")
        if self.min_duration_s > self.max_duration_s:
            raise ValueError("min_duration_s must be <= max_duration_s")
        return self

    @property
    def dirty_lines(self) -> int:
        """Dirty lines so that they are ``dirty_fraction`` of all lines."""
        return round(self.n_events * self.dirty_fraction / (1 - self.dirty_fraction))


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True, slots=True)
class SimRecord:
    """One output line (``data`` has no trailing newline) and its label.

    ``kind`` is ``"clean"`` or a ``DirtyKind`` value; ``expected_reason`` is None for
    clean lines. ``event_time_ms`` is the event time to publish as ``event_ts``, None
    when the line carries no usable one (unparseable timestamp).
    """

    line: int
    data: bytes
    kind: str
    expected_reason: Reason | None
    event_time_ms: int | None

    @property
    def is_clean(self) -> bool:
        return self.expected_reason is None

    def label(self) -> dict[str, Any]:
        """The ``<out>.labels.jsonl`` entry of a dirty line."""
        reason = self.expected_reason.value if self.expected_reason else None
        return {"line": self.line, "kind": self.kind, "expected_reason": reason}


@dataclasses.dataclass(frozen=True, slots=True)
class ItemInfo:
    """Ground truth of one item. ``quality`` is the latent engagement bonus (logit)."""

    item_id: str
    topic: str
    topic_weights: dict[str, float]
    duration_ms: int
    title: str
    base_popularity: float
    release_ms: int
    popularity_decay_h: float
    quality: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class InterestShift:
    """A change of a user's top topic, effective from the session starting at ``time_ms``.

    ``kind``: ``"shift"`` (abrupt) or ``"drift"`` (gradual). ``event_index`` is the
    0-based index among clean events, ``line`` the 0-based output line, of that
    session's first event.
    """

    user_id: str
    time_ms: int
    event_index: int
    line: int
    kind: str
    old_topic: str
    new_topic: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- randomness


class _Draws:
    """Scalar draws from one Generator, fetched in blocks (numpy's per-call cost dominates)."""

    _BLOCK = 4096

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._uniform: list[float] = []
        self._normal: list[float] = []

    def uniform(self) -> float:
        if not self._uniform:
            self._uniform = self.rng.random(self._BLOCK).tolist()[::-1]
        return self._uniform.pop()

    def normal(self) -> float:
        if not self._normal:
            self._normal = self.rng.standard_normal(self._BLOCK).tolist()[::-1]
        return self._normal.pop()

    def below(self, n: int) -> int:
        """Uniform integer in [0, n)."""
        return min(int(self.uniform() * n), n - 1)

    def choice(self, options: tuple[Any, ...] | list[Any]) -> Any:
        return options[self.below(len(options))]

    def geometric(self, mean: float) -> int:
        """At least 1, with the given mean."""
        if mean <= 1:
            return 1
        return 1 + int(math.log(1.0 - self.uniform()) / math.log(1.0 - 1.0 / mean))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _streams(seed: int) -> tuple[np.random.Generator, ...]:
    children = np.random.SeedSequence(seed).spawn(3)
    return tuple(np.random.Generator(np.random.PCG64(child)) for child in children)


# --------------------------------------------------------------------------- catalog


def topic_names(n_topics: int) -> list[str]:
    """The first names come from ``TOPIC_VOCABULARY``; extra topics are ``topicNN``."""
    names = list(TOPIC_VOCABULARY)[:n_topics]
    return names + [f"topic{t:02d}" for t in range(len(names), n_topics)]


def _vocabulary(name: str) -> tuple[str, ...]:
    return TOPIC_VOCABULARY.get(name) or tuple(f"{name}w{j}" for j in range(8))


def _title(draws: _Draws, words: tuple[str, ...]) -> str:
    picked = [words[j] for j in draws.rng.permutation(len(words))[: 2 + draws.below(2)]]
    if draws.uniform() < 0.6:
        picked.insert(draws.below(len(picked) + 1), draws.choice(FILLER_WORDS))
    return " ".join(picked)


def _sample_cumulative(cum: list[float], u: float) -> int:
    """Index drawn with weights whose running sum is ``cum``, for a uniform ``u``."""
    return min(bisect.bisect_right(cum, u * cum[-1]), len(cum) - 1)


class _PopTable(NamedTuple):
    everywhere: list[float]  # cumulative popularity over all items
    by_topic: list[list[float]]  # cumulative popularity over each topic's items


class _Catalog:
    """Items, their latent features and time-varying popularity."""

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator):
        n, k = cfg.n_items, cfg.n_topics
        self.names = topic_names(k)
        self.topic = rng.integers(0, k, n)
        self.mix = self._topic_mix(rng, k)
        self.quality = rng.normal(0.0, 0.4, n)
        self.quality_list = self.quality.tolist()
        rank = np.argsort(np.argsort(-(self.quality + rng.normal(0.0, 0.5, n))))
        self.base_pop = 1.0 / (1.0 + rank) ** cfg.zipf_exponent
        durations = np.exp(rng.normal(math.log(cfg.duration_median_s), cfg.duration_sigma, n))
        self.duration_ms = (
            np.clip(durations, cfg.min_duration_s, cfg.max_duration_s) * 1000
        ).astype(np.int64)
        low = cfg.start_ms - cfg.catalog_age_days * _DAY_MS
        high = cfg.start_ms + cfg.release_horizon_days * _DAY_MS
        self.release_ms = rng.uniform(low, high, n).astype(np.int64)
        self.decay_h = cfg.popularity_decay_median_h * np.exp(rng.normal(0.0, 0.5, n))
        self.item_ids = [f"i{i:06d}" for i in range(n)]
        draws = _Draws(rng)
        self.titles = [_title(draws, _vocabulary(self.names[t])) for t in self.topic.tolist()]
        self.members = [np.flatnonzero(self.topic == t) for t in range(k)]
        self._member_lists = [m.tolist() for m in self.members]
        self._cfg = cfg
        self._tables: collections.OrderedDict[int, _PopTable] = collections.OrderedDict()
        self._durations = self.duration_ms.tolist()

    def _topic_mix(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """Mostly the item's own topic, the rest on two other topics: an embedding-ish affinity."""
        n = len(self.topic)
        mix = np.zeros((n, k))
        rows = np.arange(n)
        primary = rng.uniform(0.6, 0.9, n)
        split = rng.uniform(0.0, 1.0, n)
        others = (self.topic[:, None] + rng.integers(1, k, (n, 2))) % k
        mix[rows, self.topic] = primary
        np.add.at(mix, (rows, others[:, 0]), (1 - primary) * split)
        np.add.at(mix, (rows, others[:, 1]), (1 - primary) * (1 - split))
        return mix

    def duration(self, item: int) -> int:
        return self._durations[item]

    def popularity(self, t_ms: int) -> np.ndarray:
        """Popularity of every item at ``t_ms``: Zipf base × rise-and-decay since release."""
        age_ms = t_ms - self.release_ms
        age = np.maximum(age_ms, 0)
        rise = 1.0 - np.exp(-age / (self._cfg.popularity_rise_h * _HOUR_MS))
        decay = np.exp(-age / (self.decay_h * _HOUR_MS))
        curve = rise * decay + self._cfg.evergreen_floor * (age > 0)
        return np.where(age_ms > 0, self.base_pop * curve, 0.0)

    def _table(self, t_ms: int) -> _PopTable:
        hour = t_ms // _HOUR_MS
        table = self._tables.get(hour)
        if table is None:
            pop = self.popularity(hour * _HOUR_MS)
            if pop.sum() <= 0:  # nothing released yet: fall back to base popularity
                pop = self.base_pop
            table = _PopTable(
                np.cumsum(pop).tolist(), [np.cumsum(pop[m]).tolist() for m in self.members]
            )
            self._tables[hour] = table
            if len(self._tables) > 8:
                self._tables.popitem(last=False)
        return table

    def sample_popular(self, t_ms: int, u: float) -> int:
        return _sample_cumulative(self._table(t_ms).everywhere, u)

    def sample_in_topic(self, t_ms: int, topic: int, u: float) -> int:
        cum = self._table(t_ms).by_topic[topic]
        if not cum or cum[-1] <= 0:
            return self.sample_popular(t_ms, u)
        return self._member_lists[topic][_sample_cumulative(cum, u)]

    def info(self) -> list[ItemInfo]:
        return [self._info(i) for i in range(len(self.item_ids))]

    def _info(self, i: int) -> ItemInfo:
        weights = {self.names[t]: round(float(w), 4) for t, w in enumerate(self.mix[i]) if w > 0}
        return ItemInfo(
            item_id=self.item_ids[i],
            topic=self.names[int(self.topic[i])],
            topic_weights=weights,
            duration_ms=int(self.duration_ms[i]),
            title=self.titles[i],
            base_popularity=round(float(self.base_pop[i]), 6),
            release_ms=int(self.release_ms[i]),
            popularity_decay_h=round(float(self.decay_h[i]), 3),
            quality=round(float(self.quality[i]), 4),
        )


# --------------------------------------------------------------------------- users


class _Event(NamedTuple):
    ts: int
    event_type: str
    item: int
    watch_ms: int | None
    session_id: str
    position: int


@dataclasses.dataclass(slots=True)
class _User:
    idx: int
    user_id: str
    device: str
    interests: np.ndarray  # true interests over topics, sums to 1
    initial: np.ndarray
    drift_target: int
    bias: float  # engagement propensity, logit
    feed_cum: list[float] = dataclasses.field(default_factory=list)
    pending: collections.deque[_Event] = dataclasses.field(default_factory=collections.deque)
    seen: set[int] = dataclasses.field(default_factory=set)
    sessions: int = 0
    last_ts: int = 0
    changes: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)

    @property
    def top(self) -> int:
        return int(np.argmax(self.interests))


def _new_user(idx: int, cfg: SimulatorConfig, draws: _Draws) -> _User:
    k = cfg.n_topics
    picked = draws.rng.choice(
        k,
        size=cfg.min_interests + draws.below(cfg.max_interests - cfg.min_interests + 1),
        replace=False,
    )
    weights = np.full(k, 0.05 / k)
    weights[picked] += 0.95 * draws.rng.dirichlet(np.full(len(picked), 2.0))
    outside = [t for t in range(k) if t not in set(picked.tolist())]
    web = draws.uniform() < cfg.web_share
    user = _User(
        idx=idx,
        user_id=f"u{idx:06d}",
        device="web" if web else DEVICES[draws.below(2)],
        interests=weights,
        initial=weights.copy(),
        drift_target=draws.choice(outside),
        bias=0.3 * draws.normal(),
    )
    user.feed_cum = np.cumsum(weights).tolist()
    return user


class _Behaviour:
    """Sessions, feeds and reactions of users; advances interests between sessions."""

    def __init__(self, cfg: SimulatorConfig, catalog: _Catalog, draws: _Draws):
        self.cfg = cfg
        self.catalog = catalog
        self.draws = draws

    def first_session_start(self) -> int:
        return self.cfg.start_ms + int(
            self.draws.uniform() * self.cfg.first_session_spread_s * _SECOND_MS
        )

    def next_session_start(self, user: _User) -> int:
        gap_s = self.cfg.session_gap_median_s * math.exp(
            self.cfg.session_gap_sigma * self.draws.normal()
        )
        return user.last_ts + int(min(max(gap_s, 300.0), 3 * 86400.0) * _SECOND_MS)

    def start_session(self, user: _User, t0: int) -> None:
        """Fill ``user.pending`` with the events of a session starting at ``t0``."""
        if user.sessions:
            user.feed_cum = np.cumsum(user.interests).tolist()  # the feed lags one session
            self._evolve(user, (t0 - user.last_ts) / _HOUR_MS)
        session_id = f"{user.user_id}-s{user.sessions:04d}"
        user.sessions += 1
        # How well each item matches the user now, 1 = all on the top interest.
        relevance = self.catalog.mix @ user.interests / user.interests.max()
        t = t0
        for position in range(self.draws.geometric(self.cfg.session_items_mean)):
            item = self._pick(user, t0)
            t = self._react(user, item, float(relevance[item]), t, (session_id, position))
        user.last_ts = user.pending[-1].ts

    def _evolve(self, user: _User, gap_h: float) -> None:
        old = user.top
        eta = 1.0 - math.exp(-self.cfg.drift_rate_per_h * gap_h)
        user.interests *= 1.0 - eta
        user.interests[user.drift_target] += eta
        if user.top != old:
            user.changes.append(("drift", old, user.top))
            user.drift_target = self._new_topic(user)
        if self.draws.uniform() < self.cfg.shift_probability:
            before, new = user.top, self._new_topic(user)
            user.interests *= 1.0 - self.cfg.shift_strength
            user.interests[new] += self.cfg.shift_strength
            user.changes.append(("shift", before, new))

    def _new_topic(self, user: _User) -> int:
        """A topic outside the user's three strongest."""
        strongest = set(np.argsort(-user.interests)[:3].tolist())
        return self.draws.choice([t for t in range(self.cfg.n_topics) if t not in strongest])

    def _pick(self, user: _User, t0: int) -> int:
        item = -1
        for _ in range(4):  # a feed avoids re-showing; give up after a few tries
            if self.draws.uniform() < self.cfg.feed_interest_share:
                topic = _sample_cumulative(user.feed_cum, self.draws.uniform())
                item = self.catalog.sample_in_topic(t0, topic, self.draws.uniform())
            else:
                item = self.catalog.sample_popular(t0, self.draws.uniform())
            if item not in user.seen:
                break
        user.seen.add(item)
        return item

    def _react(
        self, user: _User, item: int, relevance: float, t: int, slot: tuple[str, int]
    ) -> int:
        """Append the events for one shown item; return the time the next item shows."""
        session_id, position = slot
        draws, add = self.draws, user.pending.append
        logit = self.catalog.quality_list[item] + user.bias
        add(_Event(t, "impression", item, None, session_id, position))
        duration = self.catalog.duration(item)
        if draws.uniform() < _sigmoid(4.0 * relevance - 2.0 + logit):
            ratio = math.exp(math.log(0.2 + relevance) + 0.35 * draws.normal())
            watch = max(1, int(min(max(ratio, 0.05), 3.0) * duration))
            t += watch
            add(_Event(t, "view", item, watch, session_id, position))
            for event_type, offset in (("like", 3.5), ("share", 5.5), ("follow", 6.0)):
                if draws.uniform() < _sigmoid(4.0 * relevance - offset + logit):
                    t += 300 + int(2500 * draws.uniform())
                    add(_Event(t, event_type, item, None, session_id, position))
        elif draws.uniform() < 0.1 * (1.0 - relevance) ** 3:
            t += 800 + int(2500 * draws.uniform())
            add(_Event(t, "hide", item, None, session_id, position))
        else:
            watch = min(duration - 1, 300 + int(2700 * draws.uniform()))
            t += watch
            add(_Event(t, "skip", item, watch, session_id, position))
        return t + 300 + int(1200 * draws.uniform())


# --------------------------------------------------------------------------- encoding


def rfc3339(ms: int) -> str:
    """Epoch ms → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (exact, no float rounding)."""
    seconds, millis = divmod(ms, 1000)
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


def _event_object(
    catalog: _Catalog,
    user: _User,
    event: _Event,
    event_id: str,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": event_id,
        "user_id": user.user_id,
        "item_id": catalog.item_ids[event.item],
        "event_type": event.event_type,
        "timestamp": rfc3339(event.ts) if user.device == "web" else event.ts,
    }
    if event.watch_ms is not None:
        obj["watch_ms"] = event.watch_ms
        obj["item_duration_ms"] = catalog.duration(event.item)
    obj["surface"] = SURFACE
    obj["context"] = context or {
        "session_id": event.session_id,
        "position": event.position,
        "device": user.device,
    }
    return obj


# --------------------------------------------------------------------------- dirty lines


class _CleanLine(NamedTuple):
    line: int
    data: bytes
    user: int
    ts: int
    obj: dict[str, Any]
    item: int


class _Dirt:
    """Builds dirty lines from the recent clean history, with its own random stream."""

    def __init__(self, cfg: SimulatorConfig, catalog: _Catalog, draws: _Draws):
        self.cfg = cfg
        self.catalog = catalog
        self.draws = draws
        self.left = cfg.dirty_lines
        self.lines_left = cfg.n_events + self.left

    def next_is_dirty(self) -> bool:
        """Sequential sampling: exactly ``left`` dirty slots, uniformly placed."""
        dirty = self.left > 0 and self.draws.uniform() * self.lines_left < self.left
        self.lines_left -= 1
        self.left -= dirty
        return dirty

    def kind(self, has_history: bool) -> DirtyKind:
        kinds = self.cfg.dirty_kinds
        if not has_history:
            kinds = tuple(k for k in kinds if k not in _NEEDS_HISTORY) or (
                DirtyKind.MALFORMED_JSON,
            )
        return self.draws.choice(kinds)

    def mutate(self, kind: DirtyKind, base: _CleanLine, event_id: str) -> tuple[bytes, int | None]:
        """A copy of ``base`` with a fresh id and one defect: (line bytes, event time or None)."""
        obj = dict(base.obj, event_id=event_id)
        handler = getattr(self, f"_{kind.value}")
        result = handler(obj, base)
        if isinstance(result, bytes):
            return result, base.ts
        return _dumps(obj), result

    def _malformed_json(self, obj: dict[str, Any], base: _CleanLine) -> bytes:
        text = _dumps(obj)
        return text[: 1 + self.draws.below(len(text) - 2)]

    def _json_array(self, obj: dict[str, Any], base: _CleanLine) -> bytes:
        return _dumps([obj])

    def _missing_user_id(self, obj: dict[str, Any], base: _CleanLine) -> int:
        del obj["user_id"]
        return base.ts

    def _empty_item_id(self, obj: dict[str, Any], base: _CleanLine) -> int:
        obj["item_id"] = ""
        return base.ts

    def _id_too_long(self, obj: dict[str, Any], base: _CleanLine) -> int:
        name = self.draws.choice(("user_id", "item_id"))
        obj[name] = obj[name] + "x" * (MAX_ID_CHARS + 1 - len(obj[name]) + self.draws.below(200))
        return base.ts

    def _control_char_id(self, obj: dict[str, Any], base: _CleanLine) -> int:
        name = self.draws.choice(("user_id", "item_id"))
        char = self.draws.choice(("\x00", "\x07", "\t", "\n", "\x1b", "\x7f", "\x85"))
        obj[name] = obj[name][:3] + char + obj[name][3:]  # json.dumps escapes it: still one line
        return base.ts

    def _unknown_event_type(self, obj: dict[str, Any], base: _CleanLine) -> int:
        obj["event_type"] = self.draws.choice(
            ("purchase", "clikc", "VIEW", "impresion", "add_to_cart")
        )
        return base.ts

    def _bad_timestamp(self, obj: dict[str, Any], base: _CleanLine) -> None:
        obj["timestamp"] = self.draws.choice(
            (
                "yesterday",
                "2026-13-45T25:61:00Z",
                "2026-01-01",
                "2026-01-01T10:00:00",
                "",
                "1767225600000ms",
                True,
                [2026, 1, 1],
            )
        )

    def _timestamp_1990(self, obj: dict[str, Any], base: _CleanLine) -> int:
        obj["timestamp"] = _TS_1990_MS + self.draws.below(365 * _DAY_MS)
        return obj["timestamp"]

    def _as_view(self, obj: dict[str, Any], base: _CleanLine) -> int:
        obj["event_type"] = "view"
        obj["item_duration_ms"] = self.catalog.duration(base.item)
        return obj["item_duration_ms"]

    def _negative_watch_ms(self, obj: dict[str, Any], base: _CleanLine) -> int:
        self._as_view(obj, base)
        obj["watch_ms"] = -(1 + self.draws.below(30_000))
        return base.ts

    def _watch_exceeds_duration(self, obj: dict[str, Any], base: _CleanLine) -> int:
        duration = self._as_view(obj, base)
        obj["watch_ms"] = duration * (11 + self.draws.below(40))
        return base.ts

    def _oversize(self, obj: dict[str, Any], base: _CleanLine) -> int:
        obj["context"] = {"blob": "x" * (MAX_MESSAGE_BYTES + 1 + self.draws.below(8192))}
        return base.ts

    def _invalid_utf8(self, obj: dict[str, Any], base: _CleanLine) -> bytes:
        text = _dumps(obj)
        at = text.index(b'"item_id":"') + len(b'"item_id":"')
        bad = self.draws.choice((b"\xff", b"\xfe", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"))
        return text[:at] + bad + text[at:]

    def duplicate(self, recent: collections.deque[_CleanLine], line: int) -> _CleanLine | None:
        window = [c for c in recent if c.line >= line - _DUPLICATE_WINDOW_LINES]
        return self.draws.choice(window) if window else None

    def late_event(self, user: _User, newest_ts: int, event_id: str) -> tuple[bytes, int]:
        """A valid, fresh event ``late_by_s`` before the user's newest event time."""
        ts = newest_ts - int(self.cfg.late_by_s * _SECOND_MS)
        item = self.catalog.sample_popular(ts, self.draws.uniform())
        event_type = self.draws.choice(("impression", "view", "like"))
        watch = (
            max(1, int(self.catalog.duration(item) * self.draws.uniform()))
            if event_type == "view"
            else None
        )
        event = _Event(ts, event_type, item, watch, "", 0)
        obj = _event_object(self.catalog, user, event, event_id, context={"device": user.device})
        return _dumps(obj), ts


# --------------------------------------------------------------------------- the stream


class Simulation(Iterator[SimRecord]):
    """The stream as an iterator of ``SimRecord``, plus its ground truth.

    ``shifts`` grows while iterating; it is complete once the iterator is exhausted.
    """

    def __init__(self, config: SimulatorConfig):
        self.config = config
        catalog_rng, user_rng, dirt_rng = _streams(config.seed)
        self._catalog = _Catalog(config, catalog_rng)
        draws = _Draws(user_rng)
        self._users = [_new_user(i, config, draws) for i in range(config.n_users)]
        self._behaviour = _Behaviour(config, self._catalog, draws)
        self._dirt = _Dirt(config, self._catalog, _Draws(dirt_rng))
        # A user's entry is its next event, or its next session start when no session
        # is under way: sessions are generated when they start, in time order.
        self._heap: list[tuple[int, int]] = [
            (self._behaviour.first_session_start(), u.idx) for u in self._users
        ]
        heapq.heapify(self._heap)
        self._line = 0
        self._clean = 0
        self._dirty = 0
        self._recent: collections.deque[_CleanLine] = collections.deque(
            maxlen=_DUPLICATE_WINDOW_LINES
        )
        self._newest: dict[int, int] = {}
        self._shifts: list[InterestShift] = []
        self._items: list[ItemInfo] | None = None

    @property
    def items(self) -> list[ItemInfo]:
        if self._items is None:
            self._items = self._catalog.info()
        return self._items

    @property
    def shifts(self) -> list[InterestShift]:
        return list(self._shifts)

    @property
    def topics(self) -> list[str]:
        return list(self._catalog.names)

    @property
    def counts(self) -> dict[str, int]:
        return {"lines": self._line, "clean_events": self._clean, "dirty_lines": self._dirty}

    def __next__(self) -> SimRecord:
        if self._clean >= self.config.n_events and self._dirt.left == 0:
            raise StopIteration
        if self._dirt.next_is_dirty():
            record = self._dirty_record()
            self._dirty += 1
        else:
            record = self._clean_record()
            self._clean += 1
        self._line += 1
        return record

    def _clean_record(self) -> SimRecord:
        ts, idx = heapq.heappop(self._heap)
        user = self._users[idx]
        if not user.pending:
            self._behaviour.start_session(user, ts)
        event = user.pending.popleft()
        self._record_changes(user, ts)
        obj = _event_object(self._catalog, user, event, f"e{self.config.seed}-{self._clean:09d}")
        data = _dumps(obj)
        upcoming = user.pending[0].ts if user.pending else self._behaviour.next_session_start(user)
        heapq.heappush(self._heap, (upcoming, idx))
        self._newest[idx] = ts
        self._recent.append(_CleanLine(self._line, data, idx, ts, obj, event.item))
        return SimRecord(self._line, data, "clean", None, ts)

    def _record_changes(self, user: _User, ts: int) -> None:
        for kind, old, new in user.changes:
            names = self._catalog.names
            self._shifts.append(
                InterestShift(
                    user.user_id, ts, self._clean, self._line, kind, names[old], names[new]
                )
            )
        user.changes.clear()

    def _dirty_record(self) -> SimRecord:
        kind = self._dirt.kind(has_history=bool(self._recent))
        event_id = f"e{self.config.seed}-x{self._line:09d}"
        if kind is DirtyKind.DUPLICATE:
            original = self._dirt.duplicate(self._recent, self._line)
            if original is not None:
                return SimRecord(
                    self._line, original.data, kind.value, Reason.DUPLICATE, original.ts
                )
            kind = DirtyKind.MALFORMED_JSON
        if kind is DirtyKind.LATE:
            idx = self._dirt.draws.choice(self._recent).user
            data, ts = self._dirt.late_event(self._users[idx], self._newest[idx], event_id)
            return SimRecord(self._line, data, kind.value, Reason.LATE, ts)
        base = self._recent[-1] if self._recent else self._synthetic_base()
        data, ts = self._dirt.mutate(kind, base, event_id)
        return SimRecord(self._line, data, kind.value, EXPECTED_REASON[kind], ts)

    def _synthetic_base(self) -> _CleanLine:
        """What a dirty line before any clean one is made from."""
        user, ts = self._users[0], self.config.start_ms
        obj = _event_object(self._catalog, user, _Event(ts, "impression", 0, None, "", 0), "")
        return _CleanLine(-1, b"", 0, ts, obj, 0)

    def truth(self) -> dict[str, Any]:
        """The ``<out>.truth.json`` document (complete once the iterator is exhausted)."""
        names = self._catalog.names
        users = [
            {
                "user_id": u.user_id,
                "device": u.device,
                "initial_interests": {
                    names[t]: round(float(w), 4) for t, w in enumerate(u.initial) if w > 0.02
                },
            }
            for u in self._users
        ]
        return {
            "config": self.config.model_dump(mode="json"),
            "topics": names,
            "counts": self.counts,
            "shifts": [s.to_dict() for s in self._shifts],
            "users": users,
        }


def simulate(config: SimulatorConfig) -> Simulation:
    """The stream of ``config``: iterate it for ``SimRecord``s; ground truth on the result."""
    return Simulation(config)


# --------------------------------------------------------------------------- files


def sidecar_paths(out: pathlib.Path) -> dict[str, pathlib.Path]:
    """``<out>.labels.jsonl``, ``<out>.items.jsonl`` and ``<out>.truth.json``."""
    return {
        name: out.with_name(out.name + suffix)
        for name, suffix in (
            ("labels", ".labels.jsonl"),
            ("items", ".items.jsonl"),
            ("truth", ".truth.json"),
        )
    }


class StreamWriter:
    """Writes the JSONL stream to ``out`` and its sidecars next to it."""

    def __init__(self, out: pathlib.Path | str):
        self.out = pathlib.Path(out)
        self._paths = sidecar_paths(self.out)
        self._stream: Any = None
        self._labels: Any = None

    def __enter__(self) -> Self:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.out, "wb")
        self._labels = open(self._paths["labels"], "wb")
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in (self._stream, self._labels):
            if handle is not None:
                handle.close()

    def write(self, record: SimRecord) -> None:
        self._stream.write(record.data + b"\n")
        if not record.is_clean:
            self._labels.write(_dumps(record.label()) + b"\n")

    def tee(self, records: Iterable[SimRecord]) -> Iterator[SimRecord]:
        """Write each record as it passes through."""
        for record in records:
            self.write(record)
            yield record

    def finish(self, sim: Simulation) -> None:
        """Write the items and truth sidecars (after the stream is exhausted)."""
        with open(self._paths["items"], "wb") as items:
            items.writelines(_dumps(item.to_dict()) + b"\n" for item in sim.items)
        self._paths["truth"].write_bytes(json.dumps(sim.truth(), indent=1).encode() + b"\n")


# --------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtp simulate", description="Simulated short-video engagement stream."
    )
    parser.add_argument("--events", type=int, default=10_000, help="clean events to emit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, help="JSONL output; sidecars go next to it")
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument(
        "--dirty-fraction", type=float, default=0.0, help="fraction of lines that are dirty"
    )
    parser.add_argument(
        "--late-by-s", type=float, default=6 * 3600.0, help="how late late lines are, seconds"
    )
    parser.add_argument("--start", default=rfc3339(DEFAULT_START_MS), help="stream start, RFC 3339")
    parser.add_argument("--publish-topic", help="projects/P/topics/T; honours PUBSUB_EMULATOR_HOST")
    parser.add_argument(
        "--rate", type=float, help="publish rate, events/s (default: as fast as possible)"
    )
    return parser


def _config_from(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        n_events=args.events,
        seed=args.seed,
        n_users=args.users,
        n_items=args.items,
        n_topics=args.topics,
        dirty_fraction=args.dirty_fraction,
        late_by_s=args.late_by_s,
        start_ms=args.start,
    )


def _drain(records: Iterable[SimRecord], args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.publish_topic:
        collections.deque(records, maxlen=0)
        return None
    from rtp.simulator import publish  # lazy: pulls in the Pub/Sub client

    return publish.publish_records(records, args.publish_topic, rate=args.rate).to_dict()


def main(argv: list[str] | None = None) -> int:
    """``rtp simulate``: write JSONL + sidecars and/or publish; print a JSON summary."""
    cli = parser()
    args = cli.parse_args(argv)
    if args.out is None and args.publish_topic is None:
        cli.error("give --out and/or --publish-topic")
    try:
        config = _config_from(args)
    except ValueError as err:
        cli.error(str(err))
    started = time.perf_counter()
    sim = simulate(config)
    published = None
    if args.out is not None:
        with StreamWriter(args.out) as writer:
            published = _drain(writer.tee(sim), args)
            writer.finish(sim)
    else:
        published = _drain(sim, args)
    elapsed = time.perf_counter() - started
    summary = dict(
        sim.counts,
        elapsed_s=round(elapsed, 3),
        events_per_s=round(sim.counts["clean_events"] / max(elapsed, 1e-9)),
    )
    summary.update(out=str(args.out) if args.out else None, publish=published)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
