"""Simulated users: their interests, which drift or shift between sessions, and
their sessions: the feed they are shown and how they react to each item."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from rtp.simulator.catalogue import Catalogue, sample_cumulative
from rtp.simulator.config import HOUR_MS, SECOND_MS, SimulatorConfig
from rtp.simulator.randomness import Draws, sigmoid

DEVICES = ("ios", "android", "web")


class SessionEvent(NamedTuple):
    ts: int
    event_type: str
    item: int
    watch_ms: int | None
    session_id: str
    position: int


@dataclasses.dataclass(slots=True)
class User:
    idx: int
    user_id: str
    device: str
    interests: np.ndarray  # true interests over topics, sums to 1
    initial: np.ndarray
    drift_target: int
    bias: float  # engagement propensity, logit
    feed_cum: list[float] = dataclasses.field(default_factory=list)
    pending: collections.deque[SessionEvent] = dataclasses.field(default_factory=collections.deque)
    seen: set[int] = dataclasses.field(default_factory=set)
    sessions: int = 0
    last_ts: int = 0
    changes: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)

    @property
    def top(self) -> int:
        return int(np.argmax(self.interests))


def new_user(idx: int, cfg: SimulatorConfig, draws: Draws) -> User:
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
    user = User(
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


class Behaviour:
    """Sessions, feeds and reactions of users; advances interests between sessions."""

    def __init__(self, cfg: SimulatorConfig, catalog: Catalogue, draws: Draws):
        self.cfg = cfg
        self.catalog = catalog
        self.draws = draws

    def first_session_start(self) -> int:
        return self.cfg.start_ms + int(
            self.draws.uniform() * self.cfg.first_session_spread_s * SECOND_MS
        )

    def next_session_start(self, user: User) -> int:
        gap_s = self.cfg.session_gap_median_s * math.exp(
            self.cfg.session_gap_sigma * self.draws.normal()
        )
        return user.last_ts + int(min(max(gap_s, 300.0), 3 * 86400.0) * SECOND_MS)

    def start_session(self, user: User, t0: int, feed: Iterable[int] | None = None) -> None:
        """Fill ``user.pending`` with the events of a session starting at ``t0``.

        ``feed``: the items shown, in order (catalogue indexes, e.g. a recommender's
        answer); None: the simulator's own feed, a geometric number of items picked
        from the user's interests as the feed knew them one session ago. Either way
        the interests first drift (and may shift) by the time since the last session.
        """
        if user.sessions:
            user.feed_cum = np.cumsum(user.interests).tolist()  # the feed lags one session
            self._evolve(user, (t0 - user.last_ts) / HOUR_MS)
        session_id = f"{user.user_id}-s{user.sessions:04d}"
        user.sessions += 1
        # How well each item matches the user now, 1 = all on the top interest.
        relevance = self.catalog.mix @ user.interests / user.interests.max()
        if feed is None:  # picked one at a time, between reactions: the draws' order
            size = self.draws.geometric(self.cfg.session_items_mean)
            feed = (self._pick(user, t0) for _ in range(size))
        t = t0
        for position, item in enumerate(feed):
            t = self._react(user, item, float(relevance[item]), t, (session_id, position))
        user.last_ts = user.pending[-1].ts if user.pending else t0

    def _evolve(self, user: User, gap_h: float) -> None:
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

    def _new_topic(self, user: User) -> int:
        """A topic outside the user's three strongest."""
        strongest = set(np.argsort(-user.interests)[:3].tolist())
        return self.draws.choice([t for t in range(self.cfg.n_topics) if t not in strongest])

    def _pick(self, user: User, t0: int) -> int:
        item = -1
        for _ in range(4):  # a feed avoids re-showing; give up after a few tries
            if self.draws.uniform() < self.cfg.feed_interest_share:
                topic = sample_cumulative(user.feed_cum, self.draws.uniform())
                item = self.catalog.sample_in_topic(t0, topic, self.draws.uniform())
            else:
                item = self.catalog.sample_popular(t0, self.draws.uniform())
            if item not in user.seen:
                break
        user.seen.add(item)
        return item

    def _react(self, user: User, item: int, relevance: float, t: int, slot: tuple[str, int]) -> int:
        """Append the events for one shown item; return the time the next item shows."""
        session_id, position = slot
        draws, add = self.draws, user.pending.append
        logit = self.catalog.quality_list[item] + user.bias
        add(SessionEvent(t, "impression", item, None, session_id, position))
        duration = self.catalog.duration(item)
        if draws.uniform() < sigmoid(4.0 * relevance - 2.0 + logit):
            ratio = math.exp(math.log(0.2 + relevance) + 0.35 * draws.normal())
            watch = max(1, int(min(max(ratio, 0.05), 3.0) * duration))
            t += watch
            add(SessionEvent(t, "view", item, watch, session_id, position))
            for event_type, offset in (("like", 3.5), ("share", 5.5), ("follow", 6.0)):
                if draws.uniform() < sigmoid(4.0 * relevance - offset + logit):
                    t += 300 + int(2500 * draws.uniform())
                    add(SessionEvent(t, event_type, item, None, session_id, position))
        elif draws.uniform() < 0.1 * (1.0 - relevance) ** 3:
            t += 800 + int(2500 * draws.uniform())
            add(SessionEvent(t, "hide", item, None, session_id, position))
        else:
            watch = min(duration - 1, 300 + int(2700 * draws.uniform()))
            t += watch
            add(SessionEvent(t, "skip", item, watch, session_id, position))
        return t + 300 + int(1200 * draws.uniform())
