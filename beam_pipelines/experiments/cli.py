"""``rtp experiment report --events PATH --out DIR [--experiments PATH]``: the
per-variant report of an event log (``report``); ``rtp experiment metrics --events
PATH --out DIR``: the same per-variant, per-day aggregates as a Beam job writing
Parquet (``beam_pipelines.experiment_job``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from beam_pipelines.events import DEFAULT_EVENT_TYPES, ValidationConfig
from beam_pipelines.experiments.attribution import DAY_MS, EXPOSURE_TYPE
from beam_pipelines.rewards import RewardConfig, load_reward_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtp experiment", description="Online experiments.")
    commands = p.add_subparsers(dest="command", required=True, metavar="<command>")
    report = commands.add_parser(
        "report",
        help="Per-variant metrics, lifts and the SRM check of an event log.",
        description="Attribute engagements to logged exposures and compare variants.",
    )
    report.add_argument("--out", required=True, help="Directory for report.json, .md and plots.")
    report.add_argument(
        "--experiments", help="Experiments YAML (for the configured shares and controls)."
    )
    metrics = commands.add_parser(
        "metrics",
        help="Per-variant, per-day aggregates of an event log as Parquet (a Beam job).",
        description="The report's attribution and aggregates on Beam, written as Parquet.",
    )
    metrics.add_argument("--out", required=True, help="Directory for the Parquet files.")
    for command in (report, metrics):
        _add_log_arguments(command)
    return p


def _add_log_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", required=True, help="Event log (JSONL), a file or a glob.")
    p.add_argument(
        "--rewards", default="short_video", help="Reward preset or YAML (default short_video)."
    )
    p.add_argument(
        "--window-s",
        type=float,
        default=DAY_MS / 1000,
        help="Attribution window, seconds (default 86400: 24 h).",
    )
    p.add_argument(
        "--exposure-type",
        default=EXPOSURE_TYPE,
        help=f"Event type of a logged exposure (default {EXPOSURE_TYPE}).",
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rewards = load_reward_config(args.rewards)
    except (ValueError, OSError) as e:
        print(f"rtp experiment {args.command}: {e}", file=sys.stderr)
        return 2
    if args.command == "metrics":
        return metrics(args, rewards)
    return report(args, rewards)


def metrics(args: argparse.Namespace, rewards: RewardConfig) -> int:
    from beam_pipelines.console import configure_logging
    from beam_pipelines.event_logs import expand_paths
    from beam_pipelines.experiment_job import run

    configure_logging(level=logging.WARNING)  # the summary is the output
    try:
        expand_paths(args.events)
    except FileNotFoundError as e:
        print(f"rtp experiment metrics: {e}", file=sys.stderr)
        return 2
    window_ms = round(args.window_s * 1000)
    summary = run(args.events, Path(args.out), rewards, window_ms, args.exposure_type)
    print(json.dumps(summary, indent=2))
    return 0


def report(args: argparse.Namespace, rewards: RewardConfig) -> int:
    from beam_pipelines.event_logs import parse_log
    from beam_pipelines.experiments.config import load_experiments_config
    from beam_pipelines.experiments.report import build_report, summary, write_report

    try:
        experiments = load_experiments_config(args.experiments) if args.experiments else None
    except (ValueError, OSError) as e:
        print(f"rtp experiment report: {e}", file=sys.stderr)
        return 2
    types = DEFAULT_EVENT_TYPES | rewards.event_types | {args.exposure_type}
    try:
        events, skipped = parse_log(args.events, "jsonl", ValidationConfig(event_types=types))
    except FileNotFoundError as e:
        print(f"rtp experiment report: {e}", file=sys.stderr)
        return 2
    report = build_report(
        events, rewards, experiments, round(args.window_s * 1000), args.exposure_type
    )
    report["events"] = {"read": len(events), **dict(skipped), **report["events"]}
    paths = write_report(report, Path(args.out))
    for line in summary(report):
        print(line)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
