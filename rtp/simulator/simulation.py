"""Deterministic engagement stream for a short-video feed, with its ground truth.

``simulate(config)`` yields one ``SimRecord`` per output line: clean events in
global event-time order, and, when ``dirty_fraction > 0``, labelled dirty lines
inserted between them. Item metadata and every change of a user's top interest
(gradual drift or abrupt shift) are kept as ground truth on the returned
``Simulation`` (``items``, ``shifts``, ``truth()``).

Randomness comes from ``numpy.random.Generator(PCG64)`` streams spawned from the
seed: one for the catalog, one for user behaviour, one for dirty lines, so the
clean lines are the same whatever ``dirty_fraction`` is. Times are epoch
milliseconds (UTC) unless a name says otherwise.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Iterator
from typing import Any

from beam_pipelines.events import Reason
from rtp.simulator.behaviour import Behaviour, SessionEvent, User, new_user
from rtp.simulator.catalogue import Catalogue
from rtp.simulator.config import EXPECTED_REASON, DirtyKind, SimulatorConfig
from rtp.simulator.dirty_lines import DUPLICATE_WINDOW_LINES, CleanLine, Dirt
from rtp.simulator.encoding import dumps, event_object
from rtp.simulator.randomness import Draws, streams
from rtp.simulator.records import InterestShift, ItemInfo, SimRecord


class Simulation(Iterator[SimRecord]):
    """The stream as an iterator of ``SimRecord``, plus its ground truth.

    ``shifts`` grows while iterating; it is complete once the iterator is exhausted.
    """

    def __init__(self, config: SimulatorConfig):
        self.config = config
        catalog_rng, user_rng, dirt_rng = streams(config.seed)
        self._catalog = Catalogue(config, catalog_rng)
        draws = Draws(user_rng)
        self._users = [new_user(i, config, draws) for i in range(config.n_users)]
        self._behaviour = Behaviour(config, self._catalog, draws)
        self._dirt = Dirt(config, self._catalog, Draws(dirt_rng))
        # A user's entry is its next event, or its next session start when no session
        # is under way: sessions are generated when they start, in time order.
        self._heap: list[tuple[int, int]] = [
            (self._behaviour.first_session_start(), u.idx) for u in self._users
        ]
        heapq.heapify(self._heap)
        self._line = 0
        self._clean = 0
        self._dirty = 0
        self._recent: collections.deque[CleanLine] = collections.deque(
            maxlen=DUPLICATE_WINDOW_LINES
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
    def catalogue(self) -> Catalogue:
        return self._catalog

    @property
    def behaviour(self) -> Behaviour:
        """The users' model (interests, reactions), which the closed loop drives too."""
        return self._behaviour

    @property
    def users(self) -> list[User]:
        """The simulated users, in their state after the lines iterated so far."""
        return self._users

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
        obj = event_object(self._catalog, user, event, f"e{self.config.seed}-{self._clean:09d}")
        data = dumps(obj)
        upcoming = user.pending[0].ts if user.pending else self._behaviour.next_session_start(user)
        heapq.heappush(self._heap, (upcoming, idx))
        self._newest[idx] = ts
        self._recent.append(CleanLine(self._line, data, idx, ts, obj, event.item))
        return SimRecord(self._line, data, "clean", None, ts)

    def _record_changes(self, user: User, ts: int) -> None:
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

    def _synthetic_base(self) -> CleanLine:
        """What a dirty line before any clean one is made from."""
        user, ts = self._users[0], self.config.start_ms
        obj = event_object(self._catalog, user, SessionEvent(ts, "impression", 0, None, "", 0), "")
        return CleanLine(-1, b"", 0, ts, obj, 0)

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
