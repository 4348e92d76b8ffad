"""Confidence intervals of per-variant ratio metrics, relative lift and the
sample-ratio-mismatch check. NumPy and ``math`` only (no SciPy on the workers).

A metric such as engagement per exposure is a ratio of sums over users,
``R = Σ_u x_u / Σ_u y_u``; a user's exposures are not independent (the same person
engages alike), so its variance comes from the per-user sums (the user is the unit
of randomisation), by the delta method:

    Var(R) ≈ (s_x² − 2·R·s_xy + R²·s_y²) / (n · ȳ²)

with ``s`` the sample (co)variances of the per-user sums and ``ȳ`` the mean
denominator (Deng, Knoblich and Lu, "Applying the Delta Method in Metric
Analytics", KDD 2018). The lift of a variant over control is ``R_t / R_c − 1``
(over ``|R_c|``: see ``lift``) with ``Var ≈ (R_t/R_c)² · (Var_t/R_t² + Var_c/R_c²)``
(independent groups). A seeded bootstrap over users gives the same intervals
without the approximation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and 95 % interval (NaN when the data
    cannot give one: fewer than two users, or a zero denominator)."""

    value: float
    se: float
    ci_low: float
    ci_high: float

    @classmethod
    def normal(cls, value: float, se: float, z: float = Z_95) -> Estimate:
        return cls(value, se, value - z * se, value + z * se)


@dataclasses.dataclass(frozen=True)
class Lift(Estimate):
    """Relative lift ``(R_t − R_c) / |R_c|`` with a two-sided p-value against none."""

    p_value: float = NAN

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0


def ratio_estimate(numerators: np.ndarray, denominators: np.ndarray) -> Estimate:
    """``Σ x / Σ y`` over users with its delta-method interval (``x``, ``y``: one
    value per user, e.g. a user's engaged exposures and exposures)."""
    x = np.asarray(numerators, dtype=np.float64)
    y = np.asarray(denominators, dtype=np.float64)
    return ratio_from_sums(len(x), *(float(v) for v in (x.sum(), y.sum(), x @ x, y @ y, x @ y)))


def ratio_from_sums(n: int, sx: float, sy: float, sxx: float, syy: float, sxy: float) -> Estimate:
    """``ratio_estimate`` from the users' sufficient statistics (``n`` users, ``Σx``,
    ``Σy``, ``Σx²``, ``Σy²``, ``Σxy``), which a stream can keep exactly as users'
    sums change: the sample (co)variances are ``(Σab − Σa·Σb/n) / (n − 1)``."""
    if n == 0 or sy == 0:
        return Estimate(NAN, NAN, NAN, NAN)
    ratio = sx / sy
    if n < 2:
        return Estimate(ratio, NAN, NAN, NAN)
    cxx, cyy, cxy = (
        (ab - a * b / n) / (n - 1) for ab, a, b in ((sxx, sx, sx), (syy, sy, sy), (sxy, sx, sy))
    )
    variance = (cxx - 2 * ratio * cxy + ratio**2 * cyy) / (n * (sy / n) ** 2)
    return Estimate.normal(ratio, math.sqrt(max(variance, 0.0)))


def lift(treatment: Estimate, control: Estimate) -> Lift:
    """``(treatment − control) / |control|`` (``R_t / R_c − 1`` for a positive control;
    the absolute value keeps a positive lift an increase when the control is negative,
    as a mean reward can be), by the delta method on the ratio of two ratios:
    ``se = |R_t / R_c| · √((se_t / R_t)² + (se_c / R_c)²)``."""
    t, c = treatment.value, control.value
    if not (math.isfinite(t) and math.isfinite(c)) or c == 0:
        return Lift(NAN, NAN, NAN, NAN)
    change = (t - c) / abs(c)
    # (se_t/R_t)·|R_t/R_c| is se_t/|R_c|, which stays finite when R_t = 0.
    se = math.sqrt((treatment.se / c) ** 2 + (t / c * control.se / c) ** 2)
    estimate = Estimate.normal(change, se)
    p = math.erfc(abs(change) / se / math.sqrt(2)) if se > 0 else NAN
    return Lift(estimate.value, se, estimate.ci_low, estimate.ci_high, p)


def bootstrap_ratio(
    numerators: np.ndarray,
    denominators: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """``Σ x / Σ y`` with a percentile interval from resampling users (``se``: the
    resamples' standard deviation); seeded, so the same data give the same interval."""
    x = np.asarray(numerators, dtype=np.float64)
    y = np.asarray(denominators, dtype=np.float64)
    if len(x) == 0 or y.sum() == 0:
        return Estimate(NAN, NAN, NAN, NAN)
    ratios = _resampled_ratios(x, y, resamples, np.random.default_rng(seed))
    low, high = np.nanquantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(float(x.sum() / y.sum()), float(np.nanstd(ratios)), float(low), float(high))


def bootstrap_lift(
    treatment: tuple[np.ndarray, np.ndarray],
    control: tuple[np.ndarray, np.ndarray],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Lift:
    """``(R_t − R_c) / |R_c|`` with a percentile interval from resampling each group's
    users."""
    rng = np.random.default_rng(seed)
    (xt, yt), (xc, yc) = (tuple(np.asarray(a, np.float64) for a in g) for g in (treatment, control))
    if len(xt) == 0 or len(xc) == 0 or yt.sum() == 0 or xc.sum() == 0:
        return Lift(NAN, NAN, NAN, NAN)
    rt = _resampled_ratios(xt, yt, resamples, rng)
    rc = _resampled_ratios(xc, yc, resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        lifts = (rt - rc) / np.abs(rc)
    lifts = lifts[np.isfinite(lifts)]
    low, high = np.quantile(lifts, [(1 - level) / 2, (1 + level) / 2])
    control = xc.sum() / yc.sum()
    value = float((xt.sum() / yt.sum() - control) / abs(control))
    p = min(1.0, 2 * min(float(np.mean(lifts <= 0)), float(np.mean(lifts >= 0))))
    return Lift(value, float(np.std(lifts)), float(low), float(high), p)


def _resampled_ratios(
    x: np.ndarray, y: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Ratio of sums of ``resamples`` with-replacement samples of the users, drawn a
    block at a time (at most ~2M indices, 16 MB, in memory)."""
    n = len(x)
    out = np.empty(resamples)
    block = max(1, 2_000_000 // n)
    for start in range(0, resamples, block):
        rows = rng.integers(0, n, size=(min(block, resamples - start), n))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + len(rows)] = x[rows].sum(axis=1) / y[rows].sum(axis=1)
    return out


def chi2_sf(x: float, dof: int) -> float:
    """``P(χ²_dof ≥ x)``, exact for integer ``dof`` ≥ 1 (no SciPy).

    Even ``dof = 2m``: ``e^(−x/2) Σ_{j<m} (x/2)^j / j!``. Odd ``dof = 2m + 1``:
    ``erfc(√(x/2)) + e^(−x/2) Σ_{j=1..m} (x/2)^(j−1/2) / Γ(j + 1/2)``. Terms are
    summed in log space, so a large ``x`` underflows to 0 instead of overflowing.
    """
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if x <= 0:
        return 1.0
    half = x / 2.0
    log_half = math.log(half)
    if dof % 2 == 0:
        terms = (j * log_half - half - math.lgamma(j + 1) for j in range(dof // 2))
        total = sum(math.exp(t) for t in terms)
    else:
        terms = ((j - 0.5) * log_half - half - math.lgamma(j + 0.5) for j in range(1, dof // 2 + 1))
        total = math.erfc(math.sqrt(half)) + sum(math.exp(t) for t in terms)
    return min(max(total, 0.0), 1.0)


def srm_p_value(counts: Mapping[str, int], shares: Mapping[str, float]) -> float:
    """Sample-ratio-mismatch p-value: Pearson's χ² of the users per variant against
    the configured shares (``assignment.variant_shares``), ``len − 1`` degrees of
    freedom. A tiny value (say < 0.001) means the split is not what was configured:
    the comparison is not to be trusted (a bug in assignment or in logging)."""
    total = sum(counts.get(name, 0) for name in shares)
    share_sum = sum(shares.values())
    if total == 0 or len(shares) < 2 or share_sum <= 0:
        return NAN
    statistic = 0.0
    for name, share in shares.items():
        expected = total * share / share_sum
        if expected > 0:
            statistic += (counts.get(name, 0) - expected) ** 2 / expected
    return chi2_sf(statistic, len(shares) - 1)
