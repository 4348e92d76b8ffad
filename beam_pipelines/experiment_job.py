"""The experiment metrics job over a bounded event log (issue #16 item 3, backfill):

    rtp experiment metrics --events events.jsonl --out DIR [--rewards short_video]
        [--window-s 86400] [--exposure-type impression]

Reads the log (``backfill.ReadEventLog``), validates each record with the event
contract (``ParseEvents``; invalid records are counted), keeps the first delivery of
each ``event_id`` (as ``event_logs.parse_log`` does for the report), and writes
``ExperimentMetrics`` rows (``aggregate.metrics_record``: per experiment, variant and
UTC day, ``day`` empty for the whole log) to ``DIR/experiment_metrics-*.parquet``.
Runs on Beam's FnApiRunner (named explicitly, see ARCHITECTURE.md). Prints a JSON
summary of the counters.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_pipelines.backfill import ReadEventLog
from beam_pipelines.events import DEFAULT_EVENT_TYPES, ValidationConfig
from beam_pipelines.experiments.aggregate import METRICS
from beam_pipelines.rewards import RewardConfig
from beam_pipelines.transforms.experiments import COUNTS, ExperimentMetrics
from beam_pipelines.transforms.parse import EVENTS, ParseEvents

FILE_PREFIX = "experiment_metrics"
SCHEMA = pa.schema(
    [
        ("experiment", pa.string()),
        ("variant", pa.string()),
        ("day", pa.string()),
        ("users", pa.int64()),
        ("exposures", pa.int64()),
        ("engagements", pa.int64()),
        ("reward", pa.float64()),
        *[
            (f"{metric}{suffix}", pa.float64())
            for metric in METRICS
            for suffix in ("", "_ci_low", "_ci_high")
        ],
    ]
)


class FirstDelivery(beam.PTransform):
    """``(seq, event)`` → the event of each ``event_id`` with the lowest ``seq``."""

    def expand(self, sequenced):
        return (
            sequenced
            | "KeyByEventId" >> beam.Map(lambda se: (se[1].event_id, se))
            | "Earliest" >> beam.CombinePerKey(lambda deliveries: min(deliveries, key=_seq))
            | "Event" >> beam.Map(lambda kv: kv[1][1])
        )


def _seq(delivery: tuple[int, Any]) -> int:
    return delivery[0]


def build(
    pipeline: beam.Pipeline,
    events: str,
    out: pathlib.Path,
    rewards: RewardConfig,
    window_ms: int,
    exposure_type: str,
) -> None:
    types = DEFAULT_EVENT_TYPES | rewards.event_types | {exposure_type}
    parsed = (
        pipeline
        | "ReadEventLog" >> ReadEventLog(events, "jsonl")
        | "Records" >> beam.FlatMap(lambda chunk: zip(*chunk, strict=True))
        | "Parse" >> ParseEvents(ValidationConfig(event_types=types), sequenced=True)
    )
    (
        parsed[EVENTS]
        | "FirstDelivery" >> FirstDelivery()
        | "ExperimentMetrics" >> ExperimentMetrics(rewards, window_ms, exposure_type)
        | "WriteParquet"
        >> beam.io.WriteToParquet(
            str(out / FILE_PREFIX), SCHEMA, file_name_suffix=".parquet", num_shards=1
        )
    )


def run(
    events: str,
    out: pathlib.Path,
    rewards: RewardConfig,
    window_ms: int,
    exposure_type: str,
) -> dict[str, Any]:
    """Run the job; its summary (counters, wall time)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pipeline = beam.Pipeline(runner=FnApiRunner())
    build(pipeline, events, out, rewards, window_ms, exposure_type)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]
    }
    summary = {
        "events": events,
        "valid": counters.get("events_valid", 0),
        "invalid": counters.get("events_invalid", 0),
        **{name: counters.get(name, 0) for name in COUNTS},
        "parquet": sorted(str(p) for p in out.glob(f"{FILE_PREFIX}*.parquet")),
        "wall_s": round(time.perf_counter() - started, 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
