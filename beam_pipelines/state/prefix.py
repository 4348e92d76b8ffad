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

from beam_pipelines.state.decay import log2_decay_per_ms

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
    rate = -log2_decay_per_ms(half_lives_s)  # half-lives per ms
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


def segmented_decayed_prefix(
    t_ms: np.ndarray,
    x: np.ndarray,
    half_lives_s: np.ndarray,
    starts: np.ndarray,
    initial: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``decayed_prefix`` of many independent runs at once: rows ``starts[i]`` up to
    the next start are one entity's events. ``initial`` (rows × half-lives ×
    channels, optional) is a state each row adds already at its newest time (a
    run's carried-in state, zero elsewhere).

    ``S_k = a_k · S_{k−1} + b_k`` with ``a_k = 2^(−(T_k − T_{k−1})/h)`` (0 at a run's
    start) is a linear recurrence: a parallel prefix scan (log2 of the longest run
    steps over all rows) solves it with every factor ≤ 1, so no anchor is needed.
    """
    n = len(t_ms)
    t = np.asarray(t_ms, dtype=np.int64)
    newest = segmented_max(t, starts)
    log2_per_ms = log2_decay_per_ms(half_lives_s)
    sums = np.exp2(np.multiply.outer(newest - t, log2_per_ms))[:, :, None] * x[:, None, :]
    if initial is not None:
        sums += initial
    if n == 0:
        return sums, newest
    previous = np.concatenate([newest[:1], newest[:-1]])
    # ≥ 0 within a run; across a run's start (another entity) it is reset to 0 below.
    factor = np.exp2(np.multiply.outer(np.maximum(newest - previous, 0), log2_per_ms))
    factor[starts] = 0.0
    longest = int(np.diff(np.append(starts, n)).max())
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
