"""Train the sequential retriever on the training period and wrap it as variants.

TensorFlow is imported here only (``rtp evaluate`` without these variants stays light).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Any

import numpy as np

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from beam_pipelines.rewards import load_reward_config
from models import sequential as sq
from models.candidate_features import blend_scores
from models.catalog import Catalog, build_catalog
from models.content_items import catalog_vectors
from models.evaluation.data import DEFAULT_REWARD, ReplayLog
from models.evaluation.sequence_variants import (
    BlendConfig,
    Full,
    FullRanked,
    SequentialStatic,
    SequentialStreaming,
)
from models.sequence_training import TrainedSequence
from models.stack_training import train_stack


@dataclasses.dataclass
class BuiltSequence:
    variants: list[Any]
    trained: TrainedSequence
    notes: list[str]


def log_catalog(log: ReplayLog, items: pathlib.Path | None) -> Catalog:
    """The catalogue in the log's item order (metadata joined where the file has it)."""
    full = build_catalog(log.items, str(items) if items else None)
    row = {item: i for i, item in enumerate(full.item_ids)}
    order = np.array([row[item] for item in log.items], dtype=np.int64)
    return Catalog(
        full.item_ids[order], full.titles[order], full.genres[order], full.duration_ms[order]
    )


def build(
    log: ReplayLog, args: argparse.Namespace, names: list[str], show_progress: bool
) -> BuiltSequence:
    rewards = load_reward_config(args.reward or DEFAULT_REWARD[args.fmt])
    config = sq.SequentialConfig(
        seed=args.seed, ignore_zero_reward=bool(rewards.exposure_event_types)
    )
    if args.epochs is not None:
        config = dataclasses.replace(config, epochs=args.epochs)
    wants_ranker = "full_ranker" in names
    catalog = log_catalog(log, args.items)
    pretrained = catalog_vectors(catalog) if args.content else None
    stack = train_stack(
        catalog,
        log.arrays(),
        log.n_train,
        config,
        pretrained=pretrained,
        train_ranker=wants_ranker,
    )
    trained = stack.sequential
    streaming = SequentialStreaming(trained, show_progress)
    variants: list[Any] = []
    if "sequential_static" in names:
        variants.append(SequentialStatic(trained))
    if "sequential_streaming" in names:
        variants.append(streaming)
    blend = BlendConfig()
    if "full" in names:
        variants.append(Full(streaming, blend))
    if wants_ranker:
        score = stack.score if stack.ranker is not None else _blend_scorer(blend.weight)
        variants.append(FullRanked(streaming, score, blend))
    held_out = (
        f", {stack.ranker_users} newest training users held out (for the offset of items "
        f"without an id vector{' and the candidate ranker' if wants_ranker else ''}: "
        f"{_offset_note(stack.unknown_offset)})"
        if stack.ranker_users
        else ""
    )
    notes = [
        f"sequential retriever: {config.blocks} causal self-attention blocks, {config.dim}-d, "
        f"last {config.max_len} events, full softmax; {len(trained.losses)} epochs in "
        f"{trained.seconds:.0f} s on the {log.n_train} training-period events{held_out}, "
        f"final loss {trained.losses[-1]:.3f}; items embed from id, hashed title tokens and "
        f"genres{' and all-MiniLM-L6-v2 text vectors' if pretrained is not None else ''}",
        f"full: union of each source's top {blend.candidates} (sequential, co-engagement) "
        f"ordered by co-engagement cosine + {blend.weight:g} x P_sequential(item)",
    ]
    if wants_ranker and stack.ranker is None:
        notes.append("full_ranker: no held-out user had a usable example; ordered by the blend")
    if stack.ranker is not None:
        notes.append(
            f"full_ranker: the same candidates ordered by the candidate ranker (log P(engage) "
            f"+ w E[reward|engage]), trained on {stack.ranker_examples} interactions of the "
            f"held-out users against their own candidates; stack trained in {stack.seconds:.0f} s"
        )
    return BuiltSequence(variants, trained, notes)


def _offset_note(fit: dict) -> str:
    if "offset" not in fit:
        return f"none fit: {fit['reason']}" if "reason" in fit else "none fit"
    return (
        f"{fit['offset']:+g}, calibrated exposure: such items take "
        f"{fit['unknown_share_at_50']:.1%} of the held-out top 50 and "
        f"{fit['unknown_target_share']:.1%} of the {fit['labels']} held-out interactions; "
        f"held-out recall@50 {fit['recall_at_50_without']:.4f} at offset 0, "
        f"{fit['recall_at_50']:.4f} at the fit, best {fit['recall_at_50_best']:.4f}"
    )


def _blend_scorer(weight: float):
    return lambda features: blend_scores(features, weight)
