"""Time to adapt after a ground-truth interest shift (simulator runs only).

The simulator's ``<out>.truth.json`` lists every change of a user's top topic
(``shifts``: ``user_id``, ``time_ms`` = first event of the session it takes
effect in, ``kind`` ``shift`` or ``drift``, ``new_topic``); ``<out>.items.jsonl``
gives each item's ``topic``. For every abrupt shift inside the test stream, before
each of that user's events from ``time_ms`` on, the replay records every
variant's top-10. The time to adapt is the number of the user's events seen
since the shift (0 = already before its first event) until the new topic

- ``any``: has at least one item in the top-10, and
- ``plurality``: is strictly the most frequent topic of the top-10 (more items
  than any other topic; ``any`` is weak, a popularity list often meets it by chance).

A shift the variant had not adapted to by the user's next shift, the end of the
stream or ``max_events`` is censored; medians count censored shifts as infinite
(``null`` when more than half are).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib

import numpy as np

from models.evaluation.data import ReplayLog
from models.evaluation.world import World

CRITERIA = ("any", "plurality")


@dataclasses.dataclass
class _Shift:
    user: int
    start_k: int  # first event position of the shift's session
    end_k: int  # first event position of the user's next shift (exclusive)
    new_topic: str
    seen: int = 0  # the user's events applied since the shift
    adapted: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)


def read_truth(
    truth_path: str | pathlib.Path, items_path: str | pathlib.Path
) -> tuple[list[dict], dict[str, str]]:
    """Shifts of ``<out>.truth.json`` and item → topic of ``<out>.items.jsonl``."""
    truth = json.loads(pathlib.Path(truth_path).read_text())
    topics = {}
    for line in pathlib.Path(items_path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            topics[str(record["item_id"])] = str(record["topic"])
    return truth.get("shifts", []), topics


class AdaptTracker:
    """An ``Observer`` of the replay that measures time to adapt per variant."""

    def __init__(
        self,
        log: ReplayLog,
        shifts: list[dict],
        item_topics: dict[str, str],
        variants: list[str],
        k: int = 10,
        max_events: int = 500,
        kinds: tuple[str, ...] = ("shift",),
    ):
        self.k = k
        self.max_events = max_events
        self.variants = variants
        self.topic_of = np.array([item_topics.get(i, "") for i in log.items], dtype=object)
        self.log = log
        self.shifts = self._locate(shifts, kinds)
        self._open: dict[int, _Shift] = {}
        self._by_start = collections.defaultdict(list)
        for shift in self.shifts:
            self._by_start[shift.start_k].append(shift)

    def _locate(self, shifts: list[dict], kinds: tuple[str, ...]) -> list[_Shift]:
        log = self.log
        index = {u: i for i, u in enumerate(log.users)}
        positions = collections.defaultdict(list)
        for k in range(log.n_train, len(log.events)):
            positions[int(log.user_idx[k])].append(k)
        found = []
        test_start_ms = int(log.ts_ms[log.n_train]) if log.n_train < len(log.events) else 2**62
        per_user = collections.defaultdict(list)
        for s in sorted(shifts, key=lambda s: s["time_ms"]):
            user = index.get(s["user_id"])
            if user is not None:
                per_user[user].append(s)
        for user, items in per_user.items():
            ks = positions.get(user, [])
            ts = log.ts_ms[ks] if ks else np.zeros(0, dtype=np.int64)
            starts = [int(np.searchsorted(ts, s["time_ms"], side="left")) for s in items]
            for n, s in enumerate(items):
                if s["kind"] not in kinds or s["time_ms"] < test_start_ms or starts[n] >= len(ks):
                    continue
                end = starts[n + 1] if n + 1 < len(items) else len(ks)
                if end > starts[n]:
                    found.append(_Shift(user, ks[starts[n]], ks[end - 1] + 1, s["new_topic"]))
        return found

    def wants(self, k: int, world: World) -> bool:
        user = int(self.log.user_idx[k])
        for started in self._by_start.pop(k, ()):
            self._open[user] = started
        shift = self._open.get(user)
        if shift is None:
            return False
        if k >= shift.end_k or shift.seen >= self.max_events or self._done(shift):
            del self._open[user]
            return False
        shift.seen += 1  # counted now; the event is applied right after the probe
        return True

    def _done(self, shift: _Shift) -> bool:
        return len(shift.adapted) == len(self.variants) * len(CRITERIA)

    def record(self, k: int, variant: str, top: np.ndarray) -> None:
        shift = self._open[int(self.log.user_idx[k])]
        topics = collections.Counter(self.topic_of[top].tolist())
        new = topics.pop(shift.new_topic, 0)
        hits = {"any": new > 0, "plurality": new > max(topics.values(), default=0)}
        for criterion, hit in hits.items():
            if hit:
                shift.adapted.setdefault((variant, criterion), shift.seen - 1)

    def summary(self) -> dict:
        """Per variant and criterion: shifts, adapted, median and mean events."""
        out: dict = {"n_shifts": len(self.shifts), "k": self.k, "max_events": self.max_events}
        for variant in self.variants:
            out[variant] = {}
            for criterion in CRITERIA:
                values = [s.adapted.get((variant, criterion)) for s in self.shifts]
                adapted = [v for v in values if v is not None]
                ordered = np.array([np.inf if v is None else v for v in values], dtype=np.float64)
                median = float(np.median(ordered)) if ordered.size else float("nan")
                out[variant][criterion] = {
                    "adapted": len(adapted),
                    "median_events": median if np.isfinite(median) else None,
                    "mean_events_adapted": float(np.mean(adapted)) if adapted else None,
                }
        return out
