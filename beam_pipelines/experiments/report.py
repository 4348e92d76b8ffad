"""The experiment report of a bounded event log: ``report.json``, ``report.md`` and
two plots (each metric per day per variant; each variant's lift with its interval).

``report.json``::

    {"experiments": {"<experiment>": {
        "control": "control", "srm_p_value": 0.41, "expected_shares": {...},
        "variants": {"<variant>": {
            "users": 5012, "exposures": 100240, "engagements": 12031,
            "engagement_rate": {"value": .., "ci_low": .., "ci_high": ..,
                                "lift": {"value": .., "ci_low": .., "ci_high": ..,
                                         "p_value": .., "significant": false}},
            "reward_per_exposure": {...the same...},
            "srm_p_value": 0.41,
            "daily": [{"day": "2024-06-01", "users": .., "exposures": ..,
                       "engagement_rate": {...}, "reward_per_exposure": {...}}]}}}},
     "events": {...counts...}, ...}

Lifts are relative (``0.05``: +5 %) against the experiment's control, ``null`` on the
control itself; intervals are 95 %, clustered by user (``stats``). The SRM p-value
is the experiment's (repeated on each variant): it tests the users per variant
against the configured shares (equal shares when the experiment is not in
``--experiments``). A number the data cannot give (one user, no exposure) is null.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from beam_pipelines.events import EngagementEvent
from beam_pipelines.experiments.aggregate import (
    ALL_DAYS,
    METRICS,
    VariantMetrics,
    per_user_rows,
    variant_metrics,
)
from beam_pipelines.experiments.assignment import variant_shares
from beam_pipelines.experiments.attribution import (
    DEFAULT_WINDOW_MS,
    EXPOSURE_TYPE,
    attribute,
    split_events,
)
from beam_pipelines.experiments.config import ExperimentsConfig
from beam_pipelines.experiments.stats import Estimate, Lift, lift, srm_p_value
from beam_pipelines.rewards import RewardConfig

JSON_NAME, MD_NAME = "report.json", "report.md"
OVER_TIME_PNG, LIFT_PNG = "metrics_over_time.png", "lift.png"
NO_EXPERIMENT = "No logged exposure in this log carries an experiment and variant."


def build_report(
    events: Iterable[EngagementEvent],
    rewards: RewardConfig,
    experiments: ExperimentsConfig | None = None,
    window_ms: int = DEFAULT_WINDOW_MS,
    exposure_type: str = EXPOSURE_TYPE,
) -> dict[str, Any]:
    """The report's content (JSON-ready, NaN as None) of an event stream."""
    exposures, outcomes, skipped = split_events(events, rewards, exposure_type)
    attributed, counts = attribute(exposures, outcomes, window_ms)
    groups = {key: variant_metrics(rows) for key, rows in per_user_rows(attributed).items()}
    names = sorted({experiment for experiment, _, _ in groups})
    report = {
        "attribution_window_s": window_ms / 1000,
        "reward_config": {"name": rewards.name, "version": rewards.version},
        "exposure_event_type": exposure_type,
        "events": {
            "exposures": len(attributed),
            "outcomes": len(outcomes),
            **{k: counts.get(k, 0) for k in ("duplicate_exposures", "attributed", "no_exposure")},
            "late": counts.get("late", 0),
            **dict(skipped),
        },
        "experiments": {name: _experiment(name, groups, experiments) for name in names},
    }
    return _clean(report)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One experiment's variants against its control (the report's and the streamed
    rows' numbers): ``variants`` in report order (the configured ones first, with
    empty metrics if unseen), ``shares`` the expected split of users."""

    control: str
    configured: bool
    shares: dict[str, float]
    variants: dict[str, VariantMetrics]
    srm_p_value: float

    def lift(self, variant: str, metric: str) -> Lift | None:
        """``metric``'s lift of ``variant`` over the control; None on the control."""
        if variant == self.control:
            return None
        control = getattr(self.variants[self.control], metric)
        return lift(getattr(self.variants[variant], metric), control)


def compare(
    name: str, metrics: Mapping[str, VariantMetrics], experiments: ExperimentsConfig | None
) -> Comparison:
    """Experiment ``name`` from its variants' metrics (``metrics``, non-empty): the
    configured shares and control, else equal shares and ``control`` (or the first
    variant seen), and the SRM p-value of the users per variant."""
    seen = sorted(metrics)
    configured = experiments.experiment(name) if experiments else None
    if configured is not None:
        shares = variant_shares(configured)
        names = [v.name for v in configured.variants] + [v for v in seen if v not in shares]
        control = configured.control_name
    else:
        shares = {v: 1.0 / len(seen) for v in seen}
        names = seen
        control = "control" if "control" in seen else seen[0]
    empty = variant_metrics([])
    variants = {v: metrics.get(v, empty) for v in names}
    srm = srm_p_value({v: m.users for v, m in variants.items()}, shares)
    return Comparison(control, configured is not None, shares, variants, srm)


def _experiment(
    name: str,
    groups: Mapping[tuple[str, str, str], VariantMetrics],
    experiments: ExperimentsConfig | None,
) -> dict[str, Any]:
    overall = {v: m for (e, v, d), m in groups.items() if e == name and d == ALL_DAYS}
    comparison = compare(name, overall, experiments)
    days = sorted({d for e, _, d in groups if e == name and d != ALL_DAYS})
    out_variants = {}
    for v, metrics in comparison.variants.items():
        row: dict[str, Any] = {
            "users": metrics.users,
            "exposures": metrics.exposures,
            "engagements": metrics.engagements,
        }
        for metric in METRICS:
            estimate = getattr(metrics, metric)
            row[metric] = {**_interval(estimate), "lift": _lift(comparison.lift(v, metric))}
        row["srm_p_value"] = comparison.srm_p_value
        row["daily"] = [
            _day(day, groups[(name, v, day)]) for day in days if (name, v, day) in groups
        ]
        out_variants[v] = row
    return {
        "control": comparison.control,
        "configured": comparison.configured,
        "expected_shares": comparison.shares,
        "srm_p_value": comparison.srm_p_value,
        "variants": out_variants,
    }


def _interval(estimate: Estimate) -> dict[str, float]:
    return {"value": estimate.value, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high}


def _lift(value: Lift | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {**_interval(value), "p_value": value.p_value, "significant": value.significant}


def _day(day: str, metrics: VariantMetrics) -> dict[str, Any]:
    return {
        "day": day,
        "users": metrics.users,
        "exposures": metrics.exposures,
        **{metric: _interval(getattr(metrics, metric)) for metric in METRICS},
    }


def _clean(value: Any) -> Any:
    """NaN and infinities → None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_report(report: Mapping[str, Any], out: Path) -> list[Path]:
    """``report.json``, ``report.md`` and the two PNGs under ``out``; their paths."""
    from beam_pipelines.experiments import plots

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / JSON_NAME, out / MD_NAME, out / OVER_TIME_PNG, out / LIFT_PNG]
    paths[0].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    paths[1].write_text(markdown(report))
    plots.metrics_over_time(report, paths[2])
    plots.lifts(report, paths[3])
    return paths


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _cell(metric: Mapping[str, Any]) -> tuple[str, str]:
    value = f"{_num(metric['value'])} [{_num(metric['ci_low'])}, {_num(metric['ci_high'])}]"
    change = metric.get("lift")
    if change is None:
        return value, "control"
    star = " *" if change["significant"] else ""
    return (
        value,
        f"{_pct(change['value'])} [{_pct(change['ci_low'])}, {_pct(change['ci_high'])}]{star}",
    )


def markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: one table per experiment."""
    lines = [
        "# Experiment report",
        "",
        f"Reward config `{report['reward_config']['name']}` v{report['reward_config']['version']}; "
        f"attribution window {report['attribution_window_s']:g} s; exposures are "
        f"`{report['exposure_event_type']}` events with a request id.",
        "",
        "Events: " + ", ".join(f"{k} {v}" for k, v in report["events"].items()) + ".",
        "",
        "Intervals are 95 %, clustered by user (delta method); lifts are relative to the "
        "control; `*` marks an interval that excludes no change.",
    ]
    if not report["experiments"]:
        lines += ["", NO_EXPERIMENT]
    for name, experiment in report["experiments"].items():
        srm = experiment["srm_p_value"]
        warning = (
            " **sample ratio mismatch: do not trust this comparison**"
            if (srm is not None and srm < 0.001)
            else ""
        )
        lines += [
            "",
            f"## {name}",
            "",
            f"Control `{experiment['control']}`; SRM p-value "
            f"{'n/a' if srm is None else f'{srm:.4g}'}{warning}.",
            "",
            "| variant | users | exposures | engagement rate | lift | reward / exposure | lift |",
            "|---|---:|---:|---|---|---|---|",
        ]
        for variant, row in experiment["variants"].items():
            rate, rate_lift = _cell(row["engagement_rate"])
            reward, reward_lift = _cell(row["reward_per_exposure"])
            lines.append(
                f"| {variant} | {row['users']} | {row['exposures']} | {rate} | {rate_lift} "
                f"| {reward} | {reward_lift} |"
            )
    return "\n".join(lines) + "\n"


def summary(report: Mapping[str, Any]) -> list[str]:
    """A few lines for the terminal: each variant's lifts."""
    lines = [] if report["experiments"] else [NO_EXPERIMENT]
    for name, experiment in report["experiments"].items():
        srm = experiment["srm_p_value"]
        lines.append(f"{name}: SRM p={'n/a' if srm is None else f'{srm:.3g}'}")
        for variant, row in experiment["variants"].items():
            parts = [f"{row['users']} users", f"{row['exposures']} exposures"]
            for metric in METRICS:
                value, change = _cell(row[metric])
                parts.append(f"{metric} {value} ({change})")
            lines.append(f"  {variant}: " + "; ".join(parts))
    return lines
