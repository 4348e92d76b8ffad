"""Training: offline history → point-in-time dataset → retrieval + ranker → export.

``rtp train`` (``rtp.jobs.train``) runs the backfill for the history first when no
``--history`` is given; this module takes the history directory as input and runs
no job itself.

Events are split in time: the first 80 % by ``(timestamp, user, tie hash)`` train both
models, the last 20 % validate them (recall@10/50/100 over the full catalogue,
ranker AUC and RMSE), written to ``MODEL_BASE/metrics.json``. Features of the
validation events still come from the full history, i.e. the user state as the
streaming pipeline would have had it just before each event.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from feature_repo.features import ITEM_BETA_ALPHA, ITEM_BETA_BETA
from models import train_args
from models.candidate_training import EventArrays
from models.catalog import Catalog, build_catalog
from models.config import TrainConfig
from models.content_items import catalog_vectors
from models.dataset import label_examples, point_in_time_features
from models.export import export_all, training_popularity
from models.item_features import ItemVocab, encode_items
from models.metrics import auc, recall_at, rmse, seen_before, target_ranks
from models.pooling import half_lives_s
from models.ranker import RankerModel, predict, train_ranker
from models.retrieval import TwoTowerModel, positive_probability, query_embeddings, train_retrieval
from models.sequential import SequentialConfig
from models.sequential_export import MIN_K, SequentialModule
from models.stack_training import TrainedStack, measure_orders, train_stack
from models.towers import ItemTower, QueryTower
from models.training_data import ExampleArrays, before, build_arrays
from models.training_log import TrainingLog, default_reward, load_events, time_split

WORK_DIR = ".train_work"

HistoryJob = Callable[[str, str, str, pathlib.Path, int], str]
"""Writes the offline feature history of an event log; returns its directory.
Called as ``(events, format, reward, work dir, expected)``, ``expected`` being the
events the training loader accepted. The application layer supplies the backfill."""


def _stage(message: str, started: float) -> None:
    print(f"[rtp train] {time.perf_counter() - started:7.1f}s  {message}", flush=True)


@dataclasses.dataclass
class Prepared:
    log: TrainingLog
    catalog: Catalog
    train: ExampleArrays
    valid: ExampleArrays
    boundary: tuple[int, str, str] | None  # first validation event; None: no validation


def prepare(
    args: argparse.Namespace,
    config: TrainConfig,
    work: pathlib.Path,
    started: float,
    history: HistoryJob | None = None,
) -> Prepared:
    """``history`` writes the offline history when ``args.history`` names none."""
    reward = args.reward or default_reward(args.format)
    log = load_events(args.events, args.format, reward)
    _stage(f"read {len(log.frame)} events (skipped {log.rejected or 'none'})", started)
    offline = args.history
    if not offline:
        if history is None:
            raise ValueError("no --history given and no job to write it (rtp train runs one)")
        offline = history(args.events, args.format, reward, work, len(log.frame))
    _stage(f"history at {offline}", started)
    examples = label_examples(log.frame, log.rewards, config.outcome_window_ms)
    frame = point_in_time_features(examples, offline, work / "feast", engine=args.join_engine)
    _stage(f"{len(frame)} examples with point-in-time features", started)
    split = time_split(len(log.frame), config.train_fraction)
    boundary = None
    if split < len(log.frame):
        row = log.frame.iloc[split]
        boundary = (int(row["timestamp_ms"]), str(row["user_id"]), str(row["item_id"]))
    catalog = build_catalog(log.frame["item_id"], args.items)
    arrays = build_arrays(frame, catalog, config.dim, config.max_history, half_lives_s())
    is_train = before(frame, boundary) if boundary else np.ones(len(frame), dtype=bool)
    return Prepared(log, catalog, arrays.subset(is_train), arrays.subset(~is_train), boundary)


def fit_retrieval(data: Prepared, config: TrainConfig) -> TwoTowerModel:
    positives = data.train.subset(data.train.engaged)
    if len(positives) < 2:
        raise ValueError("fewer than 2 engaged training examples: nothing to train retrieval on")
    vocab = ItemVocab.fit(
        data.catalog.item_ids[positives.item_rows],
        data.catalog,
        title_buckets=config.title_buckets,
    )
    features = encode_items(data.catalog, vocab)
    model = TwoTowerModel(
        ItemTower(
            len(vocab.item_ids),
            len(vocab.genres),
            vocab.title_buckets,
            config.dim,
            config.tower_hidden,
        ),
        QueryTower(config.dim, config.tower_hidden),
        features,
        positive_probability(positives.item_rows, len(data.catalog)),
        config.temperature,
    )
    train_retrieval(
        model,
        positives.retrieval_arrays(),
        epochs=config.epochs,
        batch_size=min(config.retrieval_batch, len(positives)),
        learning_rate=config.retrieval_lr,
        seed=config.seed,
    )
    return model


def evaluate_retrieval(data: Prepared, model: TwoTowerModel, table: np.ndarray) -> dict[str, Any]:
    valid = data.valid.subset(data.valid.engaged)
    frame = data.log.frame
    exclude = seen_before(
        frame["user_id"].to_numpy(),
        data.catalog.indices(frame["item_id"]),
        frame["timestamp_ms"].to_numpy(),
        valid.user_ids,
        valid.timestamps_ms,
    )
    queries = query_embeddings(model.query_tower, valid.query_inputs(table))
    ranks = target_ranks(lambda part: queries[part] @ table.T, valid.item_rows, exclude)
    popularity = np.bincount(
        data.train.subset(data.train.engaged).item_rows, minlength=len(data.catalog)
    ).astype(np.float64)
    pop_ranks = target_ranks(
        lambda part: np.broadcast_to(popularity, (part.stop - part.start, len(popularity))),
        valid.item_rows,
        exclude,
    )
    return {
        "examples": len(valid),
        "catalogue_items": len(data.catalog),
        **recall_at(ranks),
        "popularity_baseline": recall_at(pop_ranks),
    }


def fit_ranker(data: Prepared, table: np.ndarray, config: TrainConfig) -> RankerModel:
    model = RankerModel(config.cross_layers, reward_weight=config.reward_weight)
    arrays = data.train.ranker_arrays(table)
    model.adapt(data.train.ranker_inputs(table))
    train_ranker(
        model,
        arrays,
        epochs=config.epochs,
        batch_size=config.ranker_batch,
        learning_rate=config.ranker_lr,
        seed=config.seed,
    )
    return model


def evaluate_ranker(data: Prepared, model: RankerModel, table: np.ndarray) -> dict[str, Any]:
    valid = data.valid
    probability, reward = predict(model, valid.ranker_inputs(table))
    alpha, beta = valid.item[ITEM_BETA_ALPHA], valid.item[ITEM_BETA_BETA]
    beta_mean = np.divide(alpha, alpha + beta, out=np.zeros_like(alpha), where=alpha + beta > 0)
    return {
        "examples": len(valid),
        "positive_rate": float(valid.engaged.mean()) if len(valid) else float("nan"),
        "auc": auc(valid.engaged, probability),
        "rmse": rmse(valid.reward, reward),
        "baselines": {
            "item_beta_mean_auc": auc(valid.engaged, beta_mean),
            "train_mean_reward_rmse": rmse(
                valid.reward, np.full(len(valid), data.train.reward.mean())
            ),
        },
    }


def _warmup(inputs: dict[str, np.ndarray], sizes: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(inputs.values())))
    if n == 0:
        return []
    return [{k: v[np.arange(size) % n] for k, v in inputs.items()} for size in sizes]


@dataclasses.dataclass
class Trained:
    data: Prepared
    retrieval: TwoTowerModel
    ranker: RankerModel
    table: np.ndarray  # [catalogue, dim] item embeddings, rows as data.catalog
    metrics: dict[str, Any]
    sequential: TrainedStack | None = None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        seed=args.seed,
        epochs=args.epochs,
        train_fraction=args.train_fraction,
        serving_k=args.serving_k,
        ann_min_items=args.ann_min_items,
    )


def fit(
    args: argparse.Namespace,
    config: TrainConfig,
    started: float,
    history: HistoryJob | None = None,
) -> Trained:
    """Data, both models and their validation metrics (nothing exported).
    ``history``: as for ``prepare``."""
    tf.keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    data = prepare(args, config, pathlib.Path(args.out) / WORK_DIR, started, history)
    _stage(
        f"train {len(data.train)} / validation {len(data.valid)} examples, "
        f"{len(data.catalog)} items",
        started,
    )
    timings = {"data_s": time.perf_counter() - started}
    retrieval = fit_retrieval(data, config)
    table = retrieval.catalog_embeddings()
    timings["retrieval_s"] = time.perf_counter() - started - sum(timings.values())
    retrieval_metrics = evaluate_retrieval(data, retrieval, table)
    _stage(_metrics_line("retrieval", retrieval_metrics, len(data.valid)), started)
    ranker = fit_ranker(data, table, config)
    timings["ranker_s"] = time.perf_counter() - started - sum(timings.values())
    ranker_metrics = evaluate_ranker(data, ranker, table)
    _stage(_metrics_line("ranker", ranker_metrics, len(data.valid)), started)
    sequential = None
    if args.sequential_epochs > 0:
        sequential = fit_stack(data, args, config)
        timings["sequential_s"] = sequential.seconds
        _stage(
            f"sequential retriever and candidate ranker trained, loss "
            f"{sequential.sequential.losses[-1]:.3f}; candidate order "
            f"{json.dumps(sequential.measured)}",
            started,
        )
    metrics = {
        "events": len(data.log.frame),
        "split_boundary": list(data.boundary) if data.boundary else None,
        "train_examples": len(data.train),
        "validation_examples": len(data.valid),
        "retrieval": retrieval_metrics,
        "ranker": ranker_metrics,
        "config": config.model_dump(),
        "half_lives_s": list(half_lives_s()),
        "timings_s": timings,
    }
    if sequential is not None:
        metrics["sequential"] = {
            "losses": sequential.sequential.losses,
            "config": vars(sequential.sequential.config),
            "unknown_offset": sequential.unknown_offset,
        }
        metrics["candidate_ranker"] = {
            **sequential.measured,
            "held_out_users": sequential.ranker_users,
            "training_labels": sequential.ranker_examples,
        }
    return Trained(data, retrieval, ranker, table, metrics, sequential)


def log_arrays(data: Prepared, fmt: str) -> EventArrays:
    """The whole log (training and validation events) as the stack's event columns:
    every event is history; the evaluation protocol's interactions (every rating
    for MovieLens, engaged events otherwise) are targets."""
    frame = data.log.frame
    return EventArrays(
        frame["user_id"].astype("category").cat.codes.to_numpy().astype(np.int64),
        data.catalog.indices(frame["item_id"]),
        frame["timestamp_ms"].to_numpy(dtype=np.int64),
        frame["reward"].to_numpy(dtype=np.float32),
        (
            np.ones(len(frame), dtype=bool)
            if fmt == "movielens"
            else frame["engaged"].to_numpy(dtype=bool)
        ),
        len(data.catalog),
    )


def fit_stack(data: Prepared, args: argparse.Namespace, config: TrainConfig) -> TrainedStack:
    """The sequential retriever and the candidate ranker on the training split; the
    order the service should use measured on the validation split (``measure_orders``)."""
    events = log_arrays(data, args.format)
    n_train = time_split(len(data.log.frame), config.train_fraction)
    seq_config = SequentialConfig(
        max_len=config.max_history,
        epochs=args.sequential_epochs,
        seed=config.seed,
        ignore_zero_reward=bool(data.log.rewards.exposure_event_types),
    )
    pretrained = catalog_vectors(data.catalog) if args.content else None
    stack = train_stack(data.catalog, events, n_train, seq_config, pretrained=pretrained)
    stack.measured = measure_orders(stack, events, n_train)
    return stack


def export_trained(trained: Trained, model_base: str | pathlib.Path, config: TrainConfig) -> int:
    data, table = trained.data, trained.table
    sample = data.valid if len(data.valid) else data.train
    return export_all(
        model_base,
        query_tower=trained.retrieval.query_tower,
        ranker=trained.ranker,
        table=table,
        item_ids=data.catalog.item_ids,
        info=_json_safe(trained.metrics),
        k=config.serving_k,
        retrieval_warmup=_warmup(sample.query_inputs(table), (1, 8)),
        ranker_warmup=_warmup(sample.ranker_inputs(table), (100, 500, 1000)),
        sequential=_sequential_module(trained, config),
        popular=training_popularity(
            data.catalog.item_ids, data.train.item_rows, data.train.engaged
        ),
    )


def _sequential_module(trained: Trained, config: TrainConfig) -> Any:
    if trained.sequential is None:
        return None
    stack = trained.sequential
    return lambda version: SequentialModule(
        stack.sequential.model,
        trained.data.catalog.item_ids,
        max(config.serving_k, MIN_K),
        version,
        ranker=stack.ranker,
        item_bias=stack.sequential.item_bias(),
        ann_min_items=config.ann_min_items,
    )


def train(args: argparse.Namespace, history: HistoryJob | None = None) -> dict[str, Any]:
    """The whole ``rtp train`` run after parsing; returns what it writes to
    ``metrics.json``. ``history``: as for ``prepare``."""
    started = time.perf_counter()
    config = config_from_args(args)
    trained = fit(args, config, started, history)
    export_started = time.perf_counter()
    version = export_trained(trained, args.out, config)
    timings = {**trained.metrics["timings_s"], "export_s": time.perf_counter() - export_started}
    metrics = _json_safe(
        {
            "version": version,
            **trained.metrics,
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
        }
    )
    path = pathlib.Path(args.out) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    _stage(f"exported version {version} to {args.out}", started)
    return metrics


def _metrics_line(model: str, metrics: dict[str, Any], validation_examples: int) -> str:
    if not validation_examples:
        return f"{model} trained (no validation events: --train-fraction 1)"
    return f"{model} {json.dumps(_json_safe(metrics))}"


def _json_safe(value: Any) -> Any:
    """NaN → None (strict JSON), recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def parser() -> argparse.ArgumentParser:
    """``models.train_args.parser`` with the sequential retriever's default epochs,
    which only the TensorFlow side knows (``SequentialConfig``)."""
    p = train_args.parser()
    p.set_defaults(sequential_epochs=SequentialConfig().epochs)
    return p
