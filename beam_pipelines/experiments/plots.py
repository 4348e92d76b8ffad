"""The report's two plots (matplotlib, Agg: no display needed), read from the report's
JSON content so a saved ``report.json`` can be drawn again."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from beam_pipelines.experiments.aggregate import METRICS

TITLES = {"engagement_rate": "engagement rate", "reward_per_exposure": "reward per exposure"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # the base (pipeline) install has no matplotlib
        raise ImportError(
            "the experiment report's plots need matplotlib: "
            "pip install 'rtp-personalization[train]' (or [all])"
        ) from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metrics_over_time(report: Mapping[str, Any], path: Path) -> None:
    """One row per experiment, one column per metric: each variant's daily value with
    its 95 % interval as a band."""
    plt = _pyplot()
    experiments = report["experiments"] or {"(no experiment)": {"variants": {}}}
    fig, axes = plt.subplots(
        len(experiments), len(METRICS), figsize=(11, 3.4 * len(experiments)), squeeze=False
    )
    for row, (name, experiment) in enumerate(experiments.items()):
        for col, metric in enumerate(METRICS):
            ax = axes[row][col]
            for variant, values in experiment["variants"].items():
                daily = [d for d in values["daily"] if d[metric]["value"] is not None]
                days = [d["day"] for d in daily]
                ax.plot(days, [d[metric]["value"] for d in daily], marker="o", label=variant)
                bands = [(d[metric]["ci_low"], d[metric]["ci_high"]) for d in daily]
                if days and all(lo is not None for lo, _ in bands):
                    low, high = zip(*bands, strict=True)
                    ax.fill_between(days, low, high, alpha=0.2)
            ax.set_title(f"{name}: {TITLES[metric]}")
            ax.tick_params(axis="x", labelrotation=30)
            if experiment["variants"]:
                ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lifts(report: Mapping[str, Any], path: Path) -> None:
    """Each non-control variant's relative lift per metric, with its 95 % interval."""
    plt = _pyplot()
    rows = []
    for name, experiment in report["experiments"].items():
        for variant, values in experiment["variants"].items():
            for metric in METRICS:
                change = values[metric]["lift"]
                if change is not None and change["value"] is not None:
                    rows.append((f"{name} / {variant}\n{TITLES[metric]}", change))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.7 * max(len(rows), 1)))
    for y, (_, change) in enumerate(rows):
        value = change["value"] * 100
        low = change["ci_low"] * 100 if change["ci_low"] is not None else value
        high = change["ci_high"] * 100 if change["ci_high"] is not None else value
        color = "tab:red" if change["significant"] else "tab:blue"
        ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", color=color, capsize=4)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlabel("lift vs control, % (95 % interval; red: excludes 0)")
    if not rows:
        ax.text(0.5, 0.5, "no variant to compare", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
