"""The backfill job: the streaming transforms over a bounded event log.

    rtp backfill --events events.jsonl --out out/backfill [--format movielens] [--online]
        [--order time|arrival]

Writes ``<out>/offline/<view>/*.parquet`` (one row per state update, stamped with
the entity's newest event time: the point-in-time history Feast's offline store
reads), optionally the final values to the online store, and ``summary.json``.
Events are replayed in event-time order unless ``--order arrival`` asks for a
stream's arrival order (the file order).
Runs on Beam's FnApiRunner (named explicitly, see ARCHITECTURE.md), or with
``--runner DaskRunner [--dask_address HOST:PORT]`` on Beam's DaskRunner
(``backfill_runner``): a ``dask.distributed`` scheduler, or a LocalCluster of
``--dask_workers`` processes. Every output feeds one last step (``Done``): the
DaskRunner computes only what the pipeline's last step depends on.

With ``--online`` the store's definitions are applied here, once, before the job
(``FeastSinkFactory.applied_once``): the workers only open the store. On Dask the
final rows are grouped by entity shard before they are written
(``WriteFeatures(group_shards=...)``), because the DaskRunner drops what a DoFn
outputs in ``finish_bundle``, where the failed rows' dead letters would come out.
SQLite is written by several worker processes at once: its WAL file lets one
writer in at a time, each write a short transaction, and Feast's connection waits
up to 5 s for the lock (a write still failing is retried, then dead-lettered).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import pathlib
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from beam_pipelines.backfill_counts import counts_from_outputs
from beam_pipelines.backfill_runner import (
    RUNNERS,
    backfill_pipeline,
    has_metrics,
    remote_worker_hosts,
    run_to_completion,
)
from beam_pipelines.console import configure_logging
from beam_pipelines.event_logs import (
    FORMATS,
    EventLogParser,
    count_records,
    expand_paths,
    read_split,
)
from beam_pipelines.history import arrow_schema
from beam_pipelines.history_sink import WriteHistoryTables
from beam_pipelines.jobs_common import (
    add_store_arguments,
    check_log_inputs,
    embedding_source,
    store_config,
)
from beam_pipelines.rewards import load_reward_config
from beam_pipelines.sinks import FeastSinkFactory, WriteDeadLetterFiles
from beam_pipelines.transforms.coengagement import ITEM_PAIR_ROWS, USER_PAIR_ROWS
from beam_pipelines.transforms.graph import (
    DEAD_LETTERS,
    ITEM_FINAL,
    ITEM_HISTORY,
    USER_FINAL,
    USER_HISTORY,
    FeatureSettings,
)
from beam_pipelines.transforms.history_graph import (
    EVENTS_PER_SHARD,
    ComputeFeatureHistory,
    shards_for,
)
from beam_pipelines.transforms.write import WriteFeatures
from feature_repo.features import (
    ITEM_COENGAGEMENT,
    ITEM_REALTIME,
    USER_COENGAGEMENT,
    USER_REALTIME,
)

LOG = logging.getLogger(__name__)
MOVIELENS_MIN_TIMESTAMP_MS = 788_918_400_000  # 1995-01-01: MovieLens starts in 1996


_READ = Metrics.counter("rtp", "events_read")


def _count_read(chunk):
    _READ.inc(len(chunk[1]))
    return chunk


class ReadEventLog(beam.PTransform):
    """Files matching ``pattern`` → ``(seqs, records)`` chunks (``seq``: arrival order).

    ``splits`` > 1 reads each file in that many interleaved parts (``read_split``),
    one element each: the DaskRunner's tasks follow its input's elements, so one
    file would otherwise be one task at every stage.
    """

    def __init__(self, pattern: str, fmt: str, splits: int = 1):
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}")
        self._paths = expand_paths(pattern)
        self._fmt = fmt
        self._splits = splits

    def expand(self, pipeline):
        parts = [
            (index, path, part)
            for index, path in enumerate(self._paths)
            for part in range(self._splits)
        ]
        return (
            pipeline
            | "ListFiles" >> beam.Create(parts)
            | "ReadChunks" >> beam.FlatMap(read_split, self._fmt, self._splits)
            | "CountRead" >> beam.Map(_count_read)
        )


class WriteHistory(beam.PTransform):
    """``(shard, table)`` of one view → ``<offline_dir>/<view>/part-SSSSS-of-NNNNN.parquet``
    (parts of an earlier run are removed first); the output is the paths."""

    def __init__(self, offline_dir: pathlib.Path, view: str, shards: int):
        super().__init__()
        directory = offline_dir / view
        for stale in directory.glob("part-*.parquet"):
            stale.unlink()
        self._prefix = str(directory / "part")
        self._schema = arrow_schema(view)
        self._shards = shards

    def expand(self, tables):
        return tables | "ToParquet" >> WriteHistoryTables(self._prefix, self._schema, self._shards)


def build(
    pipeline, args: argparse.Namespace, settings: FeatureSettings, out: pathlib.Path, shards: int
):
    # On Dask the log is read in as many parts as shards (its tasks, see ReadEventLog).
    splits = shards if args.runner == "DaskRunner" else 1
    read = ReadEventLog(args.events, args.format, splits)
    features = (
        pipeline
        | "ReadEventLog" >> read
        | "ComputeFeatureHistory"
        >> ComputeFeatureHistory(settings, finals=args.online, shards=shards)
    )
    written = [
        features[tag] | f"History_{view}" >> WriteHistory(out / "offline", view, shards)
        for tag, view in ((USER_HISTORY, USER_REALTIME), (ITEM_HISTORY, ITEM_REALTIME))
    ]
    letters = [features[DEAD_LETTERS]]
    if args.online:
        # Applied here, once: each of the DaskRunner's workers applying would rewrite
        # the registry under the others' reads.
        sink = FeastSinkFactory(store_config(args.store_config, args.store_path)).applied_once()
        # The DaskRunner drops what finish_bundle outputs: write whole groups instead.
        group_shards = shards if args.runner == "DaskRunner" else None
        finals = (
            (USER_FINAL, USER_REALTIME),
            (ITEM_FINAL, ITEM_REALTIME),
            (USER_PAIR_ROWS, USER_COENGAGEMENT),
            (ITEM_PAIR_ROWS, ITEM_COENGAGEMENT),
        )
        for tag, view in finals:
            write = WriteFeatures(sink, view, group_shards=group_shards)
            letters.append(features[tag] | f"Online_{view}" >> write)
    written.append(
        letters
        | "AllDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteDeadLetterFiles(str(out / "dead_letters"))
    )
    # Last, and after every write: a runner that computes only what the last step
    # needs (the DaskRunner) then runs them all.
    _ = written | "AllWritten" >> beam.Flatten() | "Done" >> beam.Map(lambda path: path)


def counters(result) -> dict[str, int]:
    """The ``rtp`` counters of a finished job."""
    return {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("rtp"))["counters"]
    }


def summarize(counters: dict[str, int], wall_s: float, args: argparse.Namespace) -> dict[str, Any]:
    by_reason = {
        name.removeprefix("dead_letter_"): value
        for name, value in sorted(counters.items())
        if name.startswith("dead_letter_")
    }
    return {
        "events": args.events,
        "format": args.format,
        "order": args.order,
        "read": counters.get("events_read", 0),
        "valid": counters.get("events_valid", 0),
        "dead_lettered": sum(by_reason.values()),
        "dead_lettered_by_reason": by_reason,
        "duplicates": counters.get("duplicates", 0),
        "late": counters.get("late", 0),
        "applied": counters.get("user_updates", 0),
        "users": counters.get("users", 0),
        "items": counters.get("items", 0),
        "wall_s": round(wall_s, 3),
        "events_per_s": round(counters.get("events_read", 0) / wall_s, 1) if wall_s else None,
    }


@contextlib.contextmanager
def fewer_collections(young_threshold: int = 200_000):
    """Run a bulk job with rare garbage collections.

    A backfill allocates millions of small objects (parsed events, column lists)
    that never form cycles, and the default thresholds (a collection every 700
    allocations, a full one every 100 of those) kept traversing them: a third of
    the parsing time. Objects alive before the job are frozen out of the
    collections, young ones are collected every ``young_threshold`` allocations;
    both are restored afterwards.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young_threshold, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def unreachable_store(args: argparse.Namespace) -> str | None:
    """Why ``--online`` cannot work with these arguments, or None.

    The one case: the SQLite store (a file on this machine) with a scheduler at
    ``--dask_address`` that has workers on other machines; each would write a
    database file of its own there."""
    if not (args.online and args.runner == "DaskRunner" and args.dask_address):
        return None
    if store_config(args.store_config, args.store_path)["type"] != "sqlite":
        return None
    remote = remote_worker_hosts(args.dask_address)
    if not remote:
        return None
    return (
        f"--online into SQLite needs every Dask worker on this machine (the store is a "
        f"file here), but the scheduler at {args.dask_address} has workers on "
        f"{', '.join(sorted(remote))}: use a networked store (--store_config with redis "
        f"or bigtable) or local workers (--dask_workers)"
    )


def run_backfill(argv: list[str]) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if problem := unreachable_store(args):
        raise ValueError(problem)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    reward = reward_name(args)
    settings = FeatureSettings(
        rewards=load_reward_config(reward),
        embeddings=embedding_source(args.model_base),
        allowed_lateness_s=args.allowed_lateness_s,
        min_timestamp_ms=MOVIELENS_MIN_TIMESTAMP_MS if args.format == "movielens" else None,
        replay_order=args.order,
    )
    started = time.perf_counter()
    shards = shards_for(
        count_records(expand_paths(args.events), args.format), args.events_per_shard
    )
    with backfill_pipeline(args.runner, shards, args.dask_address, args.dask_workers) as p:
        build(p, args, settings, out, shards)
        with fewer_collections():
            result = run_to_completion(p)
    counts = counters(result) if has_metrics(args.runner) else counts_from_outputs(out)
    summary = summarize(counts, time.perf_counter() - started, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def reward_name(args: argparse.Namespace) -> str:
    return args.reward or ("movielens" if args.format == "movielens" else "short_video")


def parser() -> argparse.ArgumentParser:
    p = EventLogParser(prog="rtp backfill", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", required=True, help="Event log path or glob.")
    p.add_argument("--out", required=True, help="Output directory.")
    p.add_format_argument(FORMATS, fallback="jsonl")
    p.add_argument(
        "--reward",
        help="Reward preset or YAML (default: movielens for that format, else short_video).",
    )
    p.add_argument(
        "--model_base", help="Model base with item-embedding tables (default: hashed vectors)."
    )
    p.add_argument("--allowed_lateness_s", type=float, default=600.0)
    p.add_argument(
        "--order",
        choices=("arrival", "time"),
        default="time",
        help="Replay order. 'time' (default): event-time order, ties by line; a bounded "
        "log has no late data, as in Beam's batch semantics, and redeliveries are "
        "duplicates however far apart their lines are. 'arrival': file order, as a "
        "streaming job that received the lines in that order decided lateness and "
        "duplicates (for parity tests against a stream).",
    )
    p.add_argument("--online", action="store_true", help="Also write the final values online.")
    p.add_argument(
        "--runner",
        choices=RUNNERS,
        default="FnApiRunner",
        help="FnApiRunner (default): Beam's local runner, in this process. DaskRunner: "
        "Beam's runner on dask.distributed (pip install '.[dask]'), at --dask_address "
        "or on a LocalCluster of --dask_workers processes. --online into SQLite needs "
        "every worker on this machine.",
    )
    p.add_argument("--dask_address", help="DaskRunner: a dask scheduler's HOST:PORT.")
    p.add_argument(
        "--dask_workers",
        type=int,
        default=2,
        help="DaskRunner without --dask_address: LocalCluster worker processes (default 2).",
    )
    p.add_argument(
        "--events_per_shard",
        type=int,
        default=EVENTS_PER_SHARD,
        help="Sharding: ceil(records in the log / this) shards, so a fold holds about "
        f"this many events (default {EVENTS_PER_SHARD}).",
    )
    add_store_arguments(p, others="rtp stream and rtp serve")
    return p


def main(argv: list[str] | None = None) -> int:
    configure_logging(level=logging.WARNING)  # the summary is the output
    argv = sys.argv[1:] if argv is None else argv
    cli = parser()
    args = cli.parse_args(argv)
    check_log_inputs(cli, args.events, reward_name(args))
    if problem := unreachable_store(args):
        cli.error(problem)
    summary = run_backfill(argv)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
