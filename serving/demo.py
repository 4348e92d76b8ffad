"""``rtp demo``: the main job end to end on the embedded default.

simulate → the streaming job (DirectRunner) fed through a local Pub/Sub emulator,
or, where no emulator is installed (or with ``--no-stream``), the backfill job over
the simulated log → features in the SQLite online store, then a short summary
read back from the store. Everything lands under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from beam_pipelines import backfill, simulator
from feature_repo.features import ITEM_REALTIME, USER_REALTIME


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtp demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/demo", help="Output directory.")
    p.add_argument("--events", type=int, default=20_000, help="Clean events to simulate.")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--items", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dirty-fraction", type=float, default=0.02)
    p.add_argument("--no-stream", action="store_true", help="Use the backfill job only.")
    p.add_argument("--stream-timeout-s", type=float, default=600.0)
    return p


def simulate(args: argparse.Namespace, out: pathlib.Path) -> tuple[pathlib.Path, list]:
    """Write the simulated stream (and its sidecars); return its path and records,
    which the streaming half publishes as they are."""
    config = simulator.SimulatorConfig(
        n_events=args.events,
        n_users=args.users,
        n_items=args.items,
        seed=args.seed,
        dirty_fraction=args.dirty_fraction,
        start_ms=args.start_ms,
    )
    events = out / "events.jsonl"
    print(f"[1/3] simulating {args.events} events → {events}")
    sim = simulator.simulate(config)
    with simulator.StreamWriter(events) as writer:
        records = list(writer.tee(sim))
        writer.finish(sim)
    return events, records


def compute_features(events: pathlib.Path, out: pathlib.Path) -> dict:
    print("[2/3] backfill job (Beam, FnApiRunner) → offline history + SQLite online store")
    argv = [f"--events={events}", f"--out={out / 'features'}", "--online"]
    return backfill.run_backfill(argv)


def stream_features(args: argparse.Namespace, out: pathlib.Path, records: list) -> dict | None:
    """The streaming job through a local Pub/Sub emulator; None if none is installed."""
    from beam_pipelines.local_servers import ComponentMissing
    from serving.demo_stream import run_streaming_demo

    try:
        return run_streaming_demo(args, out, records)
    except ComponentMissing as missing:
        print(f"  no Pub/Sub emulator ({missing}); running the backfill job instead")
        return None


def show_store(out: pathlib.Path, users: list[str]) -> None:
    from beam_pipelines.jobs_common import store_config
    from feature_repo.store import FeatureStoreClient

    print("[3/3] reading back from the online store")
    config = store_config(None, str(out / "features" / "online.db"))
    with FeatureStoreClient(config) as store:
        for user_id, row in store.read(USER_REALTIME, users).items():
            if row is None:
                continue
            items = row["user_recent_items"][:3]
            print(
                f"  {user_id}: {row['user_event_count']} events, "
                f"engagement rate (1 h) {row['user_engagement_rate_short']:.2f}, recent {items}"
            )
            for item_id, stats in store.read(ITEM_REALTIME, items[:1]).items():
                if stats:
                    alpha, beta = stats["item_beta_alpha"], stats["item_beta_beta"]
                    print(f"    item {item_id}: Beta({alpha:.1f}, {beta:.1f})")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Recent event times: the streaming job's dedup timers run in event time (see
    # serving.demo_stream), and the stream should look like today's traffic.
    args.start_ms = (int(time.time()) - 2 * 86400) * 1000
    events, records = simulate(args, out)
    summary = None if args.no_stream else stream_features(args, out, records)
    if summary is None:
        summary = compute_features(events, out)
        keep = ("read", "valid", "dead_lettered_by_reason", "applied", "users", "items")
        summary = {k: summary[k] for k in keep}
    print(json.dumps(summary, indent=2))
    show_store(out, [f"u{i:06d}" for i in range(5)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
