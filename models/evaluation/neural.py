"""Train the models package on the training period and wrap its exports as variants.

Training goes through the ``TrainModels`` the caller supplies; ``rtp evaluate``'s
is ``rtp train`` (backfill → Feast point-in-time features → retrieval + ranker →
export), fed a file holding only the training-period events
(``write_training_events``). The variants then use what the export wrote, as the
pipeline and the service do: the item-embedding table
(``beam_pipelines.embedding_source``), the retrieval SavedModel's
``query_embedding`` signature and the ranker's ``serving_default``. TensorFlow is
imported here only.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from beam_pipelines.embedding_source import newest_table
from beam_pipelines.embeddings import TableEmbeddings
from models.evaluation.data import ReplayLog
from models.evaluation.neural_variants import (
    Full,
    StreamingQueries,
    TwoTowerStatic,
    TwoTowerStreaming,
)

LOG = logging.getLogger(__name__)
ENGAGEMENT = "engagement_probability"


@dataclasses.dataclass
class Built:
    variants: list[Any]
    embeddings: TableEmbeddings
    notes: list[str]


def write_training_events(log: ReplayLog, fmt: str, path: pathlib.Path) -> pathlib.Path:
    """The training period alone, in the input's format (times as in the input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    train = log.source[: log.n_train]
    if fmt == "movielens":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("user", "item", "rating", "timestamp"))
            for e in train:
                rating = (e.context or {}).get("rating")
                writer.writerow((e.user_id, e.item_id, rating, e.timestamp_ms // 1000))
    else:
        with open(path, "wb") as handle:
            handle.writelines(e.to_json() + b"\n" for e in train)
    return path


TrainModels = Callable[
    [ReplayLog, str, str, pathlib.Path | None, pathlib.Path, int | None],
    tuple[pathlib.Path, dict[str, Any]],
]
"""Trains the models on a log's training period; called as ``(log, format, reward
preset or YAML, items file or None, work dir, epochs or None for the default)``,
returns the model base (below the work dir) and the ``metrics.json`` training wrote."""


class SavedModelRetrieval:
    """``Retrieval`` over an exported version: table vectors + the query signature."""

    def __init__(self, base: pathlib.Path, table: TableEmbeddings):
        import tensorflow as tf

        from models.export import QUERY_EMBEDDING, QUERY_SIGNATURE, RETRIEVAL

        self._tf = tf
        self.table = table
        loaded = tf.saved_model.load(str(base / RETRIEVAL / table.version))
        self._loaded = loaded  # keep the object alive: the signature refers to it
        self._fn = loaded.signatures[QUERY_SIGNATURE]
        self._output = QUERY_EMBEDDING

    def item_vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(item_ids), self.table.dim), dtype=np.float64)
        for row, item in enumerate(item_ids):
            vec = self.table.get(item)
            if vec is not None:
                out[row] = vec
        return out

    def query_vectors(self, user_features: list[dict[str, Any]]) -> np.ndarray:
        from models.inputs import user_inputs

        inputs = user_inputs(user_features, self.table.dim)
        tensors = {k: self._tf.constant(v) for k, v in inputs.items()}
        return self._fn(**tensors)[self._output].numpy()


class SavedModelRanker:
    """``Ranker`` over an exported version: its ``engagement_probability`` output."""

    def __init__(self, base: pathlib.Path, table: TableEmbeddings):
        import tensorflow as tf

        from models.export import RANKER

        self._tf = tf
        loaded = tf.saved_model.load(str(base / RANKER / table.version))
        self._loaded = loaded
        self._fn = loaded.signatures["serving_default"]
        specs = self._fn.structured_input_signature[1]
        self._dtypes = {name: spec.dtype.as_numpy_dtype for name, spec in specs.items()}
        self.input_names = tuple(sorted(self._dtypes))

    def score(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {
            name: self._tf.constant(np.asarray(inputs[name], dtype=dtype))
            for name, dtype in self._dtypes.items()
        }
        return self._fn(**tensors)[ENGAGEMENT].numpy()


def build(
    log: ReplayLog,
    args: argparse.Namespace,
    names: list[str],
    show_progress: bool,
    train_models: TrainModels | None = None,
) -> Built:
    """Train on the training period (unless ``--model-base`` names models trained
    before), load the export, return the requested variants."""
    reward = args.reward or ("movielens" if args.fmt == "movielens" else "short_video")
    items = args.items
    if args.model_base is not None:
        base = args.model_base
        metrics = json.loads((base / "metrics.json").read_text())
        if metrics.get("events") != log.n_train:
            raise ValueError(
                f"--model-base {base} was trained on {metrics.get('events')} events, "
                f"not on this training period ({log.n_train})"
            )
    elif train_models is None:
        raise ValueError("the two-tower variants need --model-base or a trainer (rtp evaluate)")
    else:
        base, metrics = train_models(log, args.fmt, reward, items, args.out / "work", args.epochs)
    table = newest_table(base)
    if table is None:
        raise RuntimeError(f"training wrote no loadable item-embedding table under {base}")
    notes = [
        f"models: version {table.version} trained by models.train on the {log.n_train} "
        "training-period events only (its own time split inside them for validation); "
        f"its validation: {json.dumps(_brief(metrics))}",
    ]
    retrieval = SavedModelRetrieval(base, table)
    queries = StreamingQueries(retrieval, show_progress)
    variants: list[Any] = []
    if "two_tower_static" in names:
        variants.append(TwoTowerStatic(retrieval))
    if "two_tower_streaming" in names:
        variants.append(TwoTowerStreaming(retrieval, queries))
    if "two_tower_full" in names:
        weight = args.full_retrieval_weight or 0.0
        if weight < 0:  # -1: one over the trained retrieval temperature
            weight = 1.0 / float(metrics["config"]["temperature"])
        ranker = SavedModelRanker(base, table)
        variants.append(
            Full(
                retrieval,
                ranker,
                queries=queries,
                show_progress=show_progress,
                retrieval_weight=weight,
            )
        )
        notes.append(f"two_tower_full: candidates ordered by {_full_order(weight)}")
    return Built(variants, table, notes)


def _full_order(weight: float) -> str:
    if weight == 0:
        return "the ranker's engagement probability alone (the service's order)"
    return f"log engagement probability + {weight:g} x retrieval score"


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    retrieval = metrics.get("retrieval", {})
    ranker = metrics.get("ranker", {})
    return {
        "recall@10": retrieval.get("recall@10"),
        "popularity_recall@10": retrieval.get("popularity_baseline", {}).get("recall@10"),
        "ranker_auc": ranker.get("auc"),
        "timings_s": metrics.get("timings_s"),
    }
