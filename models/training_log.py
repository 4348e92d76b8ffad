"""Event logs for training: parsed, scored, deduplicated and put in time order.

The backfill replays a log in arrival order; MovieLens files arrive sorted by
user and movie, not by time, so a replay would stamp history rows out of order.
Training therefore reads the log once here with the same readers, parser and
reward config as the backfill, and hands the backfill a time-sorted JSONL copy:
arrival order is then event-time order, and every history row is exact point in
time. Times are epoch milliseconds (UTC).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import pandas as pd

from beam_pipelines.event_logs import FORMATS, parse_log, tie_key
from beam_pipelines.events import ValidationConfig
from beam_pipelines.rewards import RewardConfig, load_reward_config

LOG = logging.getLogger(__name__)
MOVIELENS_MIN_TIMESTAMP_MS = 788_918_400_000  # 1995-01-01, as the backfill uses
EVENT_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "timestamp_ms",
    "reward",
    "engaged",
    "exposure",
)


@dataclasses.dataclass(frozen=True)
class TrainingLog:
    """Accepted events sorted by ``(timestamp_ms, user_id, tie_key)`` (stable).

    ``frame`` has ``EVENT_COLUMNS``; ``lines`` are the contract JSON of the same
    events in the same order (what the backfill reads); ``rejected`` counts the
    invalid and duplicate records by reason.
    """

    frame: pd.DataFrame
    lines: list[bytes]
    rewards: RewardConfig
    rejected: dict[str, int]

    def write_jsonl(self, path: str | pathlib.Path) -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.writelines(line + b"\n" for line in self.lines)
        return path


def default_reward(fmt: str) -> str:
    """The reward preset the backfill uses for a format."""
    return "movielens" if fmt == "movielens" else "short_video"


def load_events(path: str, fmt: str = "jsonl", reward: str | None = None) -> TrainingLog:
    """Read, validate, score and deduplicate an event log (first arrival wins)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    rewards = load_reward_config(reward or default_reward(fmt))
    limits: dict = {"event_types": rewards.event_types}
    if fmt == "movielens":
        limits["min_timestamp_ms"] = MOVIELENS_MIN_TIMESTAMP_MS
    validation = ValidationConfig(**limits)
    events, rejected = parse_log(path, fmt, validation)
    rows, lines = [], []
    for event in events:
        value, engaged = rewards.reward(event)
        rows.append(
            (
                event.event_id,
                event.user_id,
                event.item_id,
                event.event_type,
                event.timestamp_ms,
                float(value),
                bool(engaged),
                rewards.is_exposure(event.event_type),
            )
        )
        lines.append(event.to_json())
    if not rows:
        raise ValueError(f"no valid events in {path!r} (rejected: {dict(rejected)})")
    if rejected:
        LOG.warning("event log %s: skipped %s", path, dict(rejected))
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    # Same-timestamp events of one user in the protocol's tie order, not by item id.
    frame["_tie"] = [tie_key(u, i) for u, i in zip(frame["user_id"], frame["item_id"], strict=True)]
    frame["_user"] = _user_order(frame["user_id"])
    order = frame.sort_values(["timestamp_ms", "_user", "_tie"], kind="stable").index
    frame = frame.drop(columns=["_tie", "_user"])
    frame = frame.loc[order].reset_index(drop=True)
    return TrainingLog(frame, [lines[i] for i in order], rewards, dict(rejected))


def _user_order(users: pd.Series) -> pd.Series:
    """Users sort as numbers when every id is a decimal integer (MovieLens), else as text."""
    try:
        return users.astype("int64")
    except ValueError:
        return users


def time_split(n_events: int, train_fraction: float = 0.8) -> int:
    """Index of the first validation event: the first ``train_fraction`` train
    (``n_events`` when the fraction is 1: no validation)."""
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    return round(n_events * train_fraction)
