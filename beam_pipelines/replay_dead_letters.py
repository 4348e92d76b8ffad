"""Write again the feature rows the streaming job could not write to the store.

    rtp replay-dead-letters DIR [--store_config YAML | --store_path DB] [--dry_run]

A store write that still failed after its retries (``--write_retry_budget_s``)
left each row as a dead letter ``store_write_failed`` with the row and its key's
encoded state (``transforms.write.write_letter``). Rows are cumulative, so only
the newest letter of each entity matters, and only if the store does not hold a
newer row already (the job went on writing after the store came back):

- ``user_realtime``/``item_realtime``: newer means a later (newest event time,
  event count) than the stored row's features;
- the co-engagement views: a later event time than the stored row's (the store
  keeps it to the second; a row of the same second is kept).

A row is written with its state (features first, as the job does), so a job
started afterwards resumes from it. Replaying the same letters again writes
nothing: the command is idempotent. Letters of any other reason are counted and
left alone. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from beam_pipelines.console import configure_logging
from beam_pipelines.jobs_common import store_config
from beam_pipelines.transforms.dead_letters import DeadLetter
from beam_pipelines.transforms.write import (
    COUNT_COLUMNS,
    STORE_WRITE_FAILED,
    read_letter,
    row_version,
    state_rows,
)
from feature_repo.features import (
    EVENT_TIMESTAMP,
    FEATURE_VIEWS,
    ITEM_LAST_EVENT_MS,
    ITEM_REALTIME,
    KEYED_STATE,
    USER_LAST_EVENT_MS,
    USER_REALTIME,
)
from feature_repo.store import DEFAULT_SQLITE_PATH

LAST_EVENT_COLUMNS = {USER_REALTIME: USER_LAST_EVENT_MS, ITEM_REALTIME: ITEM_LAST_EVENT_MS}


def read_letters(directory: Path) -> list[DeadLetter]:
    """Every dead letter in ``directory``'s ``*.jsonl`` files (the job's --dead_letter_dir)."""
    return [
        DeadLetter.from_json(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def newest_rows(letters: list[DeadLetter]) -> dict[str, dict[str, dict]]:
    """``view → entity → newest row`` of the ``store_write_failed`` letters."""
    newest: dict[str, dict[str, dict]] = {}
    for letter in letters:
        if letter.reason != STORE_WRITE_FAILED:
            continue
        view, row = read_letter(letter.payload)
        entity = row[FEATURE_VIEWS[view][0]]
        rows = newest.setdefault(view, {})
        if entity not in rows or row_version(view, row) > row_version(view, rows[entity]):
            rows[entity] = row
    return newest


def stored_versions(client, view: str, entities: list[str]) -> dict[str, tuple]:
    """The version (as ``row_version`` orders rows) of each entity's stored row."""
    if view in COUNT_COLUMNS:
        rows = client.read(view, entities)
        last, count = LAST_EVENT_COLUMNS[view], COUNT_COLUMNS[view]
        return {e: (row[last], row[count]) for e, row in rows.items() if row is not None}
    return {e: (ms, 0) for e, ms in client.read_event_times(view, entities).items()}


def _newer(view: str, row: dict, stored: tuple | None) -> bool:
    if stored is None:
        return True
    if view in COUNT_COLUMNS:
        return row_version(view, row) > stored
    return row[EVENT_TIMESTAMP] // 1000 * 1000 > stored[0]  # the store keeps seconds


def replay(client, letters: list[DeadLetter], dry_run: bool = False) -> dict:
    """Write the newest failed row of each entity that the store holds no newer
    row of; returns the counts."""
    summary = {
        "letters": len(letters),
        "by_reason": dict(Counter(letter.reason for letter in letters)),
        "written": {},
        "already_stored": {},
    }
    for view, rows in sorted(newest_rows(letters).items()):
        stored = stored_versions(client, view, list(rows))
        todo = [row for entity, row in rows.items() if _newer(view, row, stored.get(entity))]
        summary["written"][view] = len(todo)
        summary["already_stored"][view] = len(rows) - len(todo)
        if todo and not dry_run:
            features, states = state_rows(view, todo, None)  # no progress mark: old rows
            client.write_rows(view, features)
            if states:
                client.write_rows(KEYED_STATE, states)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtp replay-dead-letters",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )
    p.add_argument("dir", metavar="DIR", help="The streaming job's --dead_letter_dir.")
    p.add_argument("--store_config", help="Online store YAML; default: embedded SQLite.")
    p.add_argument(
        "--store_path",
        default=DEFAULT_SQLITE_PATH,
        help=f"SQLite store when --store_config is not given (default: {DEFAULT_SQLITE_PATH}).",
    )
    p.add_argument("--dry_run", action="store_true", help="Count what would be written only.")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Arguments; ``--help`` or a bad one (or DIR not a directory) exits 2 with the usage."""
    p = parser()
    args = p.parse_args(argv)
    if not Path(args.dir).is_dir():
        p.error(f"DIR {args.dir!r} is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    configure_logging(level=logging.WARNING)  # the summary is the output
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from feature_repo.store import FeatureStoreClient

    letters = read_letters(Path(args.dir))
    with FeatureStoreClient(store_config(args.store_config, args.store_path)) as client:
        summary = replay(client, letters, args.dry_run)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
