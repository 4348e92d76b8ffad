"""``rtp evaluate``: the replay evaluation (``models.evaluation``) with ``rtp train``
(its backfill included) as the trainer of the two-tower variants."""

from __future__ import annotations

import pathlib
from typing import Any

from models.evaluation import cli
from models.evaluation.data import ReplayLog


def train_models(
    log: ReplayLog,
    fmt: str,
    reward: str,
    items: pathlib.Path | None,
    work: pathlib.Path,
    epochs: int | None,
) -> tuple[pathlib.Path, dict[str, Any]]:
    """Run ``rtp train`` on the training period; returns (model base, its metrics)
    (``models.evaluation.neural.TrainModels``)."""
    from models import train
    from models.evaluation.neural import write_training_events
    from rtp.jobs.train import run_history

    suffix = ".csv" if fmt == "movielens" else ".jsonl"
    events = write_training_events(log, fmt, work / f"train_events{suffix}")
    base = work / "models"
    argv = ["--events", str(events), "--format", fmt, "--out", str(base), "--reward", reward]
    argv += ["--sequential-epochs", "0"]  # the sequential variants train their own
    if items is not None:
        argv += ["--items", str(items)]
    if epochs is not None:
        argv += ["--epochs", str(epochs)]
    metrics = train.train(train.parser().parse_args(argv), history=run_history)
    return base, metrics


def main(argv: list[str] | None = None) -> int:
    """``models.evaluation.cli.main`` with ``train_models`` as its trainer."""
    return cli.main(argv, train_models=train_models)
