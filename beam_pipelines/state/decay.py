"""Exponentially decayed sums that are order-independent and mergeable.

For half-life ``h`` (seconds) a sum is ``S = Σ x_k · 2^(−(t_ref − t_k)/h)`` with
``t_ref`` the newest event time seen. An older event adds its decayed value; a
newer one first rescales ``S`` to its own time. The result depends only on the
multiset of events, so out-of-order delivery, late data, streaming and backfill
all agree, and two partial states merge exactly.

``decayed_scan`` is the one implementation: the backfill scans every entity's
events at once, the streaming job one event onto a key's stored sums
(``DecayedSums.push``, its length-1 case).
"""

from __future__ import annotations

import numpy as np


def log2_decay_per_ms(half_lives_s) -> np.ndarray:
    """``−1/h`` per millisecond for half-lives ``h`` in seconds: ``2^(Δ · this)`` is the
    decay over Δ ms."""
    return -1.0 / (np.asarray(half_lives_s, dtype=np.float64) * 1000.0)


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


def segmented_max(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running maximum of int64 ``values`` restarting at each index in ``starts``."""
    n = len(values)
    if n == 0:
        return values.copy()
    segment = np.cumsum(_first(n, starts)) - 1
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span * (int(segment[-1]) + 1) < 2**62:  # shift each segment above the previous
        shift = segment * span
        return np.maximum.accumulate(values - low + shift) - shift + low
    out = np.empty_like(values)
    for start, stop in zip(starts, [*starts[1:], n], strict=True):
        out[start:stop] = np.maximum.accumulate(values[start:stop])
    return out


def decayed_scan(
    t_ms: np.ndarray,
    x: np.ndarray,
    half_lives_s: np.ndarray,
    starts: np.ndarray | None = None,
    carry: np.ndarray | None = None,
    carry_t_ms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(S, T)``: ``S[k]`` (half-lives × channels) the sums after row ``k`` and ``T[k]``
    (epoch ms) their reference time, for events at ``t_ms`` (ms) with channel values
    ``x`` (rows × channels, or rows × half-lives × channels). Rows ``starts[i]`` up
    to the next start are one entity's events (default: one entity); entity ``i``
    starts from the sums ``carry[i]`` (half-lives × channels) referenced at
    ``carry_t_ms[i]`` if given, else from zero.

    ``S_k = a_k · S_{k−1} + b_k`` with ``a_k = 2^(−(T_k − T_{k−1})/h)`` (0 at a run's
    start) and ``b_k = x_k · 2^(−(T_k − t_k)/h)`` is a linear recurrence: a parallel
    prefix scan (log2 of the longest run steps over all rows) solves it with every
    factor ≤ 1, so no factor leaves float64's range.
    """
    n = len(t_ms)
    t = np.asarray(t_ms, dtype=np.int64)
    one_run = starts is None
    # A run's first row: a slice for one run (the streaming job's case) is cheaper.
    first = slice(0, 1) if one_run else np.asarray(starts)
    newest = np.maximum.accumulate(t) if one_run else segmented_max(t, first)
    if carry is not None:
        carry_t = np.asarray(carry_t_ms, dtype=np.int64)
        run_t = carry_t if one_run else np.repeat(carry_t, np.diff(np.append(first, n)))
        newest = np.maximum(newest, run_t)
    log2_per_ms = log2_decay_per_ms(half_lives_s)
    sums = np.exp2(np.multiply.outer(newest - t, log2_per_ms))[:, :, None]
    sums = sums * (x[:, None, :] if x.ndim == 2 else x)
    if carry is not None and n:
        since = np.exp2(np.multiply.outer(newest[first] - carry_t, log2_per_ms))
        sums[first] += since[:, :, None] * carry
    if n < 2:
        return sums, newest
    previous = np.concatenate([newest[:1], newest[:-1]])
    # ≥ 0 within a run; across a run's start (another entity) it is reset to 0 below.
    factor = np.exp2(np.multiply.outer(np.maximum(newest - previous, 0), log2_per_ms))
    factor[first] = 0.0
    longest = n if one_run else int(np.diff(np.append(first, n)).max())
    step = 1
    while step < longest:
        sums[step:] += factor[step:, :, None] * sums[:-step]
        factor[step:] *= factor[:-step]
        step *= 2
    return sums, newest


def _first(n: int, starts: np.ndarray) -> np.ndarray:
    first = np.zeros(n, dtype=bool)
    first[starts] = True
    return first


class DecayedSums:
    """A matrix of decayed sums: one row per half-life, one column per channel; a
    key's stored state, folded forward by ``decayed_scan``."""

    __slots__ = ("half_lives_s", "t_ref_ms", "values")

    def __init__(self, half_lives_s: tuple[float, ...], channels: int):
        if any(h <= 0 for h in half_lives_s):
            raise ValueError(f"half-lives must be > 0 seconds, got {half_lives_s}")
        self.half_lives_s = np.asarray(half_lives_s, dtype=np.float64)
        self.t_ref_ms: int | None = None
        self.values = np.zeros((len(half_lives_s), channels), dtype=np.float64)

    def _scanned(self, t_ms: int, x: np.ndarray) -> tuple[np.ndarray, int]:
        """The sums and their time after adding ``x`` (channels, or half-lives ×
        channels) at ``t_ms``: the scan's length-1 case, carrying these sums."""
        carry = None if self.t_ref_ms is None else self.values[None]
        sums, newest = decayed_scan(
            np.array([t_ms]), x[None], self.half_lives_s, None, carry, [self.t_ref_ms]
        )
        return sums[0], int(newest[0])

    def push(self, t_ms: int, x: np.ndarray) -> None:
        """Add channel values ``x`` observed at event time ``t_ms``."""
        self.values, self.t_ref_ms = self._scanned(t_ms, x)

    def merge(self, other: DecayedSums) -> None:
        """Add another state over the same half-lives and channels (in place): its
        sums are one more event at its reference time."""
        # Checked before the empty case: a mismatch is a wiring error even while empty.
        if self.values.shape != other.values.shape or not np.array_equal(
            self.half_lives_s, other.half_lives_s
        ):
            raise ValueError("cannot merge sums with different half-lives or channels")
        if other.t_ref_ms is not None:
            self.push(other.t_ref_ms, other.values)

    def at(self, t_ms: int) -> np.ndarray:
        """The sums brought forward to ``t_ms`` (never backwards)."""
        if self.t_ref_ms is None:
            return self.values.copy()
        return self._scanned(t_ms, np.zeros(self.values.shape[1]))[0]

    # Keyed state is pickled at every event: builtins and raw float64 bytes pickle
    # several times faster than NumPy arrays.
    def __getstate__(self):
        return (tuple(self.half_lives_s.tolist()), self.t_ref_ms, self.values.tobytes())

    def __setstate__(self, state) -> None:
        half_lives, self.t_ref_ms, values = state
        self.half_lives_s = np.array(half_lives, dtype=np.float64)
        self.values = np.frombuffer(values, dtype=np.float64).reshape(len(half_lives), -1).copy()
