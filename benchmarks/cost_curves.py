"""Cost curves: backfill time against events and Dask workers; online state bytes.

    python -m benchmarks.cost_curves [--sizes 200k,1M,5M] [--dask-sizes 1M]
        [--dask-workers 1,2,4] [--state-sizes 200k] [--repeats 3]
        [--out out/cost_curves.jsonl]
    python -m benchmarks.cost_curves --plot-only --out out/cost_curves.jsonl

Each backfill is ``rtp backfill`` in a child process, so its wall time includes the
interpreter and Beam's start, and its peak memory is the child's (``wait4``: the
largest process of its tree, Dask workers included once reaped; not their sum).
The reference is the local runner (FnApiRunner) on the first size, measured
``--repeats`` times in the same run (median); every other point runs
``--big-repeats`` times (default once) and gives ``ratio_to_reference``, its
events/s over the reference's, and the log-log slope of wall time against events
says whether the cost is linear (slope 1); ``pairwise_slopes`` between neighbouring
sizes show where fixed costs stop mattering. Dask runs use a LocalCluster of
``W`` single-threaded worker processes; on a 2-core machine 4 workers are
oversubscribed. Each worker may use 1/W of the machine's memory: at 5 M events on
24 GB the workers were paused and restarted at their limit (``benchmarks/README.md``),
so keep ``--dask-sizes`` at 1M there.

State bytes, after an ``--online`` backfill at each of ``--state-sizes`` into
SQLite: per user and per item, the bytes of their online rows (key, feature name,
value, text and vector columns, plus 16 for the two timestamps), median and p99,
per view and summed over a user's (or an item's) views, and the database file
over the entities. The keyed state (``beam_pipelines.state.keyed``:
``encode_user``/``encode_item_key``, what the streaming job keeps per key and
stores for a restart) comes from a plain fold of the same log in event-time
order, the same updates as the job's user and item stages (not the
co-engagement stages'). Event logs are simulated once per size into a temporary
directory (removed at the end unless ``--data-dir`` is given).

Results are JSON lines on stdout and in ``--out``; the PNG goes next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence

from benchmarks.common import emit, log, simulated_log

USERS = 2000


def parse_size(text: str) -> int:
    """``200k``, ``1M``, ``5m``, ``1_000_000`` or ``1.5M`` → an int."""
    text = text.strip().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale != 1 else text
    value = float(number) * scale
    if not number or value <= 0 or value != int(value):
        raise ValueError(f"not a positive whole size: {text!r}")
    return int(value)


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) on log(x): 1 is linear, under 1 sublinear."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    den = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / den if den else None


def run_backfill(log_path: pathlib.Path, out: pathlib.Path, extra: Sequence[str]) -> dict:
    """One ``rtp backfill`` in a child process: wall seconds, summary, peak RSS."""
    argv = [sys.executable, "-m", "rtp", "backfill", f"--events={log_path}", f"--out={out}"]
    paths = (str(_root()), os.environ.get("PYTHONPATH"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    errors = out.parent / f"{out.name}.stderr"  # Dask's INFO lines; shown on failure
    started = time.perf_counter()
    with errors.open("wb") as stderr:
        child = subprocess.Popen([*argv, *extra], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        tail = errors.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"backfill exited {child.returncode}: {' '.join(argv + list(extra))}\n{tail}"
        )
    errors.unlink()
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": wall,
        "job_wall_s": summary["wall_s"],
        "read": summary["read"],
        "users": summary["users"],
        "items": summary["items"],
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def _root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent.parent


def backfill_point(
    log_path: pathlib.Path,
    events: int,
    runner: str,
    workers: int | None,
    repeats: int,
    work: pathlib.Path,
) -> dict:
    extra = [] if runner == "FnApiRunner" else ["--runner=DaskRunner", f"--dask_workers={workers}"]
    runs = []
    for i in range(repeats):
        out = work / f"bf-{runner}-{workers}-{events}-{i}"
        runs.append(run_backfill(log_path, out, extra))
        subprocess.run(["rm", "-rf", str(out)], check=True)
    wall = statistics.median(r["wall_s"] for r in runs)
    return {
        "runner": runner,
        "dask_workers": workers,
        "events": events,
        "repeats": repeats,
        "wall_s": round(wall, 2),
        "events_per_s": round(events / wall, 1),
        "job_wall_s": round(statistics.median(r["job_wall_s"] for r in runs), 2),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 1),
        "users": runs[0]["users"],
        "items": runs[0]["items"],
        "runs_wall_s": [round(r["wall_s"], 2) for r in runs],
    }


def online_row_bytes(db: pathlib.Path) -> dict:
    """Per view: bytes per entity of its rows (median, p99, mean), entity count."""
    con = sqlite3.connect(db)
    views = {}
    per_entity: dict[str, dict[bytes, int]] = {}
    tables = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        sizes: dict[bytes, int] = defaultdict(int)
        query = (
            f"SELECT entity_key, length(entity_key) + length(feature_name) "
            f"+ ifnull(length(value), 0) + ifnull(length(value_text), 0) "
            f'+ ifnull(length(vector_value), 0) + 16 FROM "{table}"'
        )
        for key, size in con.execute(query):
            sizes[key] += size
        if sizes:
            per_entity[table] = sizes
            views[table] = _stats(list(sizes.values()))
    try:
        pages = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    except sqlite3.OperationalError:  # SQLite built without dbstat
        pages = {}
    for table, stats in views.items():
        stored = pages.get(table, 0) + pages.get(f"sqlite_autoindex_{table}_1", 0)
        stored += pages.get(f"{table}_ek", 0)
        if stored:
            stats["stored_bytes_per_entity"] = round(stored / stats["entities"], 1)
    con.close()
    return {"views": views, "per_entity": per_entity, "file_bytes": db.stat().st_size}


def _stats(values: Sequence[float]) -> dict:
    return {
        "entities": len(values),
        "median": statistics.median(values),
        "p99": percentile(values, 99),
        "mean": round(statistics.fmean(values), 1),
    }


def _summed(per_entity: dict[str, dict[bytes, int]], tables: Sequence[str]) -> list[int]:
    totals: dict[bytes, int] = defaultdict(int)
    for table in tables:
        for key, size in per_entity.get(table, {}).items():
            totals[key] += size
    return list(totals.values())


def keyed_state_bytes(log_path: pathlib.Path, lateness_ms: int = 600_000) -> dict:
    """Encoded keyed state per user and per item after folding the log."""
    from beam_pipelines.embedding_source import EmbeddingSource
    from beam_pipelines.events import EventValidationError, ValidationConfig, parse_event
    from beam_pipelines.rewards import SHORT_VIDEO
    from beam_pipelines.state import StateConfig
    from beam_pipelines.state.keyed import ItemKeyState, UserKeyState, encode_item_key, encode_user
    from beam_pipelines.state.seen import SeenEvents
    from beam_pipelines.state.updaters import is_late, update_item, update_user
    from beam_pipelines.transforms.rewards import score_event

    config, source = StateConfig(), EmbeddingSource()
    limits = ValidationConfig(event_types=SHORT_VIDEO.event_types)
    events = []
    with open(log_path, "rb") as lines:
        for line in lines:
            try:
                events.append(parse_event(line, limits))
            except EventValidationError:
                continue
    events.sort(key=lambda e: e.timestamp_ms)  # stable: ties keep their line order
    users: dict[str, tuple] = {}
    items: dict[str, tuple] = {}
    for seq, event in enumerate(events):
        state, seen = users.get(event.user_id, (None, SeenEvents()))
        if event.event_id in seen:
            continue
        scored = score_event(event, SHORT_VIDEO, seq)
        if is_late(state.last_event_ms if state else None, scored.timestamp_ms, lateness_ms):
            continue
        newest = max(scored.timestamp_ms, state.last_event_ms if state else 0)
        state = update_user(state, scored, source.current(newest), config)
        seen.add(event.event_id, event.timestamp_ms, lateness_ms)
        users[event.user_id] = (state, seen)
        item, item_seen = items.get(event.item_id, (None, SeenEvents()))
        item = update_item(item, scored, config)
        item_seen.add(event.event_id, event.timestamp_ms, lateness_ms)
        items[event.item_id] = (item, item_seen)
    user_bytes = [len(encode_user(UserKeyState(s, seen))) for s, seen in users.values()]
    item_bytes = [len(encode_item_key(ItemKeyState(i, seen))) for i, seen in items.values()]
    return {"user": _stats(user_bytes), "item": _stats(item_bytes)}


def state_point(log_path: pathlib.Path, events: int, work: pathlib.Path) -> dict:
    out, db = work / f"bf-online-{events}", work / f"store-{events}.db"
    run = run_backfill(log_path, out, ["--online", f"--store_path={db}"])
    online = online_row_bytes(db)
    subprocess.run(["rm", "-rf", str(out), str(db)], check=True)
    per = online.pop("per_entity")
    user_views = [t for t in per if t.startswith("rtp_user_")]
    item_views = [t for t in per if t.startswith("rtp_item_")]
    entities = run["users"] + run["items"]
    return {
        "events": events,
        "users": run["users"],
        "items": run["items"],
        "online_bytes_per_user": _stats(_summed(per, user_views)),
        "online_bytes_per_item": _stats(_summed(per, item_views)),
        "online_views": online["views"],
        "sqlite_file_bytes": online["file_bytes"],
        "sqlite_file_bytes_per_entity": round(online["file_bytes"] / entities, 1),
        "keyed_state_bytes": keyed_state_bytes(log_path),
        "online_backfill_wall_s": round(run["wall_s"], 2),
    }


def plot(records: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points = [r for r in records if r["measure"] == "backfill"]
    states = [r for r in records if r["measure"] == "state_bytes"]
    fig, (scale, workers, state) = plt.subplots(1, 3, figsize=(15, 4.2))
    series: dict[str, list[dict]] = defaultdict(list)
    for p in points:
        label = (
            "local (FnApiRunner)"
            if p["runner"] == "FnApiRunner"
            else (f"Dask, {p['dask_workers']} worker(s)")
        )
        series[label].append(p)
    for label, ps in sorted(series.items()):
        ps.sort(key=lambda p: p["events"])
        scale.plot([p["events"] for p in ps], [p["wall_s"] for p in ps], "o-", label=label)
    local = series.get("local (FnApiRunner)")
    if local:  # what a linear cost from the smallest local point would take
        first, last = local[0], max(p["events"] for p in points)
        scale.plot(
            [first["events"], last],
            [first["wall_s"], first["wall_s"] * last / first["events"]],
            ":",
            color="grey",
            label="linear from the first point",
        )
    scale.set(xscale="log", yscale="log", xlabel="events", ylabel="backfill wall s")
    scale.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    scale.legend(fontsize=8)
    scale.set_title("backfill time vs events")
    for events in sorted({p["events"] for p in points if p["runner"] == "DaskRunner"}):
        ps = sorted(
            (p for p in points if p["runner"] == "DaskRunner" and p["events"] == events),
            key=lambda p: p["dask_workers"],
        )
        workers.plot(
            [p["dask_workers"] for p in ps],
            [p["events_per_s"] for p in ps],
            "o-",
            label=f"Dask, {events:,} events",
        )
        local = [p for p in points if p["runner"] == "FnApiRunner" and p["events"] == events]
        if local:
            workers.axhline(
                local[0]["events_per_s"],
                color="grey",
                linestyle=":",
                label=f"local, {events:,} events",
            )
    workers.set(xlabel="Dask workers (2 cores: 4 oversubscribed)", ylabel="events/s")
    workers.set_ylim(bottom=0)
    workers.set_xticks([1, 2, 4])
    workers.legend(fontsize=8)
    workers.set_title("backfill throughput vs workers")
    if states:
        s = states[-1]
        labels = ["user online", "item online", "user keyed", "item keyed"]
        stats = [
            s["online_bytes_per_user"],
            s["online_bytes_per_item"],
            s["keyed_state_bytes"]["user"],
            s["keyed_state_bytes"]["item"],
        ]
        xs = range(len(labels))
        state.bar([x - 0.2 for x in xs], [v["median"] for v in stats], 0.4, label="median")
        state.bar([x + 0.2 for x in xs], [v["p99"] for v in stats], 0.4, label="p99")
        state.set_xticks(list(xs), labels)
        state.set(ylabel="bytes per entity")
        state.legend(fontsize=8)
        state.set_title(f"state bytes after {s['events']:,} events")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def record(out: pathlib.Path, measure: str, **fields) -> dict:
    emit(measure, **fields)
    with out.open("a") as f:
        f.write(json.dumps({"measure": measure, **fields}) + "\n")
    return {"measure": measure, **fields}


def measure_all(args: argparse.Namespace, data: pathlib.Path, out: pathlib.Path) -> list[dict]:
    records = []
    logs = {}

    def log_of(events: int) -> pathlib.Path:
        if events not in logs:
            log(f"simulating {events:,} events ...")
            with contextlib.redirect_stdout(sys.stderr):  # its summary is not a measure
                logs[events] = simulated_log(data / f"events-{events}.jsonl", events, users=USERS)
        return logs[events]

    reference = None

    def local(events: int, repeats: int) -> None:
        nonlocal reference
        log(f"local backfill, {events:,} events x {repeats} ...")
        point = backfill_point(log_of(events), events, "FnApiRunner", None, repeats, data)
        reference = reference or point
        point["ratio_to_reference"] = round(point["events_per_s"] / reference["events_per_s"], 3)
        records.append(record(out, "backfill", reference_events=reference["events"], **point))

    # The reference first; local sizes past the largest Dask size last (the longest runs).
    largest_dask = max(args.dask_sizes, default=0)
    local(args.sizes[0], args.repeats)
    for events in args.sizes[1:]:
        if events <= largest_dask:
            local(events, args.big_repeats)
    for events in args.dask_sizes:
        for workers in args.dask_workers:
            log(f"Dask backfill, {events:,} events, {workers} workers ...")
            point = backfill_point(
                log_of(events), events, "DaskRunner", workers, args.big_repeats, data
            )
            point["ratio_to_reference"] = round(
                point["events_per_s"] / reference["events_per_s"], 3
            )
            point["oversubscribed"] = workers > (os.cpu_count() or 1)
            records.append(record(out, "backfill", reference_events=reference["events"], **point))
    for events in args.sizes[1:]:
        if events > largest_dask:
            local(events, args.big_repeats)
    local_points = sorted(
        (p for p in records if p["runner"] == "FnApiRunner"), key=lambda p: p["events"]
    )
    records.append(
        record(
            out,
            "backfill_scaling",
            runner="FnApiRunner",
            events=[p["events"] for p in local_points],
            wall_s=[p["wall_s"] for p in local_points],
            loglog_slope=_rounded(
                loglog_slope(
                    [p["events"] for p in local_points], [p["wall_s"] for p in local_points]
                )
            ),
            pairwise_slopes=[
                _rounded(loglog_slope([a["events"], b["events"]], [a["wall_s"], b["wall_s"]]))
                for a, b in itertools.pairwise(local_points)
            ],
            cpu_count=os.cpu_count(),
        )
    )
    for events in args.state_sizes:
        log(f"state bytes after {events:,} events (--online backfill into SQLite) ...")
        records.append(record(out, "state_bytes", **state_point(log_of(events), events, data)))
    return records


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("200k,1M,5M"),
        help="Local-runner sizes; the first is the reference (default 200k,1M,5M).",
    )
    p.add_argument("--dask-sizes", type=parse_sizes, default=parse_sizes("1M"))
    p.add_argument(
        "--dask-workers", type=lambda s: [int(w) for w in s.split(",")], default=[1, 2, 4]
    )
    p.add_argument("--state-sizes", type=parse_sizes, default=parse_sizes("200k"))
    p.add_argument("--repeats", type=int, default=3, help="Runs of the reference (median).")
    p.add_argument("--big-repeats", type=int, default=1, help="Runs of every other point.")
    p.add_argument(
        "--data-dir",
        type=pathlib.Path,
        help="Keep the simulated logs here (default: a temporary directory).",
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/cost_curves.jsonl"))
    p.add_argument("--plot-only", action="store_true", help="Redraw the PNG from --out.")
    args = p.parse_args(argv)
    png = args.out.with_suffix(".png")
    if args.plot_only:
        records = [json.loads(line) for line in args.out.read_text().splitlines() if line]
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("")
        if args.data_dir:
            args.data_dir.mkdir(parents=True, exist_ok=True)
            records = measure_all(args, args.data_dir, args.out)
        else:
            with tempfile.TemporaryDirectory(prefix="cost-curves-") as tmp:
                records = measure_all(args, pathlib.Path(tmp), args.out)
    plot(records, png)
    log(f"plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
