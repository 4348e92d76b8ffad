"""Every intermediate value of a ``DecayedSums`` fold at once, with NumPy.

``DecayedSums.push`` applied to events 0..k gives, for each half-life ``h``,
``S_k = Σ_{j≤k} x_j · 2^(−(T_k − t_j)/h)`` with ``T_k = max_{j≤k} t_j``. Written as
``2^(−(T_k − A)/h) · Σ_{j≤k} x_j · 2^((t_j − A)/h)`` for an anchor time ``A`` this
is a cumulative sum. Anchors are renewed in blocks so that no factor leaves
float64's range; the result equals the one-by-one fold up to rounding (1e-12
relative, not bit for bit).
"""

from __future__ import annotations

import numpy as np

# Largest exponent (in half-lives of the shortest half-life) spanned in one block:
# 2^±256 keeps every factor and partial sum far from overflow and underflow.
_BLOCK_HALF_LIVES = 256.0


def decayed_prefix(
    t_ms: np.ndarray,
    x: np.ndarray,
    half_lives_s: np.ndarray,
    carry: np.ndarray | None = None,
    carry_t_ms: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(S, T)``: ``S[k]`` (half-lives × channels) the sums after event ``k`` and
    ``T[k]`` (epoch ms) their reference time, for events at ``t_ms`` (ms) with
    channel values ``x`` (events × channels), after an optional starting state
    ``carry`` (half-lives × channels) referenced at ``carry_t_ms``."""
    n = len(t_ms)
    t = np.asarray(t_ms, dtype=np.int64)
    big_t = np.maximum.accumulate(t)
    if carry_t_ms is not None:
        big_t = np.maximum(big_t, carry_t_ms)
    rate = 1.0 / (np.asarray(half_lives_s, dtype=np.float64) * 1000.0)  # half-lives per ms
    out = np.empty((n, len(rate), x.shape[1]), dtype=np.float64)
    span_ms = _BLOCK_HALF_LIVES / rate.max()
    state, state_t = carry, carry_t_ms
    start = 0
    while start < n:
        anchor = int(big_t[start])
        stop = max(int(np.searchsorted(big_t, anchor + span_ms, side="right")), start + 1)
        grow = np.exp2(np.multiply.outer(t[start:stop] - anchor, rate))  # events × half-lives
        sums = np.cumsum(grow[:, :, None] * x[start:stop, None, :], axis=0)
        if state is not None:
            sums += state * np.exp2((state_t - anchor) * rate)[:, None]
        shrink = np.exp2(np.multiply.outer(anchor - big_t[start:stop], rate))
        out[start:stop] = sums * shrink[:, :, None]
        state, state_t = out[stop - 1], int(big_t[stop - 1])
        start = stop
    return out, big_t
