"""Attribution: which exposure an engagement belongs to.

An exposure is an event of the exposure type (the service logs ``impression``)
whose ``context`` carries the ``request_id`` of the response that showed the item
(and ``position``, ``experiment``, ``variant``). Any other event with a reward rule
is an outcome: it is attributed to the most recent exposure of the same item to the
same user at or before it, if that exposure is at most ``window_ms`` older;
otherwise it is not attributed (``no_exposure``, or ``late``). The same item shown
twice in one response (the same ``request_id`` and item) is one exposure, the
earlier one. Times are epoch milliseconds.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from collections.abc import Iterable

from beam_pipelines.events import EngagementEvent
from beam_pipelines.experiments.assignment import parse_context
from beam_pipelines.rewards import RewardConfig

DAY_MS = 86_400_000
DEFAULT_WINDOW_MS = DAY_MS
EXPOSURE_TYPE = "impression"


@dataclasses.dataclass(frozen=True, slots=True)
class Exposure:
    """One item shown in one response."""

    request_id: str
    user_id: str
    item_id: str
    timestamp_ms: int
    position: int | None
    pairs: tuple[tuple[str, str], ...]
    """``(experiment, variant)`` per layer the user was in (empty: none)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """A scored non-exposure event (``RewardConfig.reward``)."""

    user_id: str
    item_id: str
    timestamp_ms: int
    reward: float
    engaged: bool


@dataclasses.dataclass(slots=True)
class Attributed:
    """An exposure with the outcomes attributed to it."""

    exposure: Exposure
    reward: float = 0.0
    engaged: bool = False
    outcomes: int = 0


def exposure_of(event: EngagementEvent, exposure_type: str = EXPOSURE_TYPE) -> Exposure | None:
    """The exposure an event records, None if it is not a logged exposure."""
    context = event.context or {}
    request_id = context.get("request_id")
    if event.event_type != exposure_type or not isinstance(request_id, str):
        return None
    position = context.get("position")
    return Exposure(
        request_id,
        event.user_id,
        event.item_id,
        event.timestamp_ms,
        position if isinstance(position, int) and not isinstance(position, bool) else None,
        tuple(parse_context(context)),
    )


def split_events(
    events: Iterable[EngagementEvent],
    rewards: RewardConfig,
    exposure_type: str = EXPOSURE_TYPE,
) -> tuple[list[Exposure], list[Outcome], collections.Counter[str]]:
    """Exposures and scored outcomes of an event stream, with counts of the rest
    (``unlogged_exposures``: exposure-type events without a request id, e.g. a
    client's own impressions; ``no_reward_rule``: a type the reward config lacks)."""
    exposures: list[Exposure] = []
    outcomes: list[Outcome] = []
    skipped: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.event_type == exposure_type:
            exposure = exposure_of(event, exposure_type)
            if exposure is None:
                skipped["unlogged_exposures"] += 1
            else:
                exposures.append(exposure)
        elif event.event_type in rewards.rules:
            reward, engaged = rewards.reward(event)
            outcomes.append(
                Outcome(event.user_id, event.item_id, event.timestamp_ms, reward, engaged)
            )
        else:
            skipped["no_reward_rule"] += 1
    return exposures, outcomes, skipped


def attribute(
    exposures: Iterable[Exposure],
    outcomes: Iterable[Outcome],
    window_ms: int = DEFAULT_WINDOW_MS,
) -> tuple[list[Attributed], collections.Counter[str]]:
    """Every distinct exposure with its attributed outcomes (in time order), and the
    counts ``duplicate_exposures``, ``attributed``, ``no_exposure`` and ``late``."""
    counts: collections.Counter[str] = collections.Counter()
    first: dict[tuple[str, str], Exposure] = {}
    for e in exposures:
        key = (e.request_id, e.item_id)
        kept = first.get(key)
        if kept is not None:
            counts["duplicate_exposures"] += 1
        if kept is None or e.timestamp_ms < kept.timestamp_ms:
            first[key] = e
    attributed = sorted(
        (Attributed(e) for e in first.values()),
        key=lambda a: (a.exposure.timestamp_ms, a.exposure.request_id, a.exposure.item_id),
    )
    shown: dict[tuple[str, str], list[Attributed]] = collections.defaultdict(list)
    for a in attributed:  # time order, so each list is sorted by time
        shown[(a.exposure.user_id, a.exposure.item_id)].append(a)
    times = {key: [a.exposure.timestamp_ms for a in group] for key, group in shown.items()}
    for o in outcomes:
        key = (o.user_id, o.item_id)
        at = bisect.bisect_right(times.get(key, []), o.timestamp_ms) - 1
        if at < 0:
            counts["no_exposure"] += 1
            continue
        target = shown[key][at]
        if o.timestamp_ms - target.exposure.timestamp_ms > window_ms:
            counts["late"] += 1
            continue
        counts["attributed"] += 1
        target.reward += o.reward
        target.engaged = target.engaged or o.engaged
        target.outcomes += 1
    return attributed, counts
