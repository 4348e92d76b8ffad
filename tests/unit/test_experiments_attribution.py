"""The attribution join and the per-variant aggregates on hand-worked cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from beam_pipelines.events import EngagementEvent
from beam_pipelines.experiments.aggregate import ALL_DAYS, per_user_rows, variant_metrics
from beam_pipelines.experiments.attribution import attribute, split_events
from beam_pipelines.rewards import SHORT_VIDEO

T0 = 1_780_000_000_000  # 2026-05-28T20:26:40Z
MIN = 60_000
HOUR = 60 * MIN


def exposure(
    request: str, item: str, at: int, user: str = "u", variant: str = "control", position: int = 0
) -> EngagementEvent:
    context: dict[str, Any] = {
        "position": position,
        "request_id": request,
        "experiment": "e",
        "variant": variant,
    }
    return EngagementEvent(f"{request}-{item}-{at}", user, item, "impression", at, context=context)


def outcome(kind: str, item: str, at: int, user: str = "u", **extra: Any) -> EngagementEvent:
    return EngagementEvent(f"{kind}-{item}-{at}", user, item, kind, at, **extra)


def run(events: list[EngagementEvent], window_ms: int = 24 * HOUR):
    exposures, outcomes, skipped = split_events(events, SHORT_VIDEO)
    attributed, counts = attribute(exposures, outcomes, window_ms)
    return {(a.exposure.request_id, a.exposure.item_id): a for a in attributed}, counts, skipped


def test_engagement_goes_to_the_most_recent_earlier_exposure() -> None:
    shown, counts, _ = run(
        [
            exposure("r1", "a", T0),
            exposure("r2", "a", T0 + HOUR),
            outcome("like", "a", T0 + 2 * HOUR),  # r2 is the most recent before it
            outcome("view", "a", T0 + 30 * MIN, watch_ms=800, item_duration_ms=1000),  # r1
            exposure("r3", "a", T0 + 3 * HOUR),  # after both: gets nothing
        ]
    )
    assert (shown["r1", "a"].reward, shown["r1", "a"].engaged) == (0.8, True)
    assert (shown["r2", "a"].reward, shown["r2", "a"].outcomes) == (1.0, 1)
    assert shown["r3", "a"].outcomes == 0
    assert counts["attributed"] == 2


def test_late_engagement_and_engagement_without_exposure_are_not_attributed() -> None:
    shown, counts, _ = run(
        [
            exposure("r1", "a", T0),
            outcome("like", "a", T0 + 24 * HOUR),  # exactly at the window's end: counts
            outcome("share", "a", T0 + 24 * HOUR + 1),  # 1 ms past it: late
            outcome("like", "b", T0 + MIN),  # item b was never shown
            outcome("like", "a", T0 - MIN),  # before the exposure
            outcome("like", "a", T0 + MIN, user="v"),  # another user
        ]
    )
    assert shown["r1", "a"].reward == 1.0
    assert counts == {"attributed": 1, "late": 1, "no_exposure": 3}


def test_duplicate_exposure_counts_once() -> None:
    """The same request's item logged twice (a retried publish, at-least-once
    delivery with another event id) is one exposure, the earlier one."""
    shown, counts, _ = run(
        [
            exposure("r1", "a", T0 + 5),
            exposure("r1", "a", T0),
            exposure("r1", "b", T0, position=1),
            outcome("like", "a", T0 + 2),
        ]
    )
    assert len(shown) == 2 and counts["duplicate_exposures"] == 1
    assert shown["r1", "a"].exposure.timestamp_ms == T0 and shown["r1", "a"].engaged


def test_unlogged_impressions_and_unknown_types_are_set_aside() -> None:
    plain = EngagementEvent("x", "u", "a", "impression", T0)  # no request id
    _, _, skipped = run([plain, outcome("stream", "a", T0)])
    assert skipped == {"unlogged_exposures": 1, "no_reward_rule": 1}


def test_per_variant_aggregates_are_per_user() -> None:
    """u: 2 exposures, 1 engaged (like, +1) and a skip (−0.5); v: 1 exposure, nothing;
    w (treatment): 1 exposure, a share (+2). Rates are sums over users."""
    shown, _, _ = run(
        [
            exposure("r1", "a", T0),
            exposure("r1", "b", T0, position=1),
            outcome("like", "a", T0 + MIN),
            outcome("skip", "b", T0 + MIN),
            exposure("r2", "a", T0, user="v"),
            exposure("r3", "a", T0, user="w", variant="treatment"),
            outcome("share", "a", T0 + MIN, user="w"),
        ]
    )
    rows = per_user_rows(shown.values())
    control = variant_metrics(rows["e", "control", ALL_DAYS])
    assert (control.users, control.exposures, control.engagements) == (2, 3, 1)
    assert control.engagement_rate.value == pytest.approx(1 / 3)
    assert control.reward_per_exposure.value == pytest.approx(0.5 / 3)
    assert sorted(rows["e", "control", "2026-05-28"].tolist()) == [[1, 0, 0], [2, 1, 0.5]]
    treatment = variant_metrics(rows["e", "treatment", ALL_DAYS])
    assert (treatment.users, treatment.reward) == (1, 2.0)
    assert np.isnan(treatment.engagement_rate.ci_low)  # one user: no interval
