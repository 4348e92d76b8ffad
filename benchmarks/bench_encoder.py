"""Content-encoder throughput: items/s of all-MiniLM-L6-v2 (NumPy) by batch size.

Texts are MovieLens titles with their genres (``item_text``), as ``rtp items
--items movies.csv`` and ``encode_catalog`` encode them; the first ``--items``
titles of ``movies.csv`` (or synthetic titles when the file is absent). For each
batch size, the same titles are encoded ``--repeats`` times after one warm-up
call; the median items/s is reported with every run's value. Also the time to
load the encoder (weights read from the installed package). Reference, measured
in the same run: the GFLOP/s NumPy's BLAS gives a dense product of the encoder's
shape on this machine now; ``gflops`` of a batch size is what the encoder got
(2 × 10.6 M weights per token, attention left out), so a busy machine shows as a
low reference rather than as a slow encoder.

Prints one JSON object per measure. Run:
``python -m benchmarks.bench_encoder [--movies PATH] [--items 512] [--repeats 3]``.
Threads: NumPy's BLAS uses every core it sees (2 on the reference machine);
``OPENBLAS_NUM_THREADS`` bounds it.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

from benchmarks.common import emit, log, median_of

BATCH_SIZES = (1, 16, 64, 256)
DEFAULT_MOVIES = "../shared/datasets/ml-latest-small/movies.csv"


def catalogue_texts(movies: Path, n: int) -> list[str]:
    from beam_pipelines.content import item_text

    if not movies.exists():
        log(f"{movies} not found: synthetic titles")
        return [item_text(f"Movie number {i} (19{i % 100:02d})", "Drama|Comedy") for i in range(n)]
    with movies.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:n]
    return [item_text(r["title"], r["genres"]) for r in rows]


FLOPS_PER_TOKEN = 2 * 6 * (384 * 1152 + 384 * 384 + 2 * 384 * 1536)  # six layers' products


def blas_gflops(repeats: int) -> float:
    """Median GFLOP/s of a [1024, 384] @ [384, 1536] float32 product."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((1024, 384), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((384, 1536), dtype=np.float32)

    def run() -> float:
        t = time.perf_counter()
        for _ in range(20):
            a @ b
        return 20 * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - t) / 1e9

    return median_of(repeats, run)[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--movies", default=DEFAULT_MOVIES, help="MovieLens movies.csv.")
    p.add_argument("--items", type=int, default=512, help="Titles encoded per run.")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    args = p.parse_args(argv)

    from beam_pipelines.content.minilm import MiniLMEncoder

    started = time.perf_counter()
    encoder = MiniLMEncoder()
    emit("encoder_load", encoder=encoder.name, seconds=round(time.perf_counter() - started, 3))
    texts = catalogue_texts(Path(args.movies), args.items)
    tokens = [len(ids) for ids in encoder.tokenize(texts)]
    common = {
        "encoder": encoder.name,
        "items": len(texts),
        "mean_tokens": round(sum(tokens) / len(tokens), 1),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "all cores"),
    }
    emit("blas_reference", gflops=round(blas_gflops(args.repeats), 1), **common)
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        encoder.encode(texts[: min(len(texts), max(batch_size, 16))], batch_size)  # warm-up

        def run(batch_size: int = batch_size) -> float:
            t = time.perf_counter()
            encoder.encode(texts, batch_size=batch_size)
            return len(texts) / (time.perf_counter() - t)

        median, values = median_of(args.repeats, run)
        emit(
            "encoder_throughput",
            batch_size=batch_size,
            items_per_s=round(median, 1),
            gflops=round(median * common["mean_tokens"] * FLOPS_PER_TOKEN / 1e9, 1),
            runs=[round(v, 1) for v in values],
            **common,
        )


if __name__ == "__main__":
    main()
