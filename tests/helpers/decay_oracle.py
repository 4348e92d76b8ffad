"""A slow oracle of ``decay.decayed_scan``: the decayed sums pushed one event at a
time, as the contract states them (ARCHITECTURE.md, rolling state)."""

from __future__ import annotations

import numpy as np


def decay_value(value: float, from_ms: int, to_ms: int, half_life_s: float) -> float:
    """A decayed value read at ``from_ms`` brought forward to ``to_ms`` (≥ from_ms)."""
    return float(value * 2.0 ** (-(max(to_ms - from_ms, 0) / 1000.0) / half_life_s))


class OneByOne:
    """``S = Σ x_k · 2^(−(t_ref − t_k)/h)``: an older event adds its decayed value, a
    newer one first rescales ``S`` to its own time. Half-lives in seconds, times in ms."""

    def __init__(self, half_lives_s, channels: int, values=None, t_ref_ms: int | None = None):
        self.half_lives_s = np.asarray(half_lives_s, dtype=np.float64)
        self.values = np.zeros((len(self.half_lives_s), channels)) if values is None else values
        self.t_ref_ms = t_ref_ms

    def _factor(self, delta_ms: int) -> np.ndarray:
        return 2.0 ** (-(delta_ms / 1000.0) / self.half_lives_s)[:, None]

    def push(self, t_ms: int, x: np.ndarray) -> None:
        if self.t_ref_ms is None:
            self.t_ref_ms = t_ms
        elif t_ms > self.t_ref_ms:
            self.values = self.values * self._factor(t_ms - self.t_ref_ms)
            self.t_ref_ms = t_ms
        self.values = self.values + self._factor(self.t_ref_ms - t_ms) * x
