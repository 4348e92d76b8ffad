"""A Beta prior for a new item's engagement, lent by its content neighbours.

An item uploaded after the served model version (``serving.new_items``) has no
engagement posterior until people have seen it, so exploration could not weigh it
as it weighs a catalogue item. Items about the same thing tend to engage alike:
its ``k`` nearest catalogue items by content cosine lend it a prior mean m, the
mean of their posterior means α/(α+β) weighted by their cosines clipped at 0
(with no neighbour of positive cosine, the pipeline's prior mean), worth
``strength`` pseudo-observations: α0 = s·m, β0 = s·(1 − m). The item's own
engagements, once the streaming job has counted any (``item_realtime`` keeps
stats for any item id), are added on top, so its own evidence outweighs the
neighbours' after about ``strength`` exposures.

The neighbours are found once per new item in the background refresh
(``nearest_neighbours``); a request only reads a few candidates' neighbours'
posteriors from the catalogue's item snapshot (``posteriors``), brought forward to
the request's time like exploration's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from beam_pipelines.state.config import StateConfig
from serving.features import ItemSnapshot

CHUNK_CELLS = 1 << 22
"""Cosines per block of the neighbour product (16 MB of float32): a refresh that
meets 2000 new items and a large catalogue never holds their whole product."""


@dataclasses.dataclass(frozen=True)
class NeighbourPrior:
    """What the prior of each new item needs, row ``i`` for the snapshot's item
    ``i``: the catalogue rows of its neighbours, best first, and their cosines
    clipped at 0 (both ``[n, k]``; weight 0: not a usable neighbour), and the
    item's own ``item_realtime`` row (``own.known[i]`` False: none yet)."""

    rows: np.ndarray
    weights: np.ndarray
    own: ItemSnapshot

    @classmethod
    def empty(cls, n: int) -> NeighbourPrior:
        """No neighbour and no row for ``n`` items: each gets the pipeline's prior
        mean at ``strength``."""
        return cls(np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32), ItemSnapshot.empty(n))


def nearest_neighbours(
    new: np.ndarray, catalogue: np.ndarray, k: int, chunk_cells: int = CHUNK_CELLS
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``new``, the ``k`` rows of ``catalogue`` with the highest cosine
    (both unit rows), best first (ties: the lower row), and those cosines clipped
    at 0: ``([n, k'] int64, [n, k'] float32)``, k' = min(k, len(catalogue)).

    Blocks of ``new`` rows keep each product under ``chunk_cells`` cosines.
    """
    k = min(k, len(catalogue))
    index = np.zeros((len(new), k), np.int64)
    weight = np.zeros((len(new), k), np.float32)
    if k == 0 or len(new) == 0:
        return index, weight
    step = max(chunk_cells // len(catalogue), 1)
    for start in range(0, len(new), step):
        cosine = new[start : start + step] @ catalogue.T
        top = np.argpartition(-cosine, k - 1, axis=1)[:, :k]
        top_cosine = np.take_along_axis(cosine, top, axis=1)
        order = np.lexsort((top, -top_cosine), axis=1)
        index[start : start + step] = np.take_along_axis(top, order, axis=1)
        weight[start : start + step] = np.maximum(np.take_along_axis(top_cosine, order, axis=1), 0)
    return index, weight


def prior_mean(weights: np.ndarray, means: np.ndarray, default: float) -> np.ndarray:
    """Per row of ``[n, k]`` arrays, the ``weights``-weighted mean of ``means``;
    ``default`` where the weights sum to 0 (no usable neighbour)."""
    total = weights.sum(axis=1, dtype=np.float64)
    weighted = (weights * means).sum(axis=1, dtype=np.float64)
    return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), default)


def neighbour_prior(
    weights: np.ndarray, alpha: np.ndarray, beta: np.ndarray, strength: float, default_mean: float
) -> tuple[np.ndarray, np.ndarray]:
    """(α0, β0) = strength · (m, 1 − m), m the ``prior_mean`` of the neighbours'
    posterior means α/(α+β) (``[n, k]`` arrays, α and β > 0)."""
    m = prior_mean(weights, alpha / (alpha + beta), default_mean)
    return strength * m, strength * (1.0 - m)


def posteriors(
    prior: NeighbourPrior,
    rows: np.ndarray,
    catalogue: ItemSnapshot,
    at_ms: int,
    state: StateConfig,
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(α, β) of the new items ``rows`` at ``at_ms`` (epoch ms): the neighbour prior
    from the catalogue's posteriors now, plus the items' own evidence (their stored
    α, β less the pipeline's prior, decayed as ``ItemSnapshot.beta_now`` decays a
    catalogue item's)."""
    neighbours = prior.rows[rows]
    alpha, beta = catalogue.beta_now(neighbours.ravel(), at_ms, state)
    default = state.beta_prior_alpha / (state.beta_prior_alpha + state.beta_prior_beta)
    alpha0, beta0 = neighbour_prior(
        prior.weights[rows],
        alpha.reshape(neighbours.shape),
        beta.reshape(neighbours.shape),
        strength,
        default,
    )
    own_alpha, own_beta = prior.own.beta_now(rows, at_ms, state)
    return (
        alpha0 + own_alpha - state.beta_prior_alpha,
        beta0 + own_beta - state.beta_prior_beta,
    )
