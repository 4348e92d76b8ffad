"""Events/s of the backfill and the streaming job against a plain Python loop.

    python -m benchmarks.pipeline_throughput [--events 200000] [--stream-events 50000] [--repeats 3]
        [--skip-backfill | --skip-streaming]

The reference is a plain loop doing the same parsing, deduplication, lateness
check and state updates (with the same feature rows) in this process, measured
in the same run, so the ratio holds on a noisy shared machine. The streaming
job runs the full ComputeFeatures graph from a TestStream on the
BundleBasedDirectRunner (stock Beam, with the job's ``freeze_startup_heap``) and
writes rows to a no-op sink; its ``events_per_s`` is the steady state (first event
in → last row out), ``events_per_s_with_startup`` adds the pipeline's start.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

from benchmarks.common import emit, log, median_of, simulated_log


def plain_loop(lines: list[bytes], lateness_ms: int = 600_000) -> float:
    """Events/s of parse → dedup → reward → user → item state, rows included."""
    from beam_pipelines.embedding_source import EmbeddingSource
    from beam_pipelines.events import EventValidationError, ValidationConfig, parse_event
    from beam_pipelines.rewards import SHORT_VIDEO
    from beam_pipelines.state import StateConfig
    from beam_pipelines.state.updaters import is_late, update_item, update_user
    from beam_pipelines.transforms.rewards import score_event
    from beam_pipelines.transforms.state import item_row, user_row

    config, source = StateConfig(), EmbeddingSource()
    limits = ValidationConfig(event_types=SHORT_VIDEO.event_types)
    started = time.perf_counter()
    seen, users, items = set(), {}, {}
    for seq, line in enumerate(lines):
        try:
            event = parse_event(line, limits)
        except EventValidationError:
            continue
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        scored = score_event(event, SHORT_VIDEO, seq)
        state = users.get(scored.user_id)
        if is_late(state.last_event_ms if state else None, scored.timestamp_ms, lateness_ms):
            continue
        newest = max(scored.timestamp_ms, state.last_event_ms if state else 0)
        state = users[scored.user_id] = update_user(state, scored, source.current(newest), config)
        user_row(scored.user_id, state)
        item = items[scored.item_id] = update_item(items.get(scored.item_id), scored, config)
        item_row(scored.item_id, item, config)
    return len(lines) / (time.perf_counter() - started)


def backfill(log_path: pathlib.Path, n: int) -> float:
    from beam_pipelines.backfill import run_backfill

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run_backfill([f"--events={log_path}", f"--out={out}"])
        return n / (time.perf_counter() - started)


def _mark_first(element):
    # perf_counter of the first event into the graph and of the last row out of it,
    # in benchmarks.common: the DirectRunner runs the graph in this process, but
    # pickles what __main__ defines by value (with a copy of its globals).
    from benchmarks.common import MARKS

    MARKS.setdefault("first_in", time.perf_counter())
    return element


class _NullSink:
    def open(self):
        pass

    def write_rows(self, view, rows):
        from benchmarks.common import MARKS

        MARKS["last_out"] = time.perf_counter()
        return len(rows)

    def close(self):
        pass


def streaming(lines: list[bytes]) -> tuple[float, float]:
    """(steady-state events/s, end-to-end events/s) of the streaming graph.

    Steady state runs from the first event into the graph to the last row out of
    it; end to end adds the pipeline's start (graph translation and checks, which
    serialize the whole TestStream payload): a one-off for a job that runs for days.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    from beam_pipelines.direct_runner import freeze_startup_heap
    from beam_pipelines.events import parse_event
    from beam_pipelines.rewards import SHORT_VIDEO
    from beam_pipelines.streaming import WriteAllFeatures
    from beam_pipelines.transforms.graph import ComputeFeatures, FeatureSettings

    stream = TestStream()
    for start in range(0, len(lines), 5000):
        chunk = lines[start : start + 5000]
        stamped = [TimestampedValue(line, parse_event(line).timestamp_ms / 1000) for line in chunk]
        stream = stream.add_elements(stamped).advance_watermark_to(stamped[-1].timestamp)
    stream = stream.advance_watermark_to_infinity()
    freeze_startup_heap()  # as the streaming job does on this runner
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    from benchmarks.common import MARKS

    MARKS.clear()
    started = time.perf_counter()
    with beam.Pipeline(options=options) as pipeline:
        events = pipeline | stream | "MarkFirst" >> beam.Map(_mark_first)
        features = events | ComputeFeatures(FeatureSettings(SHORT_VIDEO))
        features | WriteAllFeatures(_NullSink, batch_size=500, max_retries=0, backoff_s=0)
    ended = time.perf_counter()
    steady = len(lines) / (MARKS["last_out"] - MARKS["first_in"])
    return steady, len(lines) / (ended - started)


def _cpu_per_run(started: float, repeats: int) -> float:
    """CPU seconds of this process per run since ``started`` (the wall clock is shared)."""
    return round((time.process_time() - started) / repeats, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--stream-events", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", default="/tmp/rtp-bench")
    p.add_argument("--skip-backfill", action="store_true", help="Streaming only.")
    p.add_argument("--skip-streaming", action="store_true", help="Backfill only.")
    args = p.parse_args()
    cache = pathlib.Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    log_path = simulated_log(cache / f"sim-{args.events}.jsonl", args.events)
    lines = log_path.read_bytes().splitlines()
    stream_lines = lines[: args.stream_events]

    log("plain loop (reference)…")
    cpu = time.process_time()
    ref, ref_all = median_of(args.repeats, lambda: plain_loop(lines))
    emit(
        "plain_loop",
        events=len(lines),
        events_per_s=round(ref),
        runs=[round(v) for v in ref_all],
        cpu_s_per_run=_cpu_per_run(cpu, args.repeats),
    )
    if not args.skip_backfill:
        log("backfill…")
        cpu = time.process_time()
        bf, bf_all = median_of(args.repeats, lambda: backfill(log_path, len(lines)))
        emit(
            "backfill",
            events=len(lines),
            events_per_s=round(bf),
            ratio_to_plain=round(bf / ref, 3),
            runs=[round(v) for v in bf_all],
            cpu_s_per_run=_cpu_per_run(cpu, args.repeats),
        )
    if args.skip_streaming:
        return
    log("streaming (TestStream, BundleBasedDirectRunner)…")
    ref_s, _ = median_of(args.repeats, lambda: plain_loop(stream_lines))
    runs = [streaming(stream_lines) for _ in range(args.repeats)]
    st = statistics.median(steady for steady, _ in runs)
    emit(
        "streaming_teststream",
        events=len(stream_lines),
        events_per_s=round(st),
        ratio_to_plain=round(st / ref_s, 3),
        plain_events_per_s=round(ref_s),
        events_per_s_with_startup=round(statistics.median(e2e for _, e2e in runs)),
        runs=[round(steady) for steady, _ in runs],
    )


if __name__ == "__main__":
    main()
