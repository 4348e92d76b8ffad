"""Synthetic event logs of one experiment: logged exposures and the engagements they
lead to, with a known truth (a lift per variant, or none for an A/A test).

Each user has an engagement propensity drawn from Beta(2, 18) (mean 0.1), so users
differ and their exposures are correlated, as the per-user clustering assumes. A
user makes 1–6 requests over ``days`` days, each showing ``k`` items; an exposure
leads to a ``like`` (reward 1, engaged) with the user's propensity × (1 + lift of
the variant), else to a ``skip`` (reward −0.5) one time in three, else nothing.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping

import numpy as np

from beam_pipelines.events import EngagementEvent
from beam_pipelines.experiments.assignment import Assigner
from beam_pipelines.experiments.config import ExperimentConfig, ExperimentsConfig

START_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MINUTE_MS = 60_000


def experiment(name: str = "aa", variants: tuple[str, ...] = ("control", "treatment")):
    return ExperimentConfig(
        name=name, salt=f"{name}-salt", variants=[{"name": v} for v in variants]
    )


def synthetic_log(
    config: ExperimentConfig,
    users: int,
    seed: int,
    *,
    lifts: Mapping[str, float] | None = None,
    actual_shares: Mapping[str, float] | None = None,
    days: int = 3,
    k: int = 5,
) -> list[EngagementEvent]:
    """The events, in time order per user. ``actual_shares``: assign at random with
    these shares instead of by the experiment's hash (a broken assignment)."""
    rng = np.random.default_rng(seed)
    assigner = Assigner(ExperimentsConfig(experiments=(config,)))
    names = list(actual_shares or {})
    shares = np.asarray([actual_shares[n] for n in names]) if actual_shares else None
    lifts = lifts or {}
    events: list[EngagementEvent] = []
    for u in range(users):
        user_id = f"s{seed}-u{u}"
        if shares is not None:
            variant = names[int(rng.choice(len(names), p=shares / shares.sum()))]
        else:
            variant = assigner.assign(user_id).variant or ""
        propensity = min(rng.beta(2, 18) * (1 + lifts.get(variant, 0.0)), 1.0)
        for _ in range(int(rng.integers(1, 7))):
            at_ms = START_MS + int(rng.integers(0, days * 24 * 60)) * MINUTE_MS
            request_id = uuid.UUID(int=int(rng.integers(0, 2**63))).hex
            items = rng.choice(1000, k, replace=False)
            for position, item in enumerate(items.tolist()):
                context = {
                    "position": position,
                    "request_id": request_id,
                    "experiment": config.name,
                    "variant": variant,
                }
                item_id = f"i{item}"
                events.append(
                    EngagementEvent(
                        f"{request_id}-{position}",
                        user_id,
                        item_id,
                        "impression",
                        at_ms,
                        context=context,
                    )
                )
                draw = rng.random()
                later = at_ms + int(rng.integers(1, 30)) * MINUTE_MS
                if draw < propensity:
                    kind = "like"
                elif draw < propensity + (1 - propensity) / 3:
                    kind = "skip"
                else:
                    continue
                events.append(
                    EngagementEvent(f"{request_id}-{position}-o", user_id, item_id, kind, later)
                )
    return events


def with_duplicates(events: list[EngagementEvent], every: int) -> list[EngagementEvent]:
    """Every ``every``-th exposure logged twice under another event id (the same
    request and item: one exposure), alternately a second later and a second
    earlier, so that the copy that counts sometimes arrives second."""
    out: list[EngagementEvent] = []
    exposures = 0
    for event in events:
        out.append(event)
        if event.event_type != "impression":
            continue
        exposures += 1
        if exposures % every == 0:
            shift = 1000 if exposures // every % 2 else -1000
            out.append(
                dataclasses.replace(
                    event, event_id=f"{event.event_id}-dup", timestamp_ms=event.timestamp_ms + shift
                )
            )
    return out


def arrival_order(
    events: list[EngagementEvent], lateness_ms: int, seed: int
) -> list[EngagementEvent]:
    """The events in an order a stream might deliver them: by event time plus a
    random delay below ``lateness_ms``, so no event arrives more than ``lateness_ms``
    behind an event that arrived before it (none is late), but many are out of order."""
    rng = np.random.default_rng(seed)
    delays = rng.integers(0, lateness_ms, size=len(events))
    order = sorted(range(len(events)), key=lambda k: events[k].timestamp_ms + int(delays[k]))
    return [events[k] for k in order]
