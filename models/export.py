"""Export for TF Serving: SavedModels, warm-up requests, the item table, models.config.

Layout under ``model_base`` (``version`` an integer, the same for all three)::

    retrieval/<version>/        SavedModel: query tower + BruteForce top-K over the table
    ranker/<version>/           SavedModel: the DCN ranker
    item_embeddings/<version>/  item_embeddings.parquet (item_id, embedding, version),
                                popular.json (training engagements per item: the
                                service's popular list for a cold user on an empty store)
    models.config               TF Serving model_config_list naming both models

Each directory is written under a hidden temporary name and renamed into place
(TF Serving and ``embedding_source`` only look at integer names), the item table
last; then a ``_COMPLETE`` marker goes into each of the three version
directories. ``models.registry`` only loads versions with all three markers.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models.inputs import RANKER_INPUTS, input_specs
from models.ranker import EXPECTED_REWARD, LOGIT, RankerModel
from models.sequential_export import keras_metadata_notes_dropped
from models.sequential_export import save as save_sequential
from models.towers import QUERY_INPUTS, QueryTower

RETRIEVAL, RANKER, ITEM_EMBEDDINGS = "retrieval", "ranker", "item_embeddings"
SEQUENTIAL = "sequential"  # models.sequential_export: the same version
MODEL_NAMES = (RETRIEVAL, RANKER, SEQUENTIAL)  # what TF Serving serves (models.config)
TABLE_FILE = "item_embeddings.parquet"
POPULAR_FILE = "popular.json"
COMPLETE = "_COMPLETE"
MODELS_CONFIG = "models.config"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
SCORES, ITEM_IDS, QUERY_EMBEDDING = "scores", "item_ids", "query_embedding"
ITEM_ROWS = "item_rows"
ENGAGEMENT_PROBABILITY = "engagement_probability"
QUERY_SIGNATURE = "query_embedding"
ROWS_SIGNATURE = "candidate_rows"


def tensor_specs(names: tuple[str, ...], dim: int) -> dict[str, tf.TensorSpec]:
    return {
        name: tf.TensorSpec(shape, tf.as_dtype(dtype), name=name)
        for name, (dtype, shape) in input_specs(names, dim).items()
    }


class RetrievalModule(tf.Module):
    """Query tower + BruteForce index; ``serving_default`` answers top-K for user states.

    ``candidate_rows`` answers the same top-K as rows of the item table (the order of
    ``item_ids``, as ``item_embeddings/<version>`` stores it) instead of id strings:
    gathering, sending and decoding 500 strings cost a service more than the
    top-K itself, and it needs the rows anyway. Same scores, bit for bit (tested).
    """

    def __init__(
        self, query_tower: QueryTower, table: np.ndarray, item_ids: np.ndarray, k: int, version: int
    ):
        super().__init__()
        self.query_tower = query_tower
        self.k = min(k, len(item_ids))
        self.index = tfrs.layers.factorized_top_k.BruteForce(k=self.k)
        self.index.index(tf.constant(table, tf.float32), tf.constant(item_ids.astype(str)))
        self.table = tf.Variable(tf.constant(table, tf.float32), trainable=False, name="table")
        self.model_version = tf.Variable(str(version), trainable=False, name="model_version")
        specs = tensor_specs(QUERY_INPUTS, table.shape[1])
        self.serve = tf.function(self._serve, input_signature=[specs])
        self.embed = tf.function(self._embed, input_signature=[specs])
        self.rows = tf.function(self._rows, input_signature=[specs])

    def _serve(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        scores, ids = self.index(self.query_tower(inputs))
        return {SCORES: scores, ITEM_IDS: ids}

    def _embed(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {QUERY_EMBEDDING: self.query_tower(inputs)}

    def _rows(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        # What BruteForce computes (dot products, then top_k) over our own copy of the
        # table, through public ops only, without its final gather of identifiers.
        scores = tf.matmul(self.query_tower(inputs), self.table, transpose_b=True)
        values, rows = tf.math.top_k(scores, k=self.k)
        return {SCORES: values, ITEM_ROWS: rows}

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        return {
            "serving_default": self.serve.get_concrete_function(),
            QUERY_SIGNATURE: self.embed.get_concrete_function(),
            ROWS_SIGNATURE: self.rows.get_concrete_function(),
        }


class RankerModule(tf.Module):
    """``serving_default``: engagement probability and expected reward per row."""

    def __init__(self, ranker: RankerModel, dim: int, version: int):
        super().__init__()
        self.ranker = ranker
        self.model_version = tf.Variable(str(version), trainable=False, name="model_version")
        self.serve = tf.function(self._serve, input_signature=[tensor_specs(RANKER_INPUTS, dim)])

    def _serve(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = self.ranker(inputs)
        return {
            ENGAGEMENT_PROBABILITY: tf.sigmoid(out[LOGIT]),
            EXPECTED_REWARD: out[EXPECTED_REWARD],
        }

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        return {"serving_default": self.serve.get_concrete_function()}


def next_version(model_base: str | os.PathLike[str]) -> int:
    """Unix seconds now, or one more than the largest version already there."""
    base = pathlib.Path(model_base)
    existing = [
        int(p.name)
        for name in (*MODEL_NAMES, ITEM_EMBEDDINGS)
        if (base / name).is_dir()
        for p in (base / name).iterdir()
        if p.name.isdigit()
    ]
    return max([int(time.time()), *(v + 1 for v in existing)])


def _staging(base: pathlib.Path, name: str, version: int) -> pathlib.Path:
    staging = base / name / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    return staging


def _publish(staging: pathlib.Path, version: int) -> pathlib.Path:
    final = staging.parent / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are never overwritten")
    os.replace(staging, final)
    return final


def write_warmup(
    version_dir: pathlib.Path, model_name: str, batches: list[Mapping[str, np.ndarray]]
) -> pathlib.Path:
    """TFRecord of PredictionLog protos TF Serving replays when it loads the model."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
            )
            for name, value in batch.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def _save(
    module: tf.Module, staging: pathlib.Path, name: str, warmup: list[Mapping[str, np.ndarray]]
) -> None:
    with keras_metadata_notes_dropped():
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
    write_warmup(staging, name, warmup)


def write_item_table(
    staging: pathlib.Path, item_ids: np.ndarray, table: np.ndarray, version: int
) -> pathlib.Path:
    staging.mkdir(parents=True, exist_ok=True)
    arrow = pa.table(
        {
            "item_id": pa.array([str(i) for i in item_ids], pa.string()),
            "embedding": pa.array(list(table.astype(np.float32)), pa.list_(pa.float32())),
            "version": pa.array([str(version)] * len(item_ids), pa.string()),
        }
    )
    path = staging / TABLE_FILE
    pq.write_table(arrow, path)
    return path


def training_popularity(
    item_ids: np.ndarray, item_rows: np.ndarray, engaged: np.ndarray
) -> dict[str, float]:
    """Engaged training examples per item id (items with none left out)."""
    counts = np.bincount(np.asarray(item_rows)[np.asarray(engaged, bool)], minlength=len(item_ids))
    return {str(item_ids[i]): float(counts[i]) for i in np.flatnonzero(counts)}


def write_popular(staging: pathlib.Path, popular: Mapping[str, float], version: int) -> None:
    """``popular.json``: ``items`` as ``[item_id, count]``, most engaged first."""
    items = sorted(((str(i), float(c)) for i, c in popular.items() if c > 0), key=_by_count)
    document = {"version": str(version), "source": "training engagements", "items": items}
    (staging / POPULAR_FILE).write_text(json.dumps(document) + "\n")


def _by_count(item: tuple[str, float]) -> tuple[float, str]:
    return -item[1], item[0]


def models_config_text(
    model_base: str | os.PathLike[str],
    serving_base: str | None = None,
    names: tuple[str, ...] = MODEL_NAMES,
) -> str:
    """TF Serving ``model_config_list``; ``serving_base`` replaces the base path as the
    server sees it (e.g. ``/models`` inside a container). Two versions stay loaded so
    a client pinned to the previous complete version keeps working during a rollout."""
    root = serving_base or str(pathlib.Path(model_base).resolve())
    configs = "".join(
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{root.rstrip("/")}/{name}"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 2 } }\n"
        "  }\n"
        for name in names
    )
    return "model_config_list {\n" + configs + "}\n"


def export_all(
    model_base: str | os.PathLike[str],
    *,
    query_tower: QueryTower,
    ranker: RankerModel,
    table: np.ndarray,
    item_ids: np.ndarray,
    retrieval_warmup: list[Mapping[str, np.ndarray]],
    ranker_warmup: list[Mapping[str, np.ndarray]],
    info: Mapping | None = None,
    k: int = 100,
    version: int | None = None,
    sequential: Callable[[int], tf.Module] | None = None,
    popular: Mapping[str, float] | None = None,
) -> int:
    """Write one complete version (see the module docstring); returns the version.

    ``popular``: engagement counts per item id in the training data
    (``training_popularity``); None writes an empty list."""
    base = pathlib.Path(model_base)
    base.mkdir(parents=True, exist_ok=True)
    version = version if version is not None else next_version(base)
    dim = int(table.shape[1])
    staging = _staging(base, RETRIEVAL, version)
    _save(
        RetrievalModule(query_tower, table, item_ids, k, version),
        staging,
        RETRIEVAL,
        retrieval_warmup,
    )
    published = [_publish(staging, version)]
    staging = _staging(base, RANKER, version)
    _save(RankerModule(ranker, dim, version), staging, RANKER, ranker_warmup)
    published.append(_publish(staging, version))
    if sequential is not None:  # models.sequential_export.SequentialModule of this version
        module = sequential(version)
        staging = _staging(base, SEQUENTIAL, version)
        save_sequential(module, staging)
        published.append(_publish(staging, version))
    staging = _staging(base, ITEM_EMBEDDINGS, version)
    write_item_table(staging, item_ids, table, version)
    write_popular(staging, popular or {}, version)
    (staging / "model_info.json").write_text(json.dumps(dict(info or {}), indent=2) + "\n")
    published.append(_publish(staging, version))
    config = base / f".{MODELS_CONFIG}.tmp-{os.getpid()}"
    names = MODEL_NAMES if sequential is not None else (RETRIEVAL, RANKER)
    config.write_text(models_config_text(base, names=names))
    os.replace(config, base / MODELS_CONFIG)
    marker = json.dumps({"version": version, "completed_at_s": int(time.time())}) + "\n"
    for directory in published:
        (directory / COMPLETE).write_text(marker)
    return version
