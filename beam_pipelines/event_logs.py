"""Bounded event logs for the backfill: JSONL, CSV in MovieLens columns, Parquet.

Every record becomes the contract's JSON bytes with a sequence number (arrival
order: file by sorted name, then line), so one parser validates every source and
the backfill can replay arrival order. MovieLens ratings become ``rating`` events
with ``context.rating``; their timestamps are seconds.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import json
import pathlib
from collections.abc import Iterator, Sequence

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.events import (
    EngagementEvent,
    EventValidationError,
    ValidationConfig,
    parse_event,
)

FORMATS = ("jsonl", "movielens", "parquet")
SUFFIX_FORMATS = {".csv": "movielens", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_FILE_SHIFT = 40  # seq = file_index << 40 | record index: 1e12 records per file
MOVIELENS_COLUMNS = {
    "user": ("user", "userId"),
    "item": ("item", "movieId"),
    "rating": ("rating",),
    "timestamp": ("timestamp",),
}


def tie_key(user_id: str, item_id: str) -> int:
    """The protocol's order of one user's same-timestamp events: a hash of both ids.

    MovieLens users rate many items within one second; ordering those by item id
    would hand a sequence model a pattern no live stream has (EVALUATION.md, step 1).
    Ids hash as written in the file (decimal text for numeric ids).
    """
    digest = hashlib.blake2b(f"{user_id}\x1f{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def infer_format(pattern: str) -> str | None:
    """The format a log's file extension names (``SUFFIX_FORMATS``; a glob's too:
    ``logs/*.parquet``), or None."""
    return SUFFIX_FORMATS.get(pathlib.PurePath(str(pattern)).suffix.lower())


class EventLogParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose ``--format``, when not given, is the one the
    ``--events`` file extension names (``.csv`` → movielens, ``.jsonl``/``.json`` →
    jsonl, ``.parquet`` → parquet), else ``fallback``; none, or one this command
    does not read, is a usage error (exit 2)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._format: tuple[tuple[str, ...], str | None, str] | None = None

    def add_format_argument(
        self, formats: Sequence[str] = FORMATS, fallback: str | None = None, dest: str = "format"
    ) -> None:
        self._format = (tuple(formats), fallback, dest)
        self.add_argument(
            "--format",
            choices=formats,
            dest=dest,
            help="Event log format (default: from the --events extension: .csv movielens, "
            ".jsonl/.json jsonl, .parquet parquet"
            + (f"; else {fallback}" if fallback else "")
            + ").",
        )

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if self._format is None:
            return parsed, extras
        formats, fallback, dest = self._format
        events = getattr(parsed, "events", None)
        if events is not None and getattr(parsed, dest) is None:
            fmt, known = infer_format(str(events)) or fallback, ", ".join(formats)
            if fmt is None:
                self.error(f"cannot tell the format of {events}: give --format ({known})")
            if fmt not in formats:
                self.error(f"{events} looks like {fmt}, not one of {known}: give --format")
            setattr(parsed, dest, fmt)
        return parsed, extras


def expand_paths(pattern: str) -> list[str]:
    """Paths matching a glob (or a single file), sorted so arrival order is stable."""
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no event log matches {pattern!r}")
    return sorted(m.path for m in matches)


def read_log(indexed_path: tuple[int, str], fmt: str) -> Iterator[tuple[int, bytes]]:
    """``(seq, bytes)`` records of one file."""
    file_index, path = indexed_path
    base = file_index << _FILE_SHIFT
    reader = {"jsonl": _jsonl, "movielens": _movielens, "parquet": _parquet}[fmt]
    for index, record in enumerate(reader(path)):
        yield base + index, record


def read_chunks(
    indexed_path: tuple[int, str], fmt: str, size: int = 20_000
) -> Iterator[tuple[list[int], list[bytes]]]:
    """``(seqs, records)`` of one file, ``size`` records at a time."""
    seqs: list[int] = []
    records: list[bytes] = []
    for seq, record in read_log(indexed_path, fmt):
        seqs.append(seq)
        records.append(record)
        if len(records) == size:
            yield seqs, records
            seqs, records = [], []
    if records:
        yield seqs, records


def read_split(
    split: tuple[int, str, int], fmt: str, splits: int
) -> Iterator[tuple[list[int], list[bytes]]]:
    """The chunks of one file whose index is ``part`` modulo ``splits``, for
    ``split = (file_index, path, part)``: ``splits`` readers share a file's parsing
    (each reads the file, keeps a chunk in ``splits``)."""
    file_index, path, part = split
    for index, chunk in enumerate(read_chunks((file_index, path), fmt)):
        if index % splits == part:
            yield chunk


def count_records(paths: Sequence[str], fmt: str) -> int:
    """About how many records the files hold (newlines; Parquet: its row counts):
    a size for sharding, counted without parsing."""
    import pyarrow.parquet as pq

    total = 0
    for path in paths:
        with FileSystems.open(path) as handle:
            if fmt == "parquet":
                total += pq.ParquetFile(handle).metadata.num_rows
                continue
            while block := handle.read(1 << 22):
                total += block.count(b"\n")
    return total


def parse_log(
    pattern: str, fmt: str, validation: ValidationConfig, now_ms: int | None = None
) -> tuple[list[EngagementEvent], collections.Counter[str]]:
    """Valid events of a bounded log in arrival order, the first delivery of each
    event_id only, and the count of skipped records by reason (``duplicate`` for
    redeliveries). For readers outside Beam (training, evaluation); ``now_ms``
    as in ``parse_event`` (None: the wall clock bounds future timestamps)."""
    kwargs = {} if now_ms is None else {"now_ms": now_ms}
    events: list[EngagementEvent] = []
    skipped: collections.Counter[str] = collections.Counter()
    seen: set[str] = set()
    for file_index, name in enumerate(expand_paths(pattern)):
        for _, data in read_log((file_index, name), fmt):
            try:
                event = parse_event(data, validation, **kwargs)
            except EventValidationError as err:
                skipped[err.reason.value] += 1
                continue
            if event.event_id in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(event.event_id)
            events.append(event)
    return events, skipped


def _jsonl(path: str) -> Iterator[bytes]:
    with FileSystems.open(path) as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line:
                yield line


def _column(header: list[str], names: tuple[str, ...]) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise ValueError(f"MovieLens CSV header needs one of the columns {names}, has {header}")


def _movielens(path: str) -> Iterator[bytes]:
    with FileSystems.open(path) as handle:
        rows = csv.reader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
        header = next(rows)
        cols = {key: _column(header, names) for key, names in MOVIELENS_COLUMNS.items()}
        width = max(cols.values()) + 1
        for row in rows:
            if not row:
                continue  # a blank line, as in JSONL
            if len(row) < width:  # not JSON: the parser rejects it as malformed
                yield ",".join(row).encode()
                continue
            yield movielens_event(*(row[cols[k]] for k in ("user", "item", "rating", "timestamp")))


def movielens_event(user: str, item: str, rating: str, timestamp_s: str) -> bytes:
    """One rating as an engagement event (malformed values are left for the parser)."""
    try:
        ts_ms: object = int(float(timestamp_s) * 1000)
        value: object = float(rating)
    except ValueError:
        ts_ms, value = timestamp_s, rating
    event = {
        "event_id": f"ml-{user}-{item}-{timestamp_s}",
        "user_id": user,
        "item_id": item,
        "event_type": "rating",
        "timestamp": ts_ms,
        "context": {"rating": value},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def _parquet(path: str) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    with FileSystems.open(path) as handle:
        table = pq.read_table(handle)
    for batch in table.to_batches(max_chunksize=10_000):
        for record in batch.to_pylist():
            clean = {k: v for k, v in record.items() if v is not None}
            yield json.dumps(clean, separators=(",", ":"), default=str).encode()
