"""Exponentially decayed sums that are order-independent and mergeable.

For half-life ``h`` (seconds) a sum is ``S = Σ x_k · 2^(−(t_ref − t_k)/h)`` with
``t_ref`` the newest event time seen. An older event adds its decayed value; a
newer one first rescales ``S`` to its own time. The result depends only on the
multiset of events, so out-of-order delivery, late data, streaming and backfill
all agree, and two partial states merge exactly.
"""

from __future__ import annotations

import numpy as np


def log2_decay_per_ms(half_lives_s) -> np.ndarray:
    """``−1/h`` per millisecond for half-lives ``h`` in seconds: ``2^(Δ · this)`` is the
    decay over Δ ms. The one unit conversion of the per-event sums and the backfill's
    prefix scans (``state.prefix``)."""
    return -1.0 / (np.asarray(half_lives_s, dtype=np.float64) * 1000.0)


def decay_factors(delta_ms: float, half_lives_s: np.ndarray) -> np.ndarray:
    """``2^(−Δ/h)`` for a time difference in milliseconds and half-lives in seconds."""
    return np.exp2(-(delta_ms / 1000.0) / half_lives_s)


def decay_value(value: float, from_ms: int, to_ms: int, half_life_s: float) -> float:
    """A decayed value read at ``from_ms`` brought forward to ``to_ms`` (≥ from_ms)."""
    return float(value * 2.0 ** (-(max(to_ms - from_ms, 0) / 1000.0) / half_life_s))


def ratio(numerator, denominator):
    """``numerator / denominator`` where the denominator is > 0, else 0: of floats (one
    state's sums) or element-wise of arrays (one per history row)."""
    if isinstance(denominator, float):
        return numerator / denominator if denominator > 0 else 0.0
    out = np.zeros_like(numerator)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def positive_part(value):
    """``max(value, 0)`` of a float or element-wise of an array."""
    return max(value, 0.0) if isinstance(value, float) else np.maximum(value, 0.0)


class DecayedSums:
    """A matrix of decayed sums: one row per half-life, one column per channel."""

    __slots__ = ("_log2_per_ms", "half_lives_s", "t_ref_ms", "values")

    def __init__(self, half_lives_s: tuple[float, ...], channels: int):
        if any(h <= 0 for h in half_lives_s):
            raise ValueError(f"half-lives must be > 0 seconds, got {half_lives_s}")
        self.half_lives_s = np.asarray(half_lives_s, dtype=np.float64)
        self.t_ref_ms: int | None = None
        self.values = np.zeros((len(half_lives_s), channels), dtype=np.float64)
        self._set_rate()

    def _set_rate(self) -> None:
        # Column of -1/h in per-millisecond units: one exp2 gives every row's factor.
        self._log2_per_ms = log2_decay_per_ms(self.half_lives_s)[:, None]

    def push(self, t_ms: int, x: np.ndarray) -> None:
        """Add channel values ``x`` observed at event time ``t_ms`` (hot path: no copies)."""
        if self.t_ref_ms is None:
            self.t_ref_ms = t_ms
        elif t_ms > self.t_ref_ms:
            self.values *= np.exp2((t_ms - self.t_ref_ms) * self._log2_per_ms)
            self.t_ref_ms = t_ms
        if t_ms == self.t_ref_ms:
            self.values += x
        else:
            self.values += np.exp2((self.t_ref_ms - t_ms) * self._log2_per_ms) * x

    def merge(self, other: DecayedSums) -> None:
        """Add another state over the same half-lives and channels (in place)."""
        # Checked before the empty case: a mismatch is a wiring error even while empty.
        if self.values.shape != other.values.shape or not np.array_equal(
            self.half_lives_s, other.half_lives_s
        ):
            raise ValueError("cannot merge sums with different half-lives or channels")
        if other.t_ref_ms is None:
            return
        if self.t_ref_ms is None:
            self.t_ref_ms, self.values = other.t_ref_ms, other.values.copy()
            return
        t_ref = max(self.t_ref_ms, other.t_ref_ms)
        mine = decay_factors(t_ref - self.t_ref_ms, self.half_lives_s)[:, None]
        theirs = decay_factors(t_ref - other.t_ref_ms, self.half_lives_s)[:, None]
        self.values = self.values * mine + other.values * theirs
        self.t_ref_ms = t_ref

    def at(self, t_ms: int) -> np.ndarray:
        """The sums brought forward to ``t_ms`` (never backwards)."""
        if self.t_ref_ms is None or t_ms <= self.t_ref_ms:
            return self.values.copy()
        return self.values * decay_factors(t_ms - self.t_ref_ms, self.half_lives_s)[:, None]

    # Keyed state is pickled at every event: builtins and raw float64 bytes pickle
    # several times faster than NumPy arrays.
    def __getstate__(self):
        return (tuple(self.half_lives_s.tolist()), self.t_ref_ms, self.values.tobytes())

    def __setstate__(self, state) -> None:
        half_lives, self.t_ref_ms, values = state
        self.half_lives_s = np.array(half_lives, dtype=np.float64)
        self.values = np.frombuffer(values, dtype=np.float64).reshape(len(half_lives), -1).copy()
        self._set_rate()
