"""``rtp simulate``: write the stream (JSONL plus sidecars) and/or publish it to
Pub/Sub; or, with ``--closed-loop``, let the simulated users ask a running service
for recommendations and send back their reactions (``closed_loop``). Prints a JSON
summary."""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
import time
from collections.abc import Iterable

from rtp.simulator.config import DEFAULT_START_MS, SimulatorConfig
from rtp.simulator.encoding import rfc3339
from rtp.simulator.records import SimRecord
from rtp.simulator.simulation import Simulation, simulate
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
    parser.add_argument(
        "--uploads-topic",
        help="projects/P/topics/T: with --publish-topic, also publish each item released "
        "after --start there (item metadata, for rtp items) as the stream reaches its release",
    )
    loop = parser.add_argument_group(
        "closed loop",
        "Users ask the service (GET /v1/recommendations) and react to what it shows; "
        "--events counts their events sent to POST /v1/events (the service logs the "
        "impressions). Give the world flags (--seed, --users, --items, --topics) the "
        "service's models were trained with.",
    )
    loop.add_argument("--closed-loop", action="store_true", help="run the closed loop")
    loop.add_argument("--service", help="base URL of the running service, http://host:port")
    loop.add_argument("--k", type=int, default=10, help="items asked per session (default 10)")
    loop.add_argument(
        "--history-events",
        type=int,
        default=0,
        help="first run the open-loop stream of this many clean events, unpublished, so "
        "the users start where a history simulated with --events of that size left them",
    )
    loop.add_argument(
        "--give-up-s",
        type=float,
        default=60.0,
        help="stop after this many seconds without an answer from the service (default 60)",
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


def _drain(sim: Simulation, records: Iterable[SimRecord], args: argparse.Namespace):
    if not args.publish_topic:
        collections.deque(records, maxlen=0)
        return None
    from rtp.simulator import publish  # lazy: pulls in the Pub/Sub client

    uploads = publish.uploads_after(sim.items, sim.config.start_ms) if args.uploads_topic else []
    return publish.publish_records(
        records,
        args.publish_topic,
        rate=args.rate,
        uploads=uploads,
        uploads_topic=args.uploads_topic,
    ).to_dict()


def main(argv: list[str] | None = None) -> int:
    """``rtp simulate``: write JSONL + sidecars and/or publish; print a JSON summary."""
    cli = parser()
    args = cli.parse_args(argv)
    if args.closed_loop:
        if args.service is None or args.out is not None or args.publish_topic is not None:
            cli.error("--closed-loop needs --service URL (and takes no --out or --publish-topic)")
        args.dirty_fraction = 0.0  # the service validates what it is sent
    elif args.out is None and args.publish_topic is None:
        cli.error("give --out and/or --publish-topic (or --closed-loop --service URL)")
    if args.uploads_topic and not args.publish_topic:
        cli.error("--uploads-topic needs --publish-topic")
    try:
        config = _config_from(args)
        if args.closed_loop:
            return closed_loop(args, config)
    except ValueError as err:
        cli.error(str(err))
    started = time.perf_counter()
    sim = simulate(config)
    published = None
    if args.out is not None:
        with StreamWriter(args.out) as writer:
            published = _drain(sim, writer.tee(sim), args)
            writer.finish(sim)
    else:
        published = _drain(sim, sim, args)
    elapsed = time.perf_counter() - started
    summary = dict(
        sim.counts,
        elapsed_s=round(elapsed, 3),
        events_per_s=round(sim.counts["clean_events"] / max(elapsed, 1e-9)),
    )
    summary.update(out=str(args.out) if args.out else None, publish=published)
    print(json.dumps(summary))
    return 0


def closed_loop(args: argparse.Namespace, config: SimulatorConfig) -> int:
    """``--closed-loop``: the users (after ``--history-events``) against ``--service``;
    prints the loop's counts; 1 if it stopped before ``--events``."""
    from rtp.simulator.closed_loop import ClosedLoop
    from rtp.simulator.service_client import ServiceClient

    if args.history_events < 0:
        raise ValueError(f"--history-events must be >= 0, got {args.history_events}")
    sim = simulate(config.model_copy(update={"n_events": args.history_events}))
    collections.deque(sim, maxlen=0)
    loop = ClosedLoop(
        sim,
        ServiceClient(args.service),
        k=args.k,
        events=args.events,
        rate=args.rate,
        give_up_s=args.give_up_s,
    )
    stats = loop.run().to_dict()
    print(json.dumps(stats))
    if stats["stopped"]:
        print(f"rtp simulate: stopped early: {stats['stopped']}", file=sys.stderr)
    return 1 if stats["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
