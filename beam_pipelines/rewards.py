"""Reward function: a typed, versioned config mapping an event to ``(reward, engaged)``.

A config maps each event type to a rule. Unknown keys anywhere are an error
(pydantic ``extra="forbid"``), so a typo in a YAML file fails at load time.
"""

from __future__ import annotations

import pathlib
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from beam_pipelines.events import EngagementEvent


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConstantRule(_Rule):
    """A fixed reward for every event of this type (like, share, skip, ...)."""

    kind: Literal["constant"] = "constant"
    reward: float = Field(description="Reward of the event.")
    engaged: bool = Field(description="Whether the event counts as an engagement.")


class WatchRatioRule(_Rule):
    """Reward = watch_ms / item_duration_ms, clipped to [clip_min, clip_max]."""

    kind: Literal["watch_ratio"] = "watch_ratio"
    clip_min: float = Field(0.0, description="Lower clip of the watch ratio.")
    clip_max: float = Field(1.5, description="Upper clip of the watch ratio.")
    engaged_min_ratio: float = Field(0.5, description="Unclipped ratio from which it is engaged.")
    missing: float = Field(0.0, description="Reward when watch_ms or the duration is absent.")

    @model_validator(mode="after")
    def _ordered(self) -> WatchRatioRule:
        if self.clip_min > self.clip_max:
            raise ValueError("clip_min must be <= clip_max")
        return self


class WatchThresholdRule(_Rule):
    """Reward ``above`` if watch_ms >= threshold_ms (engaged), else ``below``."""

    kind: Literal["watch_threshold"] = "watch_threshold"
    threshold_ms: int = Field(30_000, ge=0, description="Listening time threshold, milliseconds.")
    above: float = Field(1.0, description="Reward at or above the threshold.")
    below: float = Field(-0.5, description="Reward below it (counts as a skip).")


class RatingRule(_Rule):
    """Reward = (context[key] - center) / scale; engaged when the reward is > 0."""

    kind: Literal["rating"] = "rating"
    key: str = Field("rating", description="Context key holding the rating.")
    center: float = Field(3.0, description="Neutral rating.")
    scale: float = Field(2.0, gt=0, description="Rating distance that maps to reward 1.")


Rule = Annotated[
    ConstantRule | WatchRatioRule | WatchThresholdRule | RatingRule,
    Field(discriminator="kind"),
]


class RewardConfig(BaseModel):
    """Event type → rule, plus which event types count as exposures (impressions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Preset or surface name.")
    version: int = Field(1, ge=1, description="Bump when the mapping changes.")
    rules: dict[str, Rule] = Field(description="Rule per event type; other types are invalid.")
    exposure_event_types: tuple[str, ...] = Field(
        (),
        description="Types that count as an item exposure; empty: every event is one.",
    )
    conversion_event_types: tuple[str, ...] = Field(
        (),
        description="Types whose engaged events are an exposure's success for the item's Beta "
        "posterior (at most one per exposure); empty: every engaged event.",
    )

    interaction_event_types: tuple[str, ...] = Field(
        (),
        description="Types that are an interaction whatever their reward (a MovieLens rating: "
        "the user watched the film); other types are interactions when engaged. Interactions "
        "feed co-engagement and are what the replay evaluation predicts.",
    )

    @model_validator(mode="after")
    def _exposures_known(self) -> RewardConfig:
        if not self.rules:
            raise ValueError("rules must name at least one event type")
        for name in ("exposure_event_types", "conversion_event_types", "interaction_event_types"):
            unknown = set(getattr(self, name)) - set(self.rules)
            if unknown:
                raise ValueError(f"{name} not in rules: {sorted(unknown)}")
        return self

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self.rules)

    def is_exposure(self, event_type: str) -> bool:
        return not self.exposure_event_types or event_type in self.exposure_event_types

    def is_interaction(self, event_type: str, engaged: bool) -> bool:
        return engaged or event_type in self.interaction_event_types

    def is_conversion(self, event_type: str, engaged: bool) -> bool:
        types = self.conversion_event_types
        return engaged and (not types or event_type in types)

    def reward(self, event: EngagementEvent) -> tuple[float, bool]:
        """``(reward, engaged)`` of one event; KeyError for a type without a rule."""
        return compute_reward(self.rules[event.event_type], event)


def compute_reward(rule: _Rule, event: EngagementEvent) -> tuple[float, bool]:
    if isinstance(rule, ConstantRule):
        return rule.reward, rule.engaged
    if isinstance(rule, WatchRatioRule):
        if event.watch_ms is None or not event.item_duration_ms:
            return rule.missing, False
        ratio = event.watch_ms / event.item_duration_ms
        return min(max(ratio, rule.clip_min), rule.clip_max), ratio >= rule.engaged_min_ratio
    if isinstance(rule, WatchThresholdRule):
        if (event.watch_ms or 0) >= rule.threshold_ms:
            return rule.above, True
        return rule.below, False
    if isinstance(rule, RatingRule):
        value = (event.context or {}).get(rule.key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return 0.0, False
        reward = (float(value) - rule.center) / rule.scale
        return reward, reward > 0
    raise TypeError(f"unknown rule {type(rule).__name__}")


def _constant(reward: float, engaged: bool) -> ConstantRule:
    return ConstantRule(reward=reward, engaged=engaged)


SHORT_VIDEO = RewardConfig(
    name="short_video",
    rules={
        "impression": _constant(0.0, False),
        "view": WatchRatioRule(clip_min=0.0, clip_max=1.5),
        "like": _constant(1.0, True),
        "share": _constant(2.0, True),
        "follow": _constant(2.0, True),
        "skip": _constant(-0.5, False),
        "hide": _constant(-2.0, False),
    },
    exposure_event_types=("impression",),
    conversion_event_types=("view",),  # an engaged view (watch ratio >= 0.5) per impression
)

MUSIC = RewardConfig(
    name="music",
    rules={
        "stream": WatchThresholdRule(threshold_ms=30_000, above=1.0, below=-0.5),
        "skip": _constant(-0.5, False),
        "save": _constant(1.5, True),
    },
    exposure_event_types=("stream", "skip"),
    conversion_event_types=("stream",),  # a stream of 30 s or more
)

MOVIELENS = RewardConfig(
    name="movielens",
    rules={"rating": RatingRule(center=3.0, scale=2.0)},
    interaction_event_types=("rating",),
)

PRESETS: dict[str, RewardConfig] = {c.name: c for c in (SHORT_VIDEO, MUSIC, MOVIELENS)}


def load_reward_config(source: str | pathlib.Path | dict[str, Any] | RewardConfig) -> RewardConfig:
    """A preset name, a YAML file path, a dict or a config → a validated config."""
    if isinstance(source, RewardConfig):
        return source
    if isinstance(source, dict):
        return RewardConfig.model_validate(source)
    if isinstance(source, str) and source in PRESETS:
        return PRESETS[source]
    path = pathlib.Path(source)
    if not path.exists():
        raise ValueError(
            f"reward config {source!r} is neither a preset {sorted(PRESETS)} nor a file"
        )
    return RewardConfig.model_validate(yaml.safe_load(path.read_text()))
