"""``rtp train``: backfill → point-in-time dataset → retrieval + ranker → export.

    rtp train --events PATH [--items PATH] --out MODEL_BASE [--format jsonl|movielens]
              [--seed S] [--epochs N] [--serving-k K] [--reward PRESET] [--history OFFLINE_DIR]

The backfill job (``beam_pipelines.backfill``) writes the offline history under
``MODEL_BASE/.train_work`` unless ``--history`` names one; ``models.train`` trains
and exports on it.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys

from beam_pipelines.jobs_common import check_log_inputs
from models import train
from models.training_log import default_reward

# The name these lines carried when the backfill ran from inside models.train.
LOG = logging.getLogger("models.train")


def run_history(events: str, fmt: str, reward: str, work: pathlib.Path, expected: int) -> str:
    """The backfill job over the log in event-time order; returns its offline dir
    (``models.train.HistoryJob``).

    ``expected``: events the training loader accepted; the backfill should apply as
    many (a difference means labels without history rows or the reverse).
    """
    from beam_pipelines.backfill import run_backfill

    out = work / "backfill"
    argv = ["--events", events, "--out", str(out), "--format", fmt, "--reward", reward]
    summary = run_backfill([*argv, "--order", "time"])
    LOG.info("backfill: %s", summary)
    if summary.get("applied") != expected:
        LOG.warning(
            "backfill applied %s events, training read %s: check %s/dead_letters",
            summary.get("applied"),
            expected,
            out,
        )
    return str(out / "offline")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cli = train.parser()
    args = cli.parse_args(sys.argv[1:] if argv is None else argv)
    check_log_inputs(cli, args.events, args.reward or default_reward(args.format))
    metrics = train.train(args, history=run_history)
    print(
        json.dumps(
            {
                "version": metrics["version"],
                "retrieval": metrics["retrieval"],
                "ranker": metrics["ranker"],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
