"""``rtp experiment report --events PATH --out DIR [--experiments PATH]``: the
per-variant report of an event log (``report``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beam_pipelines.events import DEFAULT_EVENT_TYPES, ValidationConfig
from beam_pipelines.experiments.attribution import DAY_MS, EXPOSURE_TYPE


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtp experiment", description="Online experiments.")
    commands = p.add_subparsers(dest="command", required=True, metavar="<command>")
    report = commands.add_parser(
        "report",
        help="Per-variant metrics, lifts and the SRM check of an event log.",
        description="Attribute engagements to logged exposures and compare variants.",
    )
    report.add_argument("--events", required=True, help="Event log (JSONL), a file or a glob.")
    report.add_argument("--out", required=True, help="Directory for report.json, .md and plots.")
    report.add_argument(
        "--experiments", help="Experiments YAML (for the configured shares and controls)."
    )
    report.add_argument(
        "--rewards", default="short_video", help="Reward preset or YAML (default short_video)."
    )
    report.add_argument(
        "--window-s",
        type=float,
        default=DAY_MS / 1000,
        help="Attribution window, seconds (default 86400: 24 h).",
    )
    report.add_argument(
        "--exposure-type",
        default=EXPOSURE_TYPE,
        help=f"Event type of a logged exposure (default {EXPOSURE_TYPE}).",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from beam_pipelines.event_logs import parse_log
    from beam_pipelines.experiments.config import load_experiments_config
    from beam_pipelines.experiments.report import build_report, summary, write_report
    from beam_pipelines.rewards import load_reward_config

    try:
        rewards = load_reward_config(args.rewards)
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
