"""Retrieval cost curve: ANN (``models.ann``) against exact brute force by catalogue size.

For each size (default 10 k, 100 k, 1 M items) a synthetic item table of ``--dim``
(64) float32 vectors drawn from 1000 Gaussian clusters (centres ~ N(0, I), spread
σ = 1 around them, so clusters overlap and an index has to work for its recall),
and ``--queries`` query vectors drawn the same way, independently of the items.

- ``brute_force``: the SavedModel's own computation, ``top_k(matmul(q, table))``
  in a ``tf.function``, one query at a time, TensorFlow at 1 intra-op and 1
  inter-op thread as the in-process service runs it. Its answers are the truth.
- ``ann``: ``models.ann.build`` as the export runs it (build time, file bytes,
  ``nlist``, calibrated ``nprobe``), read back as the service reads it, then per
  query what ``serving.model_set`` does after the model call: ``Ann.search`` for
  ``--fetch`` rows (the service's over-fetch) and the normalizer estimate.

Both fetch ``--fetch`` rows (500, the exported K); recall@100 compares the first
100 ANN rows with the exact first 100. Latency is per query at batch 1; each of
``--repeats`` passes gives p50 and p99, and the JSON reports the median over
passes with every pass's value. Prints one JSON object per size and writes a PNG
(``--plot``) of latency and recall against catalogue size.

Run: ``python -m benchmarks.bench_retrieval [--sizes 10000 100000 1000000]
[--queries 200] [--repeats 3] [--plot out/bench_retrieval.png]``.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

from benchmarks.common import emit, log
from serving.quiet import banners_dropped, import_tensorflow

CLUSTERS = 1000
RECALL_AT = 100


def clustered(n: int, dim: int, centers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` vectors: a random centre each plus N(0, I) noise (float32, in chunks)."""
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        size = min(100_000, n - start)
        noise = rng.standard_normal((size, dim), dtype=np.float32)
        out[start : start + size] = centers[rng.integers(0, len(centers), size)] + noise
    return out


def brute_force(table: np.ndarray, k: int) -> Callable[[np.ndarray], tuple]:
    """The exported signature's top-K as a ``tf.function`` of one ``[1, d]`` query."""
    import tensorflow as tf

    items = tf.constant(table)

    @tf.function(input_signature=[tf.TensorSpec([None, table.shape[1]], tf.float32)])
    def top(query):
        return tf.math.top_k(tf.matmul(query, items, transpose_b=True), k=k)

    return lambda query: tuple(t.numpy() for t in top(tf.constant(query)))


def percentiles_ms(run: Callable[[np.ndarray], object], queries: np.ndarray) -> tuple[float, float]:
    """(p50, p99) in milliseconds of ``run`` on each query alone."""
    times = []
    for query in queries:
        started = time.perf_counter()
        run(query[None])
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def repeated(run: Callable[[np.ndarray], object], queries: np.ndarray, repeats: int) -> dict:
    """Medians over ``repeats`` passes of each pass's p50 and p99 (ms), with the passes."""
    run(queries[:1])  # the first call traces or faults pages in
    passes = [percentiles_ms(run, queries) for _ in range(repeats)]
    return {
        "p50_ms": round(statistics.median(p[0] for p in passes), 4),
        "p99_ms": round(statistics.median(p[1] for p in passes), 4),
        "passes_p50_ms": [round(p[0], 4) for p in passes],
        "passes_p99_ms": [round(p[1], 4) for p in passes],
    }


def measure(n: int, args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    from models import ann

    rng = np.random.default_rng(args.seed)
    centers = rng.standard_normal((CLUSTERS, args.dim), dtype=np.float32)
    table = clustered(n, args.dim, centers, rng)
    queries = clustered(args.queries, args.dim, centers, rng)
    fetch = min(args.fetch, n)
    exact = brute_force(table, fetch)
    truth = np.stack([exact(q[None])[1][0] for q in queries])
    brute = repeated(exact, queries, args.repeats)

    built = ann.build(table, fetch, seed=args.seed)
    folder = built.write(workdir / str(n))
    index_bytes = (folder / ann.INDEX_FILE).stat().st_size
    del built
    started = time.perf_counter()
    index = ann.read(workdir / str(n))
    load_s = time.perf_counter() - started
    assert index is not None

    def search(query: np.ndarray) -> None:
        scores, rows = index.search(query)
        index.log_normalizer(query[0], scores[0], rows[0])

    rows = np.concatenate([index.search(q[None])[1] for q in queries])
    searched = repeated(search, queries, args.repeats)
    m = index.manifest
    return {
        "items": n,
        "dim": args.dim,
        "fetch": fetch,
        "queries": len(queries),
        "repeats": args.repeats,
        f"recall_at_{RECALL_AT}": round(
            ann.recall_at(rows[:, :RECALL_AT], truth[:, :RECALL_AT]), 4
        ),
        f"recall_at_{fetch}": round(ann.recall_at(rows, truth), 4),
        "ann": searched,
        "brute_force": brute,
        "speedup_p50": round(brute["p50_ms"] / searched["p50_ms"], 1),
        "build_s": m.build_s,
        "load_s": round(load_s, 3),
        "index_bytes": index_bytes,
        "table_bytes": int(table.nbytes),
        "index": {"type": m.index_type, "nlist": m.nlist, "nprobe": m.nprobe},
        "calibration_recall": m.calibration_recall,
    }


def plot(results: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["items"] for r in results]
    fig, (latency, recall) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label, color in (
        ("brute_force", "brute force", "tab:red"),
        ("ann", "ANN", "tab:blue"),
    ):
        latency.plot(
            sizes, [r[key]["p50_ms"] for r in results], "o-", color=color, label=f"{label} p50"
        )
        latency.plot(
            sizes, [r[key]["p99_ms"] for r in results], "o--", color=color, label=f"{label} p99"
        )
    latency.set(xscale="log", yscale="log", xlabel="items", ylabel="ms per query (batch 1)")
    latency.legend()
    recall.plot(sizes, [r[f"recall_at_{RECALL_AT}"] for r in results], "o-", color="tab:blue")
    recall.axhline(0.95, color="grey", linestyle=":")
    recall.set(xscale="log", xlabel="items", ylabel=f"ANN recall@{RECALL_AT} vs brute force")
    recall.set_ylim(min(0.9, *(r[f"recall_at_{RECALL_AT}"] for r in results)) - 0.01, 1.001)
    fig.suptitle(f"retrieval, {results[0]['dim']}-d clustered vectors")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--fetch", type=int, default=500, help="Rows per query (the exported K).")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", type=pathlib.Path, default=pathlib.Path("out/bench_retrieval.png"))
    args = p.parse_args(argv)

    import_tensorflow()  # without its start-up banners
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    with banners_dropped():  # the runtime starts: "failed call to cuInit" on a CPU machine
        tf.config.list_logical_devices()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as workdir:
        for n in args.sizes:
            log(f"{n} items ...")
            results.append(measure(n, args, pathlib.Path(workdir)))
            emit("retrieval", **results[-1])
    plot(results, args.plot)
    log(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
