"""``rtp train``'s command line, apart from the training so that parsing it (``--help``,
a bad flag) does not import TensorFlow."""

from __future__ import annotations

import argparse

from beam_pipelines.event_logs import FORMATS, EventLogParser
from models.config import TrainConfig

DESCRIPTION = "``rtp train``: backfill → point-in-time dataset → retrieval + ranker → export."


def _positive_int(text: str) -> int:
    """An integer >= 1 (argparse names the flag in the error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = EventLogParser(prog="rtp train", description=DESCRIPTION)
    p.add_argument("--events", required=True, help="Event log path or glob.")
    p.add_argument("--items", help="Item metadata: movies.csv or the simulator's items.jsonl.")
    p.add_argument("--out", required=True, help="Model base directory (versions go below it).")
    p.add_format_argument(FORMATS, fallback="jsonl")
    p.add_argument("--seed", type=int, default=0)
    add_content_argument(p)
    p.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    p.add_argument(
        "--train-fraction",
        type=float,
        default=TrainConfig().train_fraction,
        help="Share of events (in time order) to train on; 1 trains on all, without validation.",
    )
    p.add_argument(
        "--serving-k",
        type=_positive_int,
        default=TrainConfig().serving_k,
        help="Top-K of the exported retrieval signature (capped at the catalogue size).",
    )
    p.add_argument(
        "--ann-min-items",
        type=_positive_int,
        default=TrainConfig().ann_min_items,
        help="Catalogue size from which the sequential retriever's export also writes an "
        "ANN index (models.ann) that the service searches instead of brute force.",
    )
    p.add_argument(
        "--sequential-epochs",
        type=int,
        help="Epochs of the sequential retriever (default: its SequentialConfig's; 0: do not "
        "train or export it).",
    )
    p.add_argument("--reward", help="Reward preset or YAML (default: by format, as the backfill).")
    p.add_argument("--history", help="Existing offline history dir (skips the backfill).")
    p.add_argument(
        "--join-engine",
        default="auto",
        choices=("auto", "feast", "asof"),
        help="Point-in-time join: Feast historical retrieval, its pandas equivalent, or "
        "auto (Feast unless its quadratic join would be too large).",
    )
    return p


def add_content_argument(p: argparse.ArgumentParser) -> None:
    """``--content/--no-content``, shared by ``rtp train`` and ``rtp evaluate``."""
    p.add_argument(
        "--content",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sequential items also embed from pretrained text vectors of --items "
        "(all-MiniLM-L6-v2 over title and genres; --no-content: id and hashed tokens only)",
    )
