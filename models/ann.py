"""Approximate top-K over an exported item table: a faiss IVF-Flat index, inner product.

Built at export for catalogues of at least ``TrainConfig.ann_min_items`` items
(ScaNN, which TFRS wraps, ships TensorFlow ops built for TensorFlow 2.20 that do
not load in our pinned 2.21; faiss is MIT-licensed with wheels for Python 3.11).
``write`` puts it beside the SavedModel it belongs to, under ``assets.extra/ann/``
(TF Serving ignores that folder), so it is versioned with the model::

    index.faiss             faiss.write_index of the IVF-Flat index (rows as ids)
    normalizer_sample.npz   ``rows`` and ``vectors`` of a fixed uniform sample of the table
    manifest.json           library, version, metric, parameters, item count, ...

A client gets the query vector from the model's ``query`` signature and calls
``Ann.search``: the index returns exact inner products of the rows it finds, so
the only approximation is which rows it finds. IVF-Flat, not HNSW: on clustered
64-d vectors it reached a higher recall@100 per millisecond by inner product (HNSW
plateaued near 0.92 at 100 k items) and it trains in seconds by k-means.
``nprobe`` is calibrated at export (``build``): the smallest of a geometric grid
whose recall@100 on probe queries (table rows) reaches ``target_recall``.

faiss is imported lazily; it comes with the ``serve`` and ``train`` extras.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import numpy as np

ANN_DIR = "assets.extra/ann"
INDEX_FILE, SAMPLE_FILE, MANIFEST_FILE = "index.faiss", "normalizer_sample.npz", "manifest.json"
METRIC = "inner_product"
INDEX_TYPE = "IVFFlat"
SAMPLE_SIZE = 2048  # rows behind the log-normalizer estimate (``log_normalizer``)
PROBE_QUERIES = 200
CALIBRATION_AT = 100  # recall@100: the rows a recommendation list is mostly drawn from


def faiss_module() -> Any:
    """``faiss``, or an ImportError naming the extra that installs it."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            "the ANN index needs faiss: pip install 'rtp-personalization[serve]'"
        ) from e
    return faiss


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` records about one index."""

    library: str
    library_version: str
    index_type: str
    metric: str
    item_count: int
    dim: int
    k: int  # rows one search returns (the brute-force signature's K)
    nlist: int  # k-means cells
    nprobe: int  # cells searched per query
    calibration_recall: float  # recall@min(k, 100) on the probe queries at ``nprobe``
    build_s: float  # seconds to train, fill and calibrate

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls(**json.loads(text))


def cells(n_items: int) -> int:
    """k-means cells: about 4·√n (faiss's rule of thumb), at least 1, at most n/39
    (k-means wants ≥ 39 training points per cell)."""
    return int(max(1, min(round(4 * np.sqrt(n_items)), n_items // 39)))


class Ann:
    """One loaded (or just built) index with its manifest and normalizer sample."""

    def __init__(self, index: Any, manifest: Manifest, sample_rows: np.ndarray, sample: np.ndarray):
        self.index = index
        self.manifest = manifest
        self.sample_rows = np.asarray(sample_rows, np.int64)
        self.sample = np.asarray(sample, np.float32)
        index.nprobe = manifest.nprobe

    def search(self, queries: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 ``[B, k]``, rows int64 ``[B, k]``), best first; rows -1 and
        scores -inf pad when fewer than ``k`` rows were found (default: manifest's k)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.manifest.dim)
        scores, rows = self.index.search(queries, int(k or self.manifest.k))
        return np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows

    def log_normalizer(
        self, query: np.ndarray, top_scores: np.ndarray, top_rows: np.ndarray
    ) -> float:
        """Estimated ``log Σ_all exp(query · item)`` for one query (see ``log_normalizer``)."""
        sample_scores = self.sample @ np.asarray(query, np.float32).reshape(-1)
        return log_normalizer(
            top_scores, top_rows, sample_scores, self.sample_rows, self.manifest.item_count
        )

    def write(self, directory: pathlib.Path) -> pathlib.Path:
        """The three files under ``directory / ANN_DIR``; returns that folder."""
        faiss = faiss_module()
        folder = pathlib.Path(directory) / ANN_DIR
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        np.savez(folder / SAMPLE_FILE, rows=self.sample_rows, vectors=self.sample)
        (folder / MANIFEST_FILE).write_text(self.manifest.to_json())
        return folder


def read(directory: str | pathlib.Path) -> Ann | None:
    """The index written under ``directory / ANN_DIR`` (a model version directory),
    or None when that version has none (a small catalogue: brute force)."""
    folder = pathlib.Path(directory) / ANN_DIR
    if not (folder / MANIFEST_FILE).is_file():
        return None
    faiss = faiss_module()
    manifest = Manifest.from_json((folder / MANIFEST_FILE).read_text())
    # One OpenMP thread per search: at batch 1 a second thread only waits (measured
    # 10× slower with 2 threads on 2 shared cores); concurrent requests use the cores.
    faiss.omp_set_num_threads(1)
    index = faiss.read_index(str(folder / INDEX_FILE))
    with np.load(folder / SAMPLE_FILE) as sample:
        return Ann(index, manifest, sample["rows"], sample["vectors"])


def build(
    table: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    target_recall: float = 0.97,
    probes: np.ndarray | None = None,
) -> Ann:
    """IVF-Flat over the rows of ``table`` (``[n, d]``) by inner product, searched for
    ``k`` rows, ``nprobe`` calibrated for recall@min(k, 100) ≥ ``target_recall`` on
    ``probes`` (real query vectors, ``[m, d]``) or, by default, on 200 table rows.
    Queries far from the rows need more cells than rows do: pass real ones if known."""
    faiss = faiss_module()
    started = time.perf_counter()
    table = np.ascontiguousarray(table, dtype=np.float32)
    n, dim = table.shape
    k = int(min(k, n))
    rng = np.random.default_rng(seed)
    nlist = cells(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    training = table[rng.choice(n, min(n, 64 * nlist), replace=False)]
    index.train(training)
    index.add(table)
    if probes is None:
        probes = table[rng.choice(n, min(n, PROBE_QUERIES), replace=False)]
    probes = np.ascontiguousarray(probes, dtype=np.float32)
    nprobe, recall = _calibrate(index, table, probes, min(k, CALIBRATION_AT), target_recall)
    sample_rows = np.sort(rng.choice(n, min(n, SAMPLE_SIZE), replace=False))
    manifest = Manifest(
        library="faiss-cpu",
        library_version=str(faiss.__version__),
        index_type=INDEX_TYPE,
        metric=METRIC,
        item_count=int(n),
        dim=int(dim),
        k=k,
        nlist=nlist,
        nprobe=nprobe,
        calibration_recall=round(recall, 4),
        build_s=round(time.perf_counter() - started, 3),
    )
    return Ann(index, manifest, sample_rows, table[sample_rows])


def _calibrate(
    index: Any, table: np.ndarray, probes: np.ndarray, k: int, target: float
) -> tuple[int, float]:
    """Smallest ``nprobe`` of 1, 2, 3, 4, 6, 8, 12, 16, ... (steps of ×1.5 or ×4/3)
    reaching ``target`` recall@k on ``probes``."""
    # Exact top-k 10 probes at a time: no [probes, n] score matrix in memory at once.
    parts = [probes[i : i + 10] for i in range(0, len(probes), 10)]
    truth = np.concatenate([exact_top(table, part, k) for part in parts])
    nprobe, recall = 1, 0.0
    while True:
        index.nprobe = nprobe
        _, rows = index.search(probes, k)
        recall = recall_at(rows, truth)
        if recall >= target or nprobe >= index.nlist:
            return nprobe, recall
        nprobe = min(max(nprobe + 1, _next_step(nprobe)), index.nlist)


def _next_step(nprobe: int) -> int:
    """The grid 1, 2, 3, 4, 6, 8, 12, 16, ...: powers of two and 1.5 times them."""
    power = 1 << (nprobe.bit_length() - 1)
    return power * 3 // 2 if nprobe == power else 2 * power


def exact_top(table: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of the exact top-``k`` inner products of each query, best first."""
    scores = queries @ table.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (exact top-k rows) present in ``found``."""
    shares = [len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(shares))


def log_normalizer(
    top_scores: np.ndarray,
    top_rows: np.ndarray,
    sample_scores: np.ndarray,
    sample_rows: np.ndarray,
    n_items: int,
) -> float:
    """Estimated ``log Z``, ``Z = Σ_i exp(s_i)`` over all ``n_items`` rows, for one query.

    ``Z`` = the found top rows' terms, exactly, plus the rest estimated from a uniform
    sample without those rows, scaled to the rows not found:
    ``(n − |top|) / |sample \\ top| · Σ_{sample \\ top} exp(s)``. With the whole table
    as the sample it is exact. Excluding the top rows from the sample keeps one
    large term from being multiplied by ``n / |sample|``.
    """
    found = np.asarray(top_rows) >= 0
    top = np.asarray(top_scores, np.float64)[found]
    rest = ~np.isin(sample_rows, np.asarray(top_rows)[found])
    tail = np.asarray(sample_scores, np.float64)[rest]
    parts = [_logsumexp(top)] if len(top) else []
    others = n_items - len(top)
    if len(tail) and others > 0:
        parts.append(_logsumexp(tail) + np.log(others / len(tail)))
    return float(_logsumexp(np.asarray(parts)))


def _logsumexp(values: np.ndarray) -> float:
    peak = float(np.max(values))
    return peak + float(np.log(np.sum(np.exp(values - peak))))
