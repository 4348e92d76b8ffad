"""``rtp simulate``: write the stream (JSONL plus sidecars) and/or publish it to
Pub/Sub; print a JSON summary."""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
import time
from collections.abc import Iterable
from typing import Any

from rtp.simulator.config import DEFAULT_START_MS, SimulatorConfig
from rtp.simulator.encoding import rfc3339
from rtp.simulator.records import SimRecord
from rtp.simulator.simulation import simulate
from rtp.simulator.writer import StreamWriter


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtp simulate", description="Simulated short-video engagement stream."
    )
    parser.add_argument("--events", type=int, default=10_000, help="clean events to emit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, help="JSONL output; sidecars go next to it")
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument(
        "--dirty-fraction", type=float, default=0.0, help="fraction of lines that are dirty"
    )
    parser.add_argument(
        "--late-by-s", type=float, default=6 * 3600.0, help="how late late lines are, seconds"
    )
    parser.add_argument("--start", default=rfc3339(DEFAULT_START_MS), help="stream start, RFC 3339")
    parser.add_argument("--publish-topic", help="projects/P/topics/T; honours PUBSUB_EMULATOR_HOST")
    parser.add_argument(
        "--rate", type=float, help="publish rate, events/s (default: as fast as possible)"
    )
    return parser


def _config_from(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        n_events=args.events,
        seed=args.seed,
        n_users=args.users,
        n_items=args.items,
        n_topics=args.topics,
        dirty_fraction=args.dirty_fraction,
        late_by_s=args.late_by_s,
        start_ms=args.start,
    )


def _drain(records: Iterable[SimRecord], args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.publish_topic:
        collections.deque(records, maxlen=0)
        return None
    from rtp.simulator import publish  # lazy: pulls in the Pub/Sub client

    return publish.publish_records(records, args.publish_topic, rate=args.rate).to_dict()


def main(argv: list[str] | None = None) -> int:
    """``rtp simulate``: write JSONL + sidecars and/or publish; print a JSON summary."""
    cli = parser()
    args = cli.parse_args(argv)
    if args.out is None and args.publish_topic is None:
        cli.error("give --out and/or --publish-topic")
    try:
        config = _config_from(args)
    except ValueError as err:
        cli.error(str(err))
    started = time.perf_counter()
    sim = simulate(config)
    published = None
    if args.out is not None:
        with StreamWriter(args.out) as writer:
            published = _drain(writer.tee(sim), args)
            writer.finish(sim)
    else:
        published = _drain(sim, args)
    elapsed = time.perf_counter() - started
    summary = dict(
        sim.counts,
        elapsed_s=round(elapsed, 3),
        events_per_s=round(sim.counts["clean_events"] / max(elapsed, 1e-9)),
    )
    summary.update(out=str(args.out) if args.out else None, publish=published)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
