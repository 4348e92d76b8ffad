"""Interval code against hand-worked answers, the bootstrap, and coverage on
simulated A/A data; the chi-square tail and the sample-ratio check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from beam_pipelines.experiments.aggregate import GroupSums, metrics_record, variant_metrics
from beam_pipelines.experiments.stats import (
    Estimate,
    bootstrap_lift,
    bootstrap_ratio,
    chi2_sf,
    lift,
    ratio_estimate,
    srm_p_value,
)


def test_delta_method_on_a_hand_worked_case() -> None:
    """Users (x, y) = (1, 2), (0, 1), (2, 3): R = 3/6 = 0.5; x̄ = 1, ȳ = 2;
    s_x² = s_y² = s_xy = 1, so Var(R) = (1 − 2·0.5·1 + 0.25·1) / (3 · 2²) = 1/48.
    Directly: the linearised values d_u = (x_u − R·y_u)/ȳ = 0, −0.25, 0.25 have
    sample variance 0.0625, and 0.0625 / 3 = 1/48 too."""
    estimate = ratio_estimate(np.array([1, 0, 2]), np.array([2, 1, 3]))

    assert estimate.value == 0.5
    assert estimate.se == pytest.approx(math.sqrt(1 / 48))
    d = (np.array([1, 0, 2]) - 0.5 * np.array([2, 1, 3])) / 2.0
    assert estimate.se**2 == pytest.approx(np.var(d, ddof=1) / 3)
    assert estimate.ci_low == pytest.approx(0.5 - 1.959964 * math.sqrt(1 / 48))
    assert estimate.ci_high == pytest.approx(0.5 + 1.959964 * math.sqrt(1 / 48))


def test_lift_on_a_hand_worked_case() -> None:
    """0.12 vs 0.10, each with se 0.01: lift 0.2, se = 1.2·√((0.01/0.12)² + (0.01/0.1)²)."""
    change = lift(Estimate.normal(0.12, 0.01), Estimate.normal(0.10, 0.01))

    se = 1.2 * math.sqrt((0.01 / 0.12) ** 2 + (0.01 / 0.1) ** 2)
    assert change.value == pytest.approx(0.2)
    assert change.se == pytest.approx(se)
    assert (change.ci_low, change.ci_high) == pytest.approx(
        (0.2 - 1.959964 * se, 0.2 + 1.959964 * se)
    )
    assert change.p_value == pytest.approx(math.erfc(0.2 / se / math.sqrt(2)))
    assert change.significant == (change.ci_low > 0)


def test_lift_over_a_negative_control_is_positive_when_it_rises() -> None:
    change = lift(Estimate.normal(-0.04, 0.001), Estimate.normal(-0.05, 0.001))
    assert change.value == pytest.approx(0.2)


def test_degenerate_inputs_give_nan_not_errors() -> None:
    assert math.isnan(ratio_estimate(np.array([]), np.array([])).value)
    one = ratio_estimate(np.array([1.0]), np.array([4.0]))
    assert one.value == 0.25 and math.isnan(one.ci_low)
    assert math.isnan(lift(Estimate.normal(0.1, 0.01), Estimate.normal(0.0, 0.01)).value)


def clustered_users(rng: np.random.Generator, n: int, rate: float = 0.1):
    """Per-user (engaged, exposures): exposures 1 + Poisson(8), propensity Beta with
    mean ``rate`` (users differ, so exposures of one user are correlated)."""
    exposures = 1 + rng.poisson(8, n)
    propensity = rng.beta(2, 2 * (1 - rate) / rate, n)
    return rng.binomial(exposures, propensity), exposures


def test_bootstrap_agrees_with_the_delta_method() -> None:
    x, y = clustered_users(np.random.default_rng(7), 3000)
    delta = ratio_estimate(x, y)
    boot = bootstrap_ratio(x, y, resamples=2000, seed=1)

    assert boot.value == delta.value
    assert boot.se == pytest.approx(delta.se, rel=0.1)
    width = delta.ci_high - delta.ci_low
    assert abs(boot.ci_low - delta.ci_low) < 0.1 * width
    assert abs(boot.ci_high - delta.ci_high) < 0.1 * width
    assert bootstrap_ratio(x, y, resamples=500, seed=3) == bootstrap_ratio(x, y, 500, seed=3)


def test_intervals_cover_95_percent_of_200_simulated_aa_datasets() -> None:
    """A/A: both groups from one distribution (true ratio 0.1, true lift 0). The
    clustered 95 % intervals should hold the truth in about 190 of 200 datasets
    (binomial sd ≈ 3); a per-exposure interval, ignoring the clustering, would
    cover far less."""
    rng = np.random.default_rng(2024)
    ratio_hits = lift_hits = boot_hits = 0
    for i in range(200):
        treatment, control = clustered_users(rng, 400), clustered_users(rng, 400)
        estimate = ratio_estimate(*control)
        ratio_hits += estimate.ci_low <= 0.1 <= estimate.ci_high
        change = lift(ratio_estimate(*treatment), estimate)
        lift_hits += change.ci_low <= 0 <= change.ci_high
        if i < 50:  # the bootstrap is slower: a quarter of the datasets
            boot = bootstrap_lift(treatment, control, resamples=400, seed=i)
            boot_hits += boot.ci_low <= 0 <= boot.ci_high
    assert 182 <= ratio_hits <= 198, ratio_hits
    assert 182 <= lift_hits <= 198, lift_hits
    assert 43 <= boot_hits <= 50, boot_hits


@pytest.mark.parametrize(
    ("x", "dof"),
    [(3.841458820694124, 1), (5.991464547107979, 2), (7.814727903251178, 3), (11.0704976935, 5)],
)
def test_chi2_tail_at_the_5_percent_critical_values(x: float, dof: int) -> None:
    assert chi2_sf(x, dof) == pytest.approx(0.05, abs=1e-9)


def test_chi2_tail_edges() -> None:
    assert chi2_sf(0.0, 2) == 1.0
    assert chi2_sf(0.5, 3) == pytest.approx(0.918891411654676, abs=1e-12)  # SciPy's value
    assert chi2_sf(5000.0, 3) == 0.0
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


def test_srm_catches_a_60_40_split_configured_as_50_50() -> None:
    rng = np.random.default_rng(3)
    broken = int((rng.random(10_000) < 0.6).sum())
    counts = {"control": broken, "treatment": 10_000 - broken}
    assert srm_p_value(counts, {"control": 0.5, "treatment": 0.5}) < 1e-10
    fair = int((rng.random(10_000) < 0.5).sum())
    assert (
        srm_p_value({"control": fair, "treatment": 10_000 - fair}, {"control": 1, "treatment": 1})
        > 0.001
    )
    assert srm_p_value(counts, {"control": 0.6, "treatment": 0.4}) > 0.001


def test_group_sums_kept_by_replacing_rows_equal_the_batch_sums() -> None:
    """A stream replaces users' rows (one joins, one grows, one leaves); the sums it
    keeps give the metrics of the final rows computed at once."""
    streamed = GroupSums()
    streamed.replace(None, [2, 1, 1.5])
    streamed.replace(None, [1, 0, -0.5])
    streamed.replace([2, 1, 1.5], [3, 2, 2.5])
    streamed.replace(None, [4, 1, 1.0])
    streamed.replace([1, 0, -0.5], None)
    streamed.replace(None, [1, 1, 1.0])

    expected = variant_metrics([[3, 2, 2.5], [4, 1, 1.0], [1, 1, 1.0]])
    record, expected = (metrics_record(("e", "v", ""), m) for m in (streamed.metrics(), expected))
    assert record.keys() == expected.keys()
    for name, value in record.items():
        want = expected[name]
        assert value == (want if isinstance(want, str) else pytest.approx(want)), name
    assert streamed.users == 3 and streamed.updates == 6
