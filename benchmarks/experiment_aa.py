"""A/A check of the experiment statistics: ``--runs`` simulated A/A logs (the same
engagement propensities in both variants, different seeds), each through the
report's attribution and intervals; counts the runs whose lift interval excludes
zero. With 95 % intervals about 1 run in 20 should, per metric.

The logs are synthetic (``rtp.simulator.experiment_log``: per-user propensities,
1–6 requests of 5 items per user over 3 days), not the closed loop (``rtp simulate
--closed-loop``, minutes per run). Prints one JSON object.

Run: ``python -m benchmarks.experiment_aa [--runs 20] [--users 4000]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from beam_pipelines.experiments.aggregate import METRICS
from beam_pipelines.experiments.config import ExperimentsConfig
from beam_pipelines.experiments.report import build_report
from beam_pipelines.rewards import SHORT_VIDEO
from benchmarks.common import emit, log
from rtp.simulator.experiment_log import experiment, synthetic_log


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--first-seed", type=int, default=100)
    args = parser.parse_args(argv)
    significant = {metric: [] for metric in METRICS}
    srm_flags = []
    for seed in range(args.first_seed, args.first_seed + args.runs):
        config = experiment(f"aa{seed}")  # a salt per run: a new split of the users
        events = synthetic_log(config, args.users, seed)
        report = build_report(events, SHORT_VIDEO, ExperimentsConfig(experiments=(config,)))
        result = report["experiments"][config.name]
        for metric in METRICS:
            if result["variants"]["treatment"][metric]["lift"]["significant"]:
                significant[metric].append(seed)
        if result["srm_p_value"] < 0.001:
            srm_flags.append(seed)
        log(f"seed {seed}: done")
    emit(
        "experiment_aa",
        runs=args.runs,
        users_per_run=args.users,
        significant_runs={metric: len(seeds) for metric, seeds in significant.items()},
        significant_seeds=significant,
        either_metric=len({s for seeds in significant.values() for s in seeds}),
        expected_per_metric=round(0.05 * args.runs, 1),
        srm_flags_p_below_0_001=len(srm_flags),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
