"""A feature sink that records every call in a JSONL file, with injectable failures.

The factory is picklable (a path and two numbers), so WriteFeatures can build the
sink on the worker; the DirectRunner runs in-process, so the test reads the file.
"""

from __future__ import annotations

import json
import pathlib
import threading
from typing import Any

_LOCK = threading.Lock()


class FlakyStoreError(RuntimeError):
    """The recording sink's injected failure."""


class RecordingSink:
    def __init__(self, log: pathlib.Path, fail_first: int, always_fail: bool):
        self._log = log
        self._fails_left = fail_first
        self._always_fail = always_fail

    def _record(self, **entry: Any) -> None:
        with _LOCK, self._log.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def open(self) -> None:
        self._record(call="open")

    def write_rows(self, view: str, rows: list[dict]) -> int:
        failing = self._always_fail or self._fails_left > 0
        self._fails_left -= 1
        self._record(call="write", view=view, rows=list(rows), ok=not failing)
        if failing:
            raise FlakyStoreError(f"injected failure writing {len(rows)} {view} rows")
        return len(rows)

    def close(self) -> None:
        self._record(call="close")


class RecordingSinkFactory:
    """Builds ``RecordingSink``s logging to ``log``; each sink fails its first
    ``fail_first`` writes, or every write with ``always_fail``."""

    def __init__(self, log: str | pathlib.Path, fail_first: int = 0, always_fail: bool = False):
        self.log = str(log)
        self.fail_first = fail_first
        self.always_fail = always_fail

    def __call__(self) -> RecordingSink:
        return RecordingSink(pathlib.Path(self.log), self.fail_first, self.always_fail)

    def applied_once(self) -> RecordingSinkFactory:
        """As ``FeastSinkFactory.applied_once``: nothing to apply."""
        return self

    def calls(self) -> list[dict]:
        path = pathlib.Path(self.log)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def writes(self, view: str | None = None, ok: bool | None = None) -> list[dict]:
        return [
            c
            for c in self.calls()
            if c["call"] == "write"
            and (view is None or c["view"] == view)
            and (ok is None or c["ok"] == ok)
        ]

    def stored(self, view: str, key: str) -> dict[str, dict]:
        """What a store would hold: the newest successfully written row per entity."""
        out: dict[str, dict] = {}
        for call in self.writes(view, ok=True):
            for row in call["rows"]:
                old = out.get(row[key])
                if old is None or row["event_timestamp"] >= old["event_timestamp"]:
                    out[row[key]] = row
        return out
