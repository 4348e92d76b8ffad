"""The backfill's counts read back from its outputs, for runners without metrics.

Beam's DaskRunner (2.77) collects no metrics (``PipelineResult.metrics`` raises
``NotImplementedError``), so on it the summary counts what the job wrote, under
the names of the ``rtp`` counters the local runner reports: every valid event is
either applied (one user-history row) or a late/duplicate dead letter, and every
record read is valid or a parse dead letter. The Dask integration test holds these
to the local runner's counters on the same log.
"""

from __future__ import annotations

import collections
import pathlib

import pyarrow.dataset as ds

from beam_pipelines.events import Reason
from beam_pipelines.transforms.dead_letters import DeadLetter
from feature_repo.features import ITEM_KEY, ITEM_REALTIME, USER_KEY, USER_REALTIME

_STATE_REASONS = (Reason.LATE.value, Reason.DUPLICATE.value)


def _keys(directory: pathlib.Path, key: str) -> tuple[int, int]:
    """(rows, distinct keys) of the Parquet files under ``directory``."""
    if not directory.is_dir():
        return 0, 0
    column = ds.dataset(directory, format="parquet").to_table(columns=[key]).column(key)
    return len(column), len(column.unique())


def dead_letter_reasons(directory: pathlib.Path) -> collections.Counter:
    return collections.Counter(
        DeadLetter.from_json(line).reason
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
        if line
    )


def counts_from_outputs(out: pathlib.Path) -> dict[str, int]:
    """``{counter name: value}`` of ``backfill.summarize`` from ``<out>``'s files."""
    reasons = dead_letter_reasons(out / "dead_letters")
    applied, users = _keys(out / "offline" / USER_REALTIME, USER_KEY)
    _, items = _keys(out / "offline" / ITEM_REALTIME, ITEM_KEY)
    late, duplicates = (reasons.get(r, 0) for r in _STATE_REASONS)
    valid = applied + late + duplicates
    parse_failures = sum(n for r, n in reasons.items() if r not in _STATE_REASONS)
    return {
        "events_read": valid + parse_failures,
        "events_valid": valid,
        **{f"dead_letter_{reason}": n for reason, n in reasons.items()},
        "late": late,
        "duplicates": duplicates,
        "user_updates": applied,
        "users": users,
        "items": items,
    }
