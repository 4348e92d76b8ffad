"""``metrics.json``, ``report.md`` and the PNG plots of one evaluation run."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np

from models.evaluation.data import ReplayLog
from models.evaluation.metrics import hit_ndcg, rolling_mean, summarize
from models.evaluation.protocol import ReplayResult

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
BAR_PLOT = "metrics_by_variant.png"
ROLLING_PLOT = "ndcg10_rolling.png"


def dataset_stats(log: ReplayLog, result: ReplayResult) -> dict[str, Any]:
    """Counts and time range of the log, the split and the scored targets."""
    n_test = len(log.events) - log.n_train
    train_users = set(log.user_idx[: log.n_train].tolist())
    test_users = set(log.user_idx[log.n_train :].tolist())
    return {
        "n_events": len(log.events),
        "n_interactions": int(log.interaction.sum()),
        "n_users": log.n_users,
        "n_items": log.n_items,
        "n_train_events": log.n_train,
        "n_test_events": n_test,
        "n_train_interactions": int(log.interaction[: log.n_train].sum()),
        "n_test_interactions": int(log.interaction[log.n_train :].sum()),
        "n_targets": int(result.positions.size),
        "n_warm_targets": int(result.warm.sum()),
        "n_repeat_interactions_not_scored": result.repeats_skipped,
        "n_test_users": len(test_users),
        "n_cold_test_users": len(test_users - train_users),
        "first_event_ms": int(log.ts_ms[0]),
        "split_event_ms": int(log.ts_ms[log.n_train]) if n_test else None,
        "last_event_ms": int(log.ts_ms[-1]),
        "skipped_lines": log.skipped,
    }


FIRST_EVENTS = 10  # the new-user slice: a user's first events of the test stream


def slices(log: ReplayLog, result: ReplayResult) -> dict[str, np.ndarray]:
    """Target masks of EVALUATION.md's slices besides all and warm: ``cold_item`` (the
    target had no training interaction) and ``new_user_first_10`` (the first 10 test
    events of users with no training event)."""
    train = slice(0, log.n_train)
    trained_items = np.zeros(log.n_items, dtype=bool)
    trained_items[log.item_idx[train][log.interaction[train]]] = True
    cold_item = ~trained_items[log.item_idx[result.positions]]
    seen = np.zeros(log.n_users, dtype=np.int64)
    first = np.zeros(len(result.positions), dtype=bool)
    wanted = dict(zip(result.positions.tolist(), range(len(result.positions)), strict=True))
    for k in range(log.n_train, len(log.events)):
        user = int(log.user_idx[k])
        target = wanted.get(k)
        if target is not None:
            first[target] = not result.warm[target] and seen[user] < FIRST_EVENTS
        seen[user] += 1
    return {"cold_item": cold_item, "new_user_first_10": first}


def variant_metrics(
    result: ReplayResult, ks: list[int], log: ReplayLog | None = None
) -> dict[str, Any]:
    masks = slices(log, result) if log is not None else {}
    out = {}
    for name, ranks in result.ranks.items():
        out[name] = {
            "all": summarize(ranks, ks),
            "warm": summarize(ranks[result.warm], ks),
            **{slice_: summarize(ranks[mask], ks) for slice_, mask in masks.items()},
            "fit_s": round(result.fit_seconds[name], 3),
            "score_s": round(result.score_seconds[name], 3),
        }
    return out


def write_metrics(out_dir: pathlib.Path, document: dict[str, Any]) -> pathlib.Path:
    path = out_dir / METRICS_FILE
    path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def metrics_table(variants: dict[str, Any], ks: list[int], group: str) -> list[str]:
    columns = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]
    lines = [
        "| variant | " + " | ".join(columns) + " | events |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for name, values in variants.items():
        row = values[group]
        cells = " | ".join(_fmt(row[c]) for c in columns)
        lines.append(f"| {name} | {cells} | {row['n_events']} |")
    return lines


def write_report(out_dir: pathlib.Path, document: dict[str, Any]) -> pathlib.Path:
    ks = document["protocol"]["k"]
    stats = document["dataset"]
    lines = [
        f"# Replay evaluation: {document['input']['events']}",
        "",
        f"Format `{document['input']['format']}`, reward `{document['input']['reward']}`. "
        "Protocol of EVALUATION.md: events sorted by (timestamp, user, tie hash), first "
        f"{document['protocol']['train_fraction']:.0%} train, the rest replayed; full-catalogue "
        "ranking without already-seen items, ties against the target.",
        "",
        f"{stats['n_events']} events, {stats['n_users']} users, {stats['n_items']} items; "
        f"{stats['n_targets']} scored test interactions, {stats['n_warm_targets']} of warm users "
        f"({stats['n_cold_test_users']} of {stats['n_test_users']} test users have no "
        "training event). "
        f"Wall time {document['wall_time_s']['total']:.1f} s.",
        "",
        "## All test interactions",
        "",
        *metrics_table(document["variants"], ks, "all"),
        "",
        "## Warm users (≥ 1 training event)",
        "",
        *metrics_table(document["variants"], ks, "warm"),
        "",
    ]
    first = next(iter(document["variants"].values()), {})
    for group, title in (
        ("cold_item", "Cold items (the target had no training interaction)"),
        (
            "new_user_first_10",
            f"The first {FIRST_EVENTS} test events of users with no training event",
        ),
    ):
        if group in first:
            lines += [f"## {title}", "", *metrics_table(document["variants"], ks, group), ""]
    lines += _adapt_section(document.get("time_to_adapt"))
    lines += _new_items_section(document.get("new_items"))
    lines += _notes(document)
    lines += [
        "## Plots",
        "",
        f"![metrics by variant]({BAR_PLOT})",
        "",
        f"![rolling NDCG@10]({ROLLING_PLOT})",
        "",
    ]
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path


def _new_items_section(new: dict[str, Any] | None) -> list[str]:
    if not new:
        return []
    lines = [
        "## New items: upload → first engagement",
        "",
        f"{new['new_items']} items released during the test stream and then interacted with. "
        f"An engagement is delivered when the variant ranked the item in its top-{new['k']} "
        "just before it; hours from upload to the first delivered one (median; items never "
        "delivered count as infinite). `log`: the first interaction in the log, the best any "
        "variant can do.",
        "",
        "| variant | items delivered | median hours |",
        "|---|---:|---:|",
    ]
    for name, value in new.items():
        if isinstance(value, dict):
            lines.append(
                f"| {name} | {value['items_delivered']} / {new['new_items']} | "
                f"{_fmt(value['median_hours'])} |"
            )
    return [*lines, ""]


def _adapt_section(adapt: dict[str, Any] | None) -> list[str]:
    if not adapt:
        return []
    lines = [
        "## Time to adapt after an interest shift",
        "",
        f"{adapt['n_shifts']} abrupt shifts in the test stream. Events of the user after the "
        f"shift until the new topic is in the top-{adapt['k']} (`any`) or strictly its most "
        "frequent topic (`plurality`); median counts unadapted shifts as infinite, "
        f"cap {adapt['max_events']}.",
        "",
        "| variant | any: adapted | any: median | any: mean if adapted "
        "| plurality: adapted | plurality: median | plurality: mean if adapted |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, value in adapt.items():
        if isinstance(value, dict):
            cells = [
                f"{v['adapted']} / {adapt['n_shifts']} | {_fmt(v['median_events'])} | "
                f"{_fmt(v['mean_events_adapted'])}"
                for v in (value["any"], value["plurality"])
            ]
            lines.append(f"| {name} | {' | '.join(cells)} |")
    return [*lines, ""]


def _notes(document: dict[str, Any]) -> list[str]:
    notes = document.get("notes") or []
    return (["## Notes", "", *[f"- {n}" for n in notes], ""]) if notes else []


def write_plots(
    out_dir: pathlib.Path, document: dict[str, Any], result: ReplayResult, window: int
) -> list[pathlib.Path]:
    """Bar chart of HR/NDCG per variant and K; rolling NDCG@10 over the test stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks, variants = document["protocol"]["k"], document["variants"]
    names = list(variants)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(ks)
    x = np.arange(len(names))
    for ax, metric in zip(axes, ("hr", "ndcg"), strict=True):
        for n, k in enumerate(ks):
            values = [variants[v]["all"][f"{metric}@{k}"] for v in names]
            ax.bar(x + (n - (len(ks) - 1) / 2) * width, values, width, label=f"K={k}")
        ax.set_xticks(x, names, rotation=25, ha="right")
        ax.set_title(f"{metric.upper()}@K, all test interactions")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    bar_path = out_dir / BAR_PLOT
    fig.savefig(bar_path, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(12, 4.5))
    n_targets = result.positions.size
    window = max(1, min(window, n_targets // 10))  # at least ten windows across the stream
    for name in names:
        _, gain = hit_ndcg(result.ranks[name], 10)
        full = np.arange(window - 1, n_targets)  # plot full windows only
        ax.plot(full, rolling_mean(gain, window)[full], label=name, linewidth=1.2)
    ax.set_xlabel("scored test interaction (stream order)")
    ax.set_ylabel(f"NDCG@10, trailing mean of {window}")
    ax.set_title("NDCG@10 over the test stream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    rolling_path = out_dir / ROLLING_PLOT
    fig.savefig(rolling_path, dpi=110)
    plt.close(fig)
    return [bar_path, rolling_path]


def summary_line(document: dict[str, Any]) -> str:
    """One line per variant: NDCG@10 and HR@10 over all test interactions."""
    k = 10 if 10 in document["protocol"]["k"] else document["protocol"]["k"][0]
    rows = [
        f"{name:>20}  ndcg@{k}={v['all'][f'ndcg@{k}']:.4f}  hr@{k}={v['all'][f'hr@{k}']:.4f}"
        for name, v in document["variants"].items()
    ]
    return "\n".join([*rows, f"wall time {document['wall_time_s']['total']:.1f} s"])
