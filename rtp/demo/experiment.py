"""``rtp demo --experiment``: an A/B of streamed versus frozen user features through
the closed loop, on the embedded default.

simulate a history → train on it → the backfill job writes its features to the
SQLite store → start the Pub/Sub emulator, the streaming job (it resumes each
user's state from the store) and the service over HTTP with one experiment:
``frozen`` (control: the users' features as they were when the loop started, a
daily batch's view) against ``streamed`` (the streaming job's fresh features) →
the simulator's users ask the service and react (``rtp simulate --closed-loop``)
→ the service's exposures and the users' events, logged from the topic by a
subscription of their own, go to ``rtp experiment report`` →
``<out>/experiment/report.json`` and the printed summary.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import pathlib
import threading
import time
from typing import Any, Self

import yaml

from rtp.demo import run as demo
from rtp.simulator.simulation import Simulation

EXPERIMENT = "fresh_features"
CONTROL, TREATMENT = "frozen", "streamed"
LOG_SUBSCRIPTION = "engagement-events-log"
REPORT_DIR = "experiment"
METRIC_LABELS = (("engagement_rate", "engagement rate"), ("reward_per_exposure", "reward/exposure"))


def experiments(freeze_ms: int) -> dict[str, Any]:
    """The experiment, as YAML would hold it: half the users with their features
    frozen at ``freeze_ms`` (epoch ms), half streamed."""
    freeze_at = dt.datetime.fromtimestamp(freeze_ms / 1000, dt.UTC).isoformat()
    return {
        "experiments": [
            {
                "name": EXPERIMENT,
                "salt": f"{EXPERIMENT}-demo",
                "control": CONTROL,
                "variants": [
                    {"name": CONTROL, "features": "frozen", "freeze_at": freeze_at},
                    {"name": TREATMENT},
                ],
            }
        ]
    }


class HttpService:
    """``serving.app`` on uvicorn in a thread of this process, on a free loopback
    port: the same app ``rtp serve`` runs, reached over HTTP at ``url``. Leaving
    stops it the way ``rtp serve`` stops (the exposure buffer is published first)."""

    def __init__(self, config: Any, start_timeout_s: float = 180.0) -> None:
        self.config = config
        self._start_timeout_s = start_timeout_s

    def __enter__(self) -> Self:
        import uvicorn

        from rtp.local_servers import HOST, free_port
        from serving.app import create_app

        app = create_app(self.config)
        self.metrics = app.state.service.metrics
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        options = {"log_level": "warning", "access_log": False, "lifespan": "on"}
        self._server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, **options))
        self._thread = threading.Thread(target=self._server.run, name="service", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the recommendation service did not start")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=60)

    def exposures(self) -> dict[str, int]:
        """``rtp_serving_exposures_total`` by outcome (published, dropped, failed)."""
        registry = self.metrics.registry
        return {
            outcome: int(
                registry.get_sample_value("rtp_serving_exposures_total", {"outcome": outcome}) or 0
            )
            for outcome in ("published", "dropped", "failed")
        }


def closed_loop(
    sim: Simulation,
    base: pathlib.Path,
    feed: Any,
    out: pathlib.Path,
    events: int,
    rate: float | None,
) -> dict[str, Any]:
    """The experiment through the closed loop on a running ``StreamingFeed``: returns
    the loop's counts and the exposure accounting; the log is ``<out>/events.jsonl``,
    the experiments config ``<out>/experiments.yaml``."""
    from rtp.demo.event_log import TopicLog
    from rtp.simulator.closed_loop import ClosedLoop
    from rtp.simulator.service_client import ServiceClient

    out.mkdir(parents=True, exist_ok=True)
    config = experiments(int(time.time() * 1000))
    (out / "experiments.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subscription = f"projects/{feed.topic.split('/')[1]}/subscriptions/{LOG_SUBSCRIPTION}"
    serving = demo.serving_config(
        base, feed.store_path, pubsub_topic=feed.topic, experiments=config
    )
    with TopicLog(feed.topic, subscription, out / "events.jsonl") as log:
        with HttpService(serving) as service:
            print(f"  service on {service.url}; {events} events of the simulated users")
            loop = ClosedLoop(sim, ServiceClient(service.url), k=demo.K, events=events, rate=rate)
            stats = loop.run()
        exposures = service.exposures()  # the service stopped: its buffer is published
        log.wait_quiet(exposures["published"])
        logged = log.counts()
    accounting = {
        "shown": stats.shown,
        **{f"exposures_{k}": v for k, v in exposures.items()},
        "exposures_logged": logged["exposures"],
        "events_sent": stats.events_published,
        "events_logged": logged["written"] - logged["exposures"] - logged["unreadable"],
        "redelivered": logged["redelivered"],
    }
    accounting["holds"] = (
        stats.shown == exposures["published"] == accounting["exposures_logged"]
        and accounting["events_sent"] == accounting["events_logged"]
    )
    document = {"loop": stats.to_dict(), "accounting": accounting}
    (out / "loop.json").write_text(json.dumps(document, indent=2) + "\n")
    return document


def report(out: pathlib.Path) -> dict[str, Any]:
    """``rtp experiment report`` over the logged events and exposures; returns it."""
    from beam_pipelines.experiments import cli

    argv = ["report", "--events", str(out / "events.jsonl"), "--out", str(out)]
    code = cli.main([*argv, "--experiments", str(out / "experiments.yaml")])
    if code:
        raise RuntimeError(f"rtp experiment report failed ({code})")
    return json.loads((out / "report.json").read_text())


def print_summary(document: dict[str, Any], report: dict[str, Any]) -> None:
    loop, accounting = document["loop"], document["accounting"]
    print(
        f"\nClosed loop: {loop['sessions']} sessions, {loop['shown']} items shown, "
        f"{loop['events_published']} events sent in {loop['elapsed_s']} s; service "
        f"unavailable {sum(loop['unavailable'].values())} times "
        f"({loop['backoff_s']} s of back-off)"
    )
    print(
        f"Exposures: shown {accounting['shown']}, published by the service "
        f"{accounting['exposures_published']} (dropped {accounting['exposures_dropped']}, "
        f"failed {accounting['exposures_failed']}), logged {accounting['exposures_logged']}; "
        f"every exposure logged: {'yes' if accounting['holds'] else 'NO'}"
    )
    ages, repeats = loop["median_feature_age_s_by_variant"], loop["repeat_share_by_variant"]
    for variant, sessions in loop["sessions_by_variant"].items():
        fallbacks = loop["fallbacks_by_variant"].get(variant, {})
        print(
            f"  {variant}: {sessions} sessions, median feature age {ages.get(variant, 'n/a')} s, "
            f"{repeats.get(variant, 0):.0%} of the items shown to the user before, "
            f"fallbacks {sum(fallbacks.values())} {fallbacks or ''}".rstrip()
        )
    experiment = report["experiments"].get(EXPERIMENT)
    if experiment is None:
        print("No exposure carried the experiment: no comparison.")
        return
    streamed = experiment["variants"][TREATMENT]
    print(f"\n{TREATMENT} versus {CONTROL} (SRM p-value {_p(experiment['srm_p_value'])}):")
    for metric, label in (
        ("engagement_rate", "engagement rate"),
        ("reward_per_exposure", "reward/exposure"),
    ):
        lift = streamed[metric]["lift"]
        if lift is None or lift["value"] is None:
            print(f"  {label}: no lift (too little data)")
            continue
        verdict = "significant" if lift["significant"] else "not significant at 95 %"
        print(
            f"  {label}: lift {_pct(lift['value'])} [{_pct(lift['ci_low'])}, "
            f"{_pct(lift['ci_high'])}], p {_p(lift['p_value'])}: {verdict}"
        )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}%"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def main(args: argparse.Namespace, cli: argparse.ArgumentParser) -> int:
    """``rtp demo --experiment`` with the demo's parsed arguments."""
    from models.config import TrainConfig
    from rtp.demo.streaming_feed import StreamingFeed
    from rtp.local_servers import ComponentMissing

    try:
        sim_config = demo.simulator_config(args)
        train = TrainConfig(**{**demo.TRAIN_SETTINGS, "seed": args.seed, "epochs": args.epochs})
    except ValueError as err:
        cli.error(str(err))
    out = demo.fresh_out(pathlib.Path(args.out))
    sim, records = demo.simulate(sim_config, out)
    base = demo.train_models(out, train, out / "events.jsonl", "[2/5] training on the history")
    print("[3/5] history → the backfill job → SQLite online store (the features at the start)")
    with demo.BackfillFeed(out / "features", str(base)) as history:
        demo.print_summary(history.feed(records, out / "events.jsonl"))
    print("[4/5] closed loop: service (experiment) ⇄ simulated users; events → streaming job")
    with contextlib.ExitStack() as stack:
        try:
            feed = stack.enter_context(
                StreamingFeed(out / "features", str(base), args.stream_timeout_s)
            )
        except ComponentMissing as missing:
            print(f"rtp demo --experiment needs the Pub/Sub emulator: {missing}")
            return 1
        document = closed_loop(sim, base, feed, out / REPORT_DIR, args.loop_events, args.loop_rate)
    print(f"[5/5] rtp experiment report → {out / REPORT_DIR}")
    result = report(out / REPORT_DIR)
    print_summary(document, result)
    return 0 if document["accounting"]["holds"] and not document["loop"]["stopped"] else 1
