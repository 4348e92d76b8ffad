"""CPU per recommendation in-process: one fused TensorFlow call against separate calls.

Setup as ``bench_serving`` (a real export with the layer sizes of ``rtp train``,
untrained weights, 500 candidates per request; users and items in the embedded
SQLite store). One ``Service`` runs ``Recommender.recommend`` in a loop, with no
HTTP, switching between the fused call (``serving/fused.py``, the default) and the
separate calls a model server gets (retrieval, then the ranker) every ``--block``
requests, so that both see the same machine state: on a shared machine the speed
drifts by tens of percent within minutes, and only alternation makes the two
comparable. CPU is the process's (every thread, TensorFlow's included), per
request. The reference is the separate calls: ``ratio`` = fused / separate,
medians over ``--blocks`` blocks each. Both give the same rankings (tested in
``tests/integration/test_serving_inprocess.py``).

Run: ``python -m benchmarks.bench_fused [--blocks 20] [--block 100]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_serving import K, prepare
from benchmarks.common import emit, log


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--blocks", type=int, default=20, help="Blocks per mode.")
    parser.add_argument("--block", type=int, default=100, help="Requests per block.")
    args = parser.parse_args(argv)
    from feature_repo.store import load_store_config
    from serving.config import load_serving_config
    from serving.service import Service

    with tempfile.TemporaryDirectory(prefix="bench-fused-") as tmp:
        models, store_yaml = prepare(Path(tmp), args.items, args.users)
        config = load_serving_config(
            {
                "model_base": str(models),
                "models": {"type": "inprocess"},
                "ranking": {"seed": 1},
                "store": load_store_config(store_yaml).model_dump(),
            }
        )
        service = Service(config)
        service.start()
        try:
            recommender = service.recommender
            assert recommender is not None
            model_set = recommender.parts.models
            if model_set.fused is None:
                raise SystemExit("the fused call is not in use: nothing to compare")
            modes = {"fused": model_set.fused, "separate": None}
            users = [f"user-{(i * 7) % args.users}" for i in range(args.block)]
            for user in users * 3:  # warm-up
                recommender.recommend(user, K)
            cpu_ms: dict[str, list[float]] = {mode: [] for mode in modes}
            log(f"{args.blocks} blocks of {args.block} requests per mode, alternating ...")
            for _ in range(args.blocks):
                for mode, fused in modes.items():
                    model_set.fused = fused
                    started = time.process_time()
                    for user in users:
                        recommender.recommend(user, K)
                    cpu_ms[mode].append((time.process_time() - started) * 1000 / args.block)
            model_set.fused = modes["fused"]
        finally:
            service.stop()
    medians = {mode: statistics.median(values) for mode, values in cpu_ms.items()}
    for mode, values in cpu_ms.items():
        emit(
            "recommend_cpu_ms_per_request",
            mode=mode,
            median=round(medians[mode], 3),
            min=round(min(values), 3),
            blocks=len(values),
            requests_per_block=args.block,
        )
    emit("fused_vs_separate", ratio_cpu=round(medians["fused"] / medians["separate"], 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
