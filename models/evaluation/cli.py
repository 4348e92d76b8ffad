"""``rtp evaluate``: the replay evaluation of EVALUATION.md, every variant in one run.

    rtp evaluate --events ratings.csv --format movielens --out out/eval [--k 10,20,50]

Writes ``metrics.json``, ``report.md`` and two PNG plots to ``--out``. The two-tower
variants are trained by the ``train_models`` that ``run`` and ``main`` are given
(``rtp.jobs.evaluate`` passes ``rtp train``'s), or loaded from ``--model-base``.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import time
from typing import TYPE_CHECKING, Any

from beam_pipelines.console import configure_logging
from beam_pipelines.event_logs import EventLogParser
from beam_pipelines.rewards import load_reward_config
from models.evaluation import report
from models.evaluation.adapt import AdaptTracker, read_truth
from models.evaluation.data import (
    DEFAULT_REWARD,
    FORMATS,
    ReplayLog,
    build_log,
    read_jsonl,
    read_movielens,
)
from models.evaluation.new_items import read_releases, upload_to_first_engagement
from models.evaluation.protocol import ReplayResult, apply_training, replay
from models.evaluation.sequence_variants import CoEngagementRolling
from models.evaluation.variants import BASELINES
from models.evaluation.world import World
from models.train_args import add_content_argument

if TYPE_CHECKING:
    from models.evaluation.neural import TrainModels

LOG = logging.getLogger("rtp.evaluate")
STREAMING_SOURCES = ("coengagement_rolling",)
SEQUENTIAL = ("sequential_static", "sequential_streaming", "full", "full_ranker")
TWO_TOWER = ("two_tower_static", "two_tower_streaming", "two_tower_full")
ALL_VARIANTS = (*BASELINES, *STREAMING_SOURCES, *SEQUENTIAL, *TWO_TOWER)
TRAIN_FRACTION = 0.8


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--k must be comma-separated integers, got {text!r}"
        ) from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"--k values must be >= 1, got {text!r}")
    return ks


def _variants(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(ALL_VARIANTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--variants: unknown {unknown}; known {list(ALL_VARIANTS)}"
        )
    return [n for n in ALL_VARIANTS if n in names]


def parser() -> argparse.ArgumentParser:
    p = EventLogParser(prog="rtp evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--events", required=True, type=pathlib.Path, help="event log file")
    p.add_format_argument(FORMATS, dest="fmt")
    p.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    p.add_argument("--k", type=_ks, default=[10, 20, 50], help="cut-offs, e.g. 10,20,50")
    p.add_argument(
        "--variants",
        type=_variants,
        default=list(ALL_VARIANTS),
        help=f"comma-separated subset of {','.join(ALL_VARIANTS)}",
    )
    p.add_argument("--reward", help="reward preset or YAML (default: movielens / short_video)")
    p.add_argument("--items", type=pathlib.Path, help="item metadata (movies.csv or items.jsonl)")
    p.add_argument(
        "--truth", type=pathlib.Path, help="simulator truth (default <events>.truth.json)"
    )
    p.add_argument("--epochs", type=int, default=None, help="override the models' training epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw in training")
    add_content_argument(p)
    p.add_argument(
        "--model-base",
        type=pathlib.Path,
        help="reuse models this command trained before on the same log (DIR/work/models)",
    )
    p.add_argument(
        "--full-retrieval-weight",
        type=float,
        default=None,
        help="two_tower_full: order candidates by log p(engaged) + W x retrieval score "
        "(default 0: the ranker alone, as served; -1: W = 1 / retrieval temperature)",
    )
    p.add_argument("--rolling-window", type=int, default=1000, help="events per rolling NDCG point")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def _sidecar(events: pathlib.Path, suffix: str) -> pathlib.Path | None:
    path = events.with_name(events.name + suffix)
    return path if path.exists() else None


def _default_items(args: argparse.Namespace) -> pathlib.Path | None:
    if args.items:
        return args.items
    if args.fmt == "jsonl":
        return _sidecar(args.events, ".items.jsonl")
    movies = args.events.with_name("movies.csv")
    return movies if movies.exists() else None


def load(args: argparse.Namespace) -> tuple[ReplayLog, str]:
    reward_name = args.reward or DEFAULT_REWARD[args.fmt]
    reward = load_reward_config(reward_name)
    if args.fmt == "movielens":
        raw, interactions = read_movielens(args.events), "all"
    else:
        raw, interactions = read_jsonl(args.events, reward), "engaged"
    return build_log(raw, reward, interactions, TRAIN_FRACTION), reward_name


def run(
    args: argparse.Namespace, train_models: TrainModels | None = None
) -> tuple[dict[str, Any], ReplayResult]:
    started = time.perf_counter()
    args.items = _default_items(args)
    wall: dict[str, float] = {}
    show = not args.no_progress
    log, reward_name = load(args)
    wall["load"] = time.perf_counter() - started
    notes: list[str] = []
    variants = [BASELINES[n]() for n in args.variants if n in BASELINES]
    if "coengagement_rolling" in args.variants:
        variants.append(CoEngagementRolling())
    embeddings = None
    sequence_names = [n for n in args.variants if n in SEQUENTIAL]
    if sequence_names:
        from models.evaluation import sequence_build

        t0 = time.perf_counter()
        built_seq = sequence_build.build(log, args, sequence_names, show)
        wall["train_sequential"] = time.perf_counter() - t0
        variants += built_seq.variants
        notes += built_seq.notes
    neural_names = [n for n in args.variants if n in TWO_TOWER]
    if neural_names:
        from models.evaluation import neural

        t0 = time.perf_counter()
        built = neural.build(log, args, neural_names, show, train_models)
        wall["train_models"] = time.perf_counter() - t0
        variants += built.variants
        embeddings = built.embeddings
        notes += built.notes
    if args.fmt == "jsonl" and embeddings is not None:
        notes.append(
            "caveat: a logged impression of the target item usually precedes its engagement "
            "and is in the state before the event (as the protocol says); features that count "
            "exposures (the ranker's item_impressions_*) can see that the item was just shown, "
            "a leak of the logging policy that the non-neural variants do not use"
        )
    needs_pairs = {"coengagement_rolling", "full", "full_ranker"} & set(args.variants)
    world = World(log, embeddings=embeddings, coengagement=bool(needs_pairs))
    t0 = time.perf_counter()
    apply_training(world, show)
    wall["train_state"] = time.perf_counter() - t0
    tracker = _tracker(args, log, [v.name for v in variants])
    t0 = time.perf_counter()
    result = replay(world, variants, show, observer=tracker)
    wall["replay"] = time.perf_counter() - t0
    wall["total"] = time.perf_counter() - started
    return {
        "input": {"events": str(args.events), "format": args.fmt, "reward": reward_name},
        "protocol": {
            "k": args.k,
            "train_fraction": TRAIN_FRACTION,
            "sort": "(timestamp, user, blake2b(user, item)), stable; numeric ids sort as numbers",
            "interactions": "every event" if args.fmt == "movielens" else "engaged events",
            "rank": "other candidates scoring >= the target, seen items excluded",
        },
        "dataset": report.dataset_stats(log, result),
        "variants": report.variant_metrics(result, args.k, log),
        "time_to_adapt": tracker.summary() if tracker else None,
        "new_items": _new_items(args, log, result),
        "wall_time_s": {k: round(v, 4) for k, v in wall.items()},  # a tiny run takes ms
        "notes": notes,
    }, result


def _new_items(args: argparse.Namespace, log: ReplayLog, result: ReplayResult) -> dict | None:
    """Upload → first engagement (``models.evaluation.new_items``) when the items
    file gives release times (the simulator's ``items.jsonl``)."""
    if args.items is None or args.items.suffix != ".jsonl":
        return None
    releases = read_releases(args.items)
    if not releases:
        return None
    return upload_to_first_engagement(log, result.positions, result.ranks, releases)


def _tracker(args: argparse.Namespace, log: ReplayLog, names: list[str]) -> AdaptTracker | None:
    truth = args.truth or (_sidecar(args.events, ".truth.json") if args.fmt == "jsonl" else None)
    items = args.items
    if truth is None:
        return None
    if items is None or items.suffix != ".jsonl":
        LOG.warning("truth %s given but no items.jsonl: no time to adapt", truth)
        return None
    shifts, topics = read_truth(truth, items)
    return AdaptTracker(log, shifts, topics, names)


def main(argv: list[str] | None = None, train_models: TrainModels | None = None) -> int:
    """Run the evaluation; 0 on success, 2 on bad arguments or input.
    ``train_models``: the trainer of the two-tower variants (see ``run``)."""
    configure_logging()
    args = parser().parse_args(argv)
    if not args.events.is_file():
        print(f"rtp evaluate: --events {args.events} is not a file", file=sys.stderr)
        return 2
    try:
        document, result = run(args, train_models)
    except ValueError as err:
        print(f"rtp evaluate: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_metrics(args.out, document)
    report.write_report(args.out, document)
    report.write_plots(args.out, document, result, args.rolling_window)
    print(report.summary_line(document))
    return 0
