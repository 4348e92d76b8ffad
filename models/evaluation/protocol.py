"""The replay of EVALUATION.md: score before the event, then apply it.

The training period is applied first; each variant is fitted on that world.
Then every test event is replayed in protocol order. An interaction with an item
the user has not interacted with before is a target: every variant ranks the
full catalogue minus the user's seen items, and its rank is recorded. Repeat
interactions (possible in engagement logs, never in MovieLens) cannot be
targets, since the item is excluded; they are counted, not scored. Every event,
target or not, then updates the world.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from models.evaluation.metrics import target_rank
from models.evaluation.progress import progress
from models.evaluation.variants import Variant
from models.evaluation.world import World


@dataclasses.dataclass
class ReplayResult:
    """Ranks per variant over the targets, with each target's event position and user."""

    positions: np.ndarray
    users: np.ndarray
    warm: np.ndarray
    ranks: dict[str, np.ndarray]
    repeats_skipped: int
    fit_seconds: dict[str, float]
    score_seconds: dict[str, float]


class Observer(Protocol):
    """Asks for each variant's top-``k`` at chosen events (e.g. time to adapt)."""

    k: int

    def wants(self, k: int, world: World) -> bool:
        """Whether to record the top items before event ``k`` is applied."""

    def record(self, k: int, variant: str, top: np.ndarray) -> None:
        """Top-``self.k`` items (best first, seen items excluded) of ``variant``."""


def apply_training(world: World, show_progress: bool = True) -> None:
    """Apply the whole training period to a fresh world."""
    for k in progress(range(world.log.n_train), "train state", show_progress):
        world.apply(k)


def replay(
    world: World,
    variants: Sequence[Variant],
    show_progress: bool = True,
    observer: Observer | None = None,
) -> ReplayResult:
    """Fit every variant on the training world, then replay the test stream."""
    log = world.log
    if world.applied != log.n_train:
        raise ValueError("apply_training first: the world must hold exactly the training period")
    fit_s = {}
    for variant in variants:
        start = time.perf_counter()
        variant.fit(world)
        fit_s[variant.name] = time.perf_counter() - start
    names = [v.name for v in variants]
    ranks: dict[str, list[int]] = {n: [] for n in names}
    score_s = dict.fromkeys(names, 0.0)
    positions, users, warm, repeats = [], [], [], 0
    for k in progress(range(log.n_train, len(log.events)), "replay", show_progress):
        user, item = int(log.user_idx[k]), int(log.item_idx[k])
        repeat = bool(log.interaction[k]) and item in world.seen[user]
        repeats += repeat
        is_target = bool(log.interaction[k]) and not repeat
        probe = observer is not None and observer.wants(k, world)
        if is_target or probe:
            excluded = world.seen_items(user)
            for variant in variants:
                start = time.perf_counter()
                scores = variant.scores(world, user)
                if is_target:
                    ranks[variant.name].append(target_rank(scores, item, excluded))
                if probe and observer is not None:
                    observer.record(k, variant.name, top_items(scores, excluded, observer.k))
                score_s[variant.name] += time.perf_counter() - start
            if is_target:
                positions.append(k)
                users.append(user)
                warm.append(world.is_warm(user))
        world.apply(k)
    return ReplayResult(
        positions=np.array(positions, dtype=np.int64),
        users=np.array(users, dtype=np.int64),
        warm=np.array(warm, dtype=bool),
        ranks={n: np.array(r, dtype=np.int64) for n, r in ranks.items()},
        repeats_skipped=repeats,
        fit_seconds=fit_s,
        score_seconds=score_s,
    )


def top_items(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best-scoring items outside ``excluded``, best first."""
    masked = np.where(np.isnan(scores), -np.inf, scores.astype(np.float64, copy=True))
    masked[excluded] = -np.inf
    k = min(k, masked.size)
    top = np.argpartition(-masked, k - 1)[:k]
    return top[np.argsort(-masked[top], kind="stable")]
