"""``rtp demo``: the main job end to end on the embedded default.

simulate → split the stream in two at a time chosen from the simulator's ground
truth, so that a few users' interests shift in the second part → train both
models on the first part only → feed the first part to the streaming job
(DirectRunner) through a local Pub/Sub emulator, or, where no emulator is
installed (or with ``--no-stream``), to the backfill job → SQLite online store →
ask the recommendation service (in-process) for those users → feed the second
part the same way, no retraining → ask again, and measure how much of each
user's top-k is in its new topic before and after. Everything lands under
``--out``; the before/after also in ``recommendations.json``.

``--experiment`` runs an A/B of streamed versus frozen user features through the
closed loop instead (``rtp.demo.experiment``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol

import yaml

from beam_pipelines import backfill
from beam_pipelines.rewards import load_reward_config
from feature_repo.features import USER_EVENT_COUNT
from models.config import TrainConfig
from rtp.demo.shifts import ShiftedUser, Split, choose_split, topic_share
from rtp.simulator import simulation
from rtp.simulator.config import SimulatorConfig
from rtp.simulator.records import SimRecord
from rtp.simulator.writer import StreamWriter, sidecar_paths

K = 10  # recommendations shown per user
SHOWN_USERS = 3
REWARD = "short_video"  # the simulator's surface
# Small and fast, reproducible under --seed: every event of part 1 trains (no
# validation split; `rtp train` reports metrics), small retrieval batches so that
# a few thousand positives still make many gradient steps.
TRAIN_SETTINGS: dict[str, Any] = {
    "epochs": 8,
    "train_fraction": 1.0,
    "retrieval_batch": 128,
    "ranker_batch": 512,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtp demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/demo", help="Output directory.")
    # 100 events a user, as before, on fewer users: stock Beam's DirectRunner reads
    # Pub/Sub 10 messages a bundle (~70 events/s here), and 20,000 events took 6 min.
    p.add_argument("--events", type=int, default=8_000, help="Clean events to simulate.")
    p.add_argument("--users", type=int, default=80)
    p.add_argument("--items", type=int, default=1_000)
    p.add_argument("--topics", type=int, default=20, help="Topics of the simulated catalogue.")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dirty-fraction", type=float, default=0.02)
    p.add_argument(
        "--shift-probability",
        type=float,
        default=0.1,
        help="Chance of an abrupt interest shift at a session start (the simulator's "
        "default is 0.03; more shifts give the before/after more users to choose from).",
    )
    p.add_argument("--epochs", type=int, default=TRAIN_SETTINGS["epochs"], help="Training epochs.")
    # The experiment needs the streaming job: argparse refuses the two together.
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-stream", action="store_true", help="Use the backfill job only.")
    p.add_argument("--stream-timeout-s", type=float, default=600.0)
    experiment = p.add_argument_group(
        "experiment",
        "With --experiment: an A/B of streamed versus frozen user features through the "
        "closed loop (rtp simulate --closed-loop) instead of the before/after; needs the "
        "Pub/Sub emulator; the report in <out>/experiment/.",
    )
    mode.add_argument(
        "--experiment",
        action="store_true",
        help="Run the A/B of streamed versus frozen features (below) instead.",
    )
    experiment.add_argument(
        "--loop-events",
        type=int,
        default=6_000,
        help="Events the simulated users send in the closed loop (default 6000).",
    )
    experiment.add_argument(
        "--loop-rate",
        type=float,
        default=30.0,
        help="Most events/s they send (default 30; with the service's exposures, about "
        "what the local streaming job keeps up with).",
    )
    return p


STATE_DIRS = ("features", "models")
"""What a demo run leaves in ``--out`` that the next run would build on: the online
store (the streaming job restores its keyed state from it, so the same seeded
events would come back as duplicates) and the exported model versions."""


def fresh_out(out: pathlib.Path) -> pathlib.Path:
    """``out``, created, without a previous run's ``STATE_DIRS``: every run starts
    from an empty store, as its accounting assumes. Other files are left alone
    (the simulated logs are rewritten anyway)."""
    out.mkdir(parents=True, exist_ok=True)
    removed = [name for name in STATE_DIRS if (out / name).is_dir()]
    for name in removed:
        shutil.rmtree(out / name)
    if removed:
        print(f"  starting afresh: removed the previous run's {', '.join(removed)} in {out}")
    return out


def simulator_config(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        n_events=args.events,
        n_users=args.users,
        n_items=args.items,
        n_topics=args.topics,
        seed=args.seed,
        dirty_fraction=args.dirty_fraction,
        shift_probability=args.shift_probability,
        start_ms=args.start_ms,
    )


def simulate(
    config: SimulatorConfig, out: pathlib.Path
) -> tuple[simulation.Simulation, list[SimRecord]]:
    """Write the simulated stream (and its sidecars); return the simulation (ground
    truth) and its records, which the feeds publish or replay as they are."""
    events = out / "events.jsonl"
    print(f"[1/5] simulating {config.n_events} events of {config.n_users} users → {events}")
    sim = simulation.simulate(config)
    with StreamWriter(events) as writer:
        records = list(writer.tee(sim))
        writer.finish(sim)
    return sim, records


def _utc(ms: int) -> str:
    return f"{dt.datetime.fromtimestamp(ms / 1000, dt.UTC):%Y-%m-%d %H:%M} UTC"


def split_stream(
    sim: simulation.Simulation,
    records: list[SimRecord],
    topics: dict[str, str],
    out: pathlib.Path,
) -> Split:
    """Choose the split, write part 1 (the training log) next to the stream."""
    split = choose_split(
        records, sim.shifts, topics, load_reward_config(REWARD), n_users=SHOWN_USERS
    )
    with open(out / "events.part1.jsonl", "wb") as part1:
        part1.writelines(r.data + b"\n" for r in records[: split.line])
    clean = sim.counts["clean_events"]
    print(
        f"[2/5] split at {_utc(split.time_ms)}: part 1 = {split.clean_events} clean events, "
        f"part 2 = {clean - split.clean_events}"
    )
    for user in split.users:
        print(
            f"  {user.user_id}: top interest {user.old_topic} → {user.new_topic} "
            f"at {_utc(user.shift_ms)} (ground truth)"
        )
    if not split.users:
        print("  no simulated user shifts interest in part 2 and engages with the new topic;")
        print("  the before/after is skipped (try more --events or another --seed)")
    return split


def train_models(
    out: pathlib.Path, config: TrainConfig, events: pathlib.Path, step: str
) -> pathlib.Path:
    """Both models on ``events``, exported under ``<out>/models``; returns that base.
    ``step``: what the progress line says (``[3/5] training on part 1 only``)."""
    import tensorflow as tf  # after models (imported above): it sets TF_USE_LEGACY_KERAS

    from models.train import export_trained, fit, parser
    from rtp.jobs.train import run_history

    tf.keras.utils.disable_interactive_logging()  # no progress bars in the demo's output
    base = out / "models"
    print(f"{step} (rtp train API, seed {config.seed}) → {base}")
    argv = ["--events", str(events), "--out", str(base)]
    argv += ["--join-engine", "asof"]  # Feast's point-in-time join in pandas: seconds, not a minute
    argv += ["--items", str(sidecar_paths(out / "events.jsonl")["items"])]
    args = parser().parse_args(argv)
    trained = fit(args, config, time.perf_counter(), history=run_history)
    version = export_trained(trained, base, config)
    print(f"  exported model version {version}")
    return base


class Feed(Protocol):
    """Feeds parts of the stream to the feature pipeline and its online store."""

    store_path: pathlib.Path  # the SQLite online store

    def feed(self, records: Sequence[SimRecord], log: pathlib.Path) -> dict[str, Any]:
        """``records``: the new part; ``log``: every line fed so far, this part included.
        Returns once the part is in the store."""
        ...


class BackfillFeed:
    """The backfill job over the log so far, its final values written to one online
    store: each part re-reads the whole log up to it (``--no-stream``, or no
    emulator installed). ``model_base``: item embeddings (None: hashed vectors)."""

    def __init__(self, features: pathlib.Path, model_base: str | None):
        self.features = features
        self.store_path = features / "online.db"
        self._model_base = model_base
        self._runs = 0

    def __enter__(self) -> BackfillFeed:
        from beam_pipelines.jobs_common import store_config

        self.features.mkdir(parents=True, exist_ok=True)
        config = store_config(None, str(self.store_path))
        (self.features / "store.yaml").write_text(yaml.safe_dump(config))
        print("  backfill job (Beam FnApiRunner) over the log so far")
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def feed(self, records: Sequence[SimRecord], log: pathlib.Path) -> dict[str, Any]:
        """Replay ``log``, everything fed so far (``records`` is its new part)."""
        self._runs += 1
        argv = [f"--events={log}", f"--out={self.features / f'backfill-{self._runs}'}"]
        argv += ["--online", f"--store_config={self.features / 'store.yaml'}"]
        if self._model_base:
            argv += [f"--model_base={self._model_base}"]
        summary = backfill.run_backfill(argv)
        keep = ("read", "valid", "dead_lettered_by_reason", "applied", "users", "wall_s")
        return {k: summary[k] for k in keep} | {"accounting": self._account(log).line()}

    def _account(self, log: pathlib.Path):
        """The accounting of this run over every line of ``log``; raises if it fails."""
        from beam_pipelines.jobs_common import store_config
        from feature_repo.store import FeatureStoreClient
        from rtp.demo.streaming_feed import check_accounting, demo_ledger

        ledger = demo_ledger().add(log.read_bytes().split(b"\n")[:-1])
        letters = self.features / f"backfill-{self._runs}" / "dead_letters"
        with FeatureStoreClient(store_config(None, str(self.store_path))) as store:
            result = check_accounting(ledger, letters, store)
        if result is None:
            raise RuntimeError(f"no accounting: unreadable dead letters in {letters} or store")
        if not result.holds:
            raise RuntimeError(f"accounting does not hold: {result.line()}; {result.problems}")
        return result


def print_summary(summary: dict[str, Any]) -> None:
    """The part's numbers, then the accounting of everything fed so far."""
    summary = dict(summary)
    letters = summary.pop("dead_lettered_by_reason", {})
    accounting = summary.pop("accounting", None)
    print("  " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))
    total = sum(letters.values())
    print(f"  dead-lettered {total}: " + ", ".join(f"{k} {v}" for k, v in letters.items()))
    if accounting:
        print(f"  accounting, all parts so far: {accounting}")


def enter_feed(
    stack: contextlib.ExitStack, args: argparse.Namespace, out: pathlib.Path, base: pathlib.Path
) -> Feed:
    """The streaming feed, or the backfill one without an emulator or with ``--no-stream``."""
    features = out / "features"
    if not args.no_stream:
        from rtp.demo.streaming_feed import StreamingFeed
        from rtp.local_servers import ComponentMissing

        try:
            return stack.enter_context(StreamingFeed(features, str(base), args.stream_timeout_s))
        except ComponentMissing as missing:
            print(f"  no Pub/Sub emulator ({missing}); running the backfill job instead")
    return stack.enter_context(BackfillFeed(features, str(base)))


def serving_config(model_base: pathlib.Path, store_path: pathlib.Path, **settings: Any):
    """The service as ``rtp serve`` runs it by default (in-process SavedModels, the
    SQLite store at ``store_path``), with ``settings`` on top (``ServingConfig`` fields)."""
    from beam_pipelines.jobs_common import store_config
    from serving.config import ServingConfig

    return ServingConfig(
        model_base=str(model_base),
        # TensorFlow already ran in this process (training): its thread pools are
        # fixed, so the service leaves them as they are.
        models={
            "type": "inprocess",
            "reload_s": None,
            "intra_op_threads": None,
            "inter_op_threads": None,
        },
        store=store_config(None, str(store_path)),
        **settings,
    )


class DemoService:
    """The recommendation service in-process, as ``rtp serve`` runs it by default
    (in-process SavedModels, the SQLite store): ``recommend`` is what
    ``GET /v1/recommendations`` answers, with the same response body."""

    def __init__(self, model_base: pathlib.Path, store_path: pathlib.Path, seed: int):
        from serving.service import Service

        # The exploration draws depend on (seed, user) only.
        self.service = Service(serving_config(model_base, store_path, ranking={"seed": seed}))

    def __enter__(self) -> DemoService:
        self.service.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.stop()

    def refresh_items(self) -> None:
        """Re-read item features now rather than at the next background refresh."""
        assert self.service.items is not None
        self.service.items.refresh()

    def recommend(self, user_id: str) -> dict[str, Any]:
        """The response body for ``user_id``, plus its event count in the store."""
        from serving.app import recommendation_body
        from serving.features import read_user

        assert self.service.recommender is not None and self.service.store is not None
        body = recommendation_body(self.service.recommender.recommend(user_id, K), "", K)
        row = read_user(self.service.store, user_id)
        body[USER_EVENT_COUNT] = row[USER_EVENT_COUNT] if row else 0
        return body


def _shown(body: dict[str, Any], topics: dict[str, str], user: ShiftedUser) -> dict[str, Any]:
    items = [i["item_id"] for i in body["items"]]
    return {
        "items": items,
        "topics": [topics.get(i, "?") for i in items],
        "new_topic_share": topic_share(items, topics, user.new_topic),
        "old_topic_share": topic_share(items, topics, user.old_topic),
        USER_EVENT_COUNT: body[USER_EVENT_COUNT],
        "model_version": body["model_version"],
        "fallback": body["fallback"],
    }


def _print_list(label: str, shown: dict[str, Any], new_topic: str) -> None:
    hits = round(shown["new_topic_share"] * len(shown["items"]))
    print(
        f"  {label} ({shown[USER_EVENT_COUNT]} events in the store"
        f"{', fallback ' + shown['fallback'] if shown['fallback'] else ''}): "
        f"{hits}/{len(shown['items'])} in {new_topic}"
    )
    cells = [
        f"{item} {topic}{'*' if topic == new_topic else ''}"
        for item, topic in zip(shown["items"], shown["topics"], strict=True)
    ]
    for start in range(0, len(cells), 5):
        print("    " + "".join(f"{cell:<22}" for cell in cells[start : start + 5]).rstrip())


def report(
    split: Split, before: dict, after: dict, topics: dict[str, str], out: pathlib.Path
) -> dict[str, Any]:
    """The before/after of each shown user, written to ``<out>/recommendations.json``
    and printed; returns that document."""
    users = [
        {
            **dataclasses.asdict(user),
            "before": _shown(before[user.user_id], topics, user),
            "after": _shown(after[user.user_id], topics, user),
        }
        for user in split.users
    ]
    mean = {
        when: sum(u[when]["new_topic_share"] for u in users) / len(users) if users else None
        for when in ("before", "after")
    }
    document = {
        "k": K,
        "split": {"line": split.line, "clean_events": split.clean_events, "time_ms": split.time_ms},
        "users": users,
        "mean_new_topic_share": mean,
    }
    (out / "recommendations.json").write_text(json.dumps(document, indent=2) + "\n")
    if users:
        _print_report(users, mean)
    return document


def _print_report(users: list[dict[str, Any]], mean: dict[str, Any]) -> None:
    version = users[0]["before"]["model_version"] or users[0]["after"]["model_version"]
    print(
        f"\nRecommendations (the service's answer to GET /v1/recommendations?k={K}, "
        f"in-process, model version {version} trained on part 1 only; * = new topic)"
    )
    for u in users:
        print(
            f"{u['user_id']}: ground truth top interest {u['old_topic']} before the shift, "
            f"{u['new_topic']} after it ({_utc(u['shift_ms'])}, in part 2)"
        )
        _print_list("before part 2", u["before"], u["new_topic"])
        _print_list("after part 2 ", u["after"], u["new_topic"])
    print(f"\nShare of the top-{K} in each user's new topic, before → after part 2 (measured):")
    for u in users:
        before, after = u["before"], u["after"]
        print(
            f"  {u['user_id']}  {u['new_topic']:<10} {before['new_topic_share']:.2f} → "
            f"{after['new_topic_share']:.2f}   (old topic {u['old_topic']}: "
            f"{before['old_topic_share']:.2f} → {after['old_topic_share']:.2f})"
        )
    print(f"  mean of {len(users)} users  {mean['before']:.2f} → {mean['after']:.2f}")


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(sys.argv[1:] if argv is None else argv)
    # Recent event times, like today's traffic (the service treats users whose newest
    # event is older than 30 days as stale). On a whole hour: the simulator's
    # popularity moves hourly, so every run of one --seed simulates the same stream,
    # only shifted in time.
    args.start_ms = (int(time.time()) // 3600 - 48) * 3600 * 1000
    if args.experiment:
        from rtp.demo import experiment

        return experiment.main(args, cli)
    try:  # every setting checked before the first step
        sim_config = simulator_config(args)
        train_config = TrainConfig(**{**TRAIN_SETTINGS, "seed": args.seed, "epochs": args.epochs})
    except ValueError as err:
        cli.error(str(err))
    out = fresh_out(pathlib.Path(args.out))
    sim, records = simulate(sim_config, out)
    topics = {item.item_id: item.topic for item in sim.items}
    split = split_stream(sim, records, topics, out)
    base = train_models(
        out, train_config, out / "events.part1.jsonl", "[3/5] training on part 1 only"
    )
    user_ids = [u.user_id for u in split.users]
    with contextlib.ExitStack() as stack:
        print("[4/5] part 1 → the feature pipeline → SQLite online store")
        feed = enter_feed(stack, args, out, base)
        print_summary(feed.feed(records[: split.line], out / "events.part1.jsonl"))
        with DemoService(base, feed.store_path, args.seed) as service:
            before = {u: service.recommend(u) for u in user_ids}
            print("[5/5] part 2 → the same pipeline and store; the same service, no retraining")
            print_summary(feed.feed(records[split.line :], out / "events.jsonl"))
            service.refresh_items()
            after = {u: service.recommend(u) for u in user_ids}
    report(split, before, after, topics, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
