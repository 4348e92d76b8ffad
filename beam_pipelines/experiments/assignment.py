"""Deterministic assignment of users to experiment variants.

``bucket(salt, user)`` is the first 8 bytes of BLAKE2b over ``salt``, a NUL byte and
the user id (UTF-8), big-endian, modulo ``BUCKETS``: the same in every process, on
every machine and after a restart (Python's ``hash`` is salted per process).

Per layer, a user's layer bucket (salt ``layer:<name>``) picks at most one
experiment: the layer's experiments own consecutive ranges of ``traffic · BUCKETS``
buckets in config order. Within that experiment, a second bucket (the experiment's
salt) picks the variant: variants own consecutive ranges by cumulative weight. The
two hashes are independent, so an experiment's split does not depend on where its
traffic range sits.

An assignment travels in a response and an exposure's ``context`` as two strings,
``experiment`` and ``variant``: the names of each layer's experiment and variant in
layer order, joined by commas (names cannot hold one); one experiment in the common
case. ``parse_context`` reads them back.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from beam_pipelines.experiments.config import ExperimentConfig, ExperimentsConfig

BUCKETS = 10_000
SEPARATOR = ","


def bucket(salt: str, user_id: str) -> int:
    """The user's bucket in ``[0, BUCKETS)`` under ``salt``."""
    digest = hashlib.blake2b(salt.encode() + b"\x00" + user_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def weight_bounds(weights: list[float]) -> list[int]:
    """Upper bucket bound of each weight's range (the last is ``BUCKETS``)."""
    total = sum(weights)
    bounds, cumulative = [], 0.0
    for w in weights:
        cumulative += w
        bounds.append(round(cumulative / total * BUCKETS))
    bounds[-1] = BUCKETS
    return bounds


def variant_shares(experiment: ExperimentConfig) -> dict[str, float]:
    """Share of the experiment's users each variant gets, exactly as assigned (its
    bucket range over ``BUCKETS``): the expectation of a sample-ratio check."""
    bounds = weight_bounds([v.weight for v in experiment.variants])
    lows = [0, *bounds[:-1]]
    return {
        v.name: (high - low) / BUCKETS
        for v, low, high in zip(experiment.variants, lows, bounds, strict=True)
    }


@dataclasses.dataclass(frozen=True)
class Assignment:
    """A user's ``(experiment, variant)`` per layer (none: not in any experiment) and
    the settings those variants change, as sorted ``(key, value)`` items of
    ``config.SETTINGS`` keys (hashable: a cache key for what they change)."""

    pairs: tuple[tuple[str, str], ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def experiment(self) -> str | None:
        return SEPARATOR.join(e for e, _ in self.pairs) if self.pairs else None

    @property
    def variant(self) -> str | None:
        return SEPARATOR.join(v for _, v in self.pairs) if self.pairs else None


NONE = Assignment()


@dataclasses.dataclass(frozen=True)
class _Experiment:
    low: int
    high: int
    name: str
    salt: str
    bounds: tuple[int, ...]
    variants: tuple[str, ...]
    overrides: tuple[Mapping[str, Any], ...]

    def variant_index(self, user_id: str) -> int:
        b = bucket(self.salt, user_id)
        return next(i for i, high in enumerate(self.bounds) if b < high)


class Assigner:
    """Assigns users to variants of an ``ExperimentsConfig``; holds no mutable state,
    so threads and processes may share one."""

    def __init__(self, config: ExperimentsConfig) -> None:
        self.config = config
        self._layers: list[tuple[str, list[_Experiment]]] = []
        for layer, members in config.layers().items():
            ranges, low = [], 0
            for e in members:
                high = min(low + round(e.traffic * BUCKETS), BUCKETS)
                ranges.append(
                    _Experiment(
                        low,
                        high,
                        e.name,
                        e.salt,
                        tuple(weight_bounds([v.weight for v in e.variants])),
                        tuple(v.name for v in e.variants),
                        tuple(v.overrides() for v in e.variants),
                    )
                )
                low = high
            self._layers.append((f"layer:{layer}", ranges))
        # One Assignment per combination of variants, built on first use.
        self._cache: dict[tuple[tuple[str, str], ...], Assignment] = {}

    def assign(self, user_id: str) -> Assignment:
        pairs: list[tuple[str, str]] = []
        overrides: list[Mapping[str, Any]] = []
        for salt, experiments in self._layers:
            b = bucket(salt, user_id)
            for e in experiments:
                if e.low <= b < e.high:
                    i = e.variant_index(user_id)
                    pairs.append((e.name, e.variants[i]))
                    overrides.append(e.overrides[i])
                    break
        if not pairs:
            return NONE
        key = tuple(pairs)
        found = self._cache.get(key)
        if found is None:
            merged = sorted((k, v) for o in overrides for k, v in o.items())  # keys disjoint
            found = self._cache.setdefault(key, Assignment(key, tuple(merged)))
        return found


def parse_context(context: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The ``(experiment, variant)`` pairs an exposure's context carries ([] if none or
    if the two strings do not pair up)."""
    if not context:
        return []
    experiments, variants = context.get("experiment"), context.get("variant")
    if not isinstance(experiments, str) or not isinstance(variants, str):
        return []
    names, arms = experiments.split(SEPARATOR), variants.split(SEPARATOR)
    if len(names) != len(arms) or not all(names) or not all(arms):
        return []
    return list(zip(names, arms, strict=True))
