"""Random draws: one ``numpy.random.Generator(PCG64)`` stream per concern, spawned
from the seed (catalogue, user behaviour, dirty lines), so the clean lines are the
same whatever ``dirty_fraction`` is."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class Draws:
    """Scalar draws from one Generator, fetched in blocks (numpy's per-call cost dominates)."""

    _BLOCK = 4096

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._uniform: list[float] = []
        self._normal: list[float] = []

    def uniform(self) -> float:
        if not self._uniform:
            self._uniform = self.rng.random(self._BLOCK).tolist()[::-1]
        return self._uniform.pop()

    def normal(self) -> float:
        if not self._normal:
            self._normal = self.rng.standard_normal(self._BLOCK).tolist()[::-1]
        return self._normal.pop()

    def below(self, n: int) -> int:
        """Uniform integer in [0, n)."""
        return min(int(self.uniform() * n), n - 1)

    def choice(self, options: tuple[Any, ...] | list[Any]) -> Any:
        return options[self.below(len(options))]

    def geometric(self, mean: float) -> int:
        """At least 1, with the given mean."""
        if mean <= 1:
            return 1
        return 1 + int(math.log(1.0 - self.uniform()) / math.log(1.0 - 1.0 / mean))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def streams(seed: int) -> tuple[np.random.Generator, ...]:
    children = np.random.SeedSequence(seed).spawn(3)
    return tuple(np.random.Generator(np.random.PCG64(child)) for child in children)
