"""What shapes the simulated stream: ``SimulatorConfig``, the kinds of dirty line
and the reason the pipeline must give each. Times are epoch milliseconds (UTC)
unless a name says otherwise."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from beam_pipelines.events import EventValidationError, Reason, parse_timestamp_ms

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SECOND_MS = 1000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class DirtyKind(str, enum.Enum):
    """Kinds of dirty line the simulator inserts; see ``EXPECTED_REASON``."""

    MALFORMED_JSON = "malformed_json"
    JSON_ARRAY = "json_array"
    MISSING_USER_ID = "missing_user_id"
    EMPTY_ITEM_ID = "empty_item_id"
    ID_TOO_LONG = "id_too_long"
    CONTROL_CHAR_ID = "control_char_id"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_1990 = "timestamp_1990"
    NEGATIVE_WATCH_MS = "negative_watch_ms"
    WATCH_EXCEEDS_DURATION = "watch_exceeds_duration"
    OVERSIZE = "oversize"
    INVALID_UTF8 = "invalid_utf8"
    DUPLICATE = "duplicate"
    LATE = "late"


EXPECTED_REASON: dict[DirtyKind, Reason] = {
    DirtyKind.MALFORMED_JSON: Reason.MALFORMED_JSON,
    DirtyKind.JSON_ARRAY: Reason.NOT_OBJECT,
    DirtyKind.MISSING_USER_ID: Reason.MISSING_FIELD,
    DirtyKind.EMPTY_ITEM_ID: Reason.EMPTY_FIELD,
    DirtyKind.ID_TOO_LONG: Reason.FIELD_TOO_LONG,
    DirtyKind.CONTROL_CHAR_ID: Reason.CONTROL_CHARACTERS,
    DirtyKind.UNKNOWN_EVENT_TYPE: Reason.UNKNOWN_EVENT_TYPE,
    DirtyKind.BAD_TIMESTAMP: Reason.BAD_TIMESTAMP,
    DirtyKind.TIMESTAMP_1990: Reason.TIMESTAMP_OUT_OF_RANGE,
    DirtyKind.NEGATIVE_WATCH_MS: Reason.NEGATIVE_WATCH_MS,
    DirtyKind.WATCH_EXCEEDS_DURATION: Reason.WATCH_EXCEEDS_DURATION,
    DirtyKind.OVERSIZE: Reason.OVERSIZE,
    DirtyKind.INVALID_UTF8: Reason.NOT_UTF8,
    DirtyKind.DUPLICATE: Reason.DUPLICATE,
    DirtyKind.LATE: Reason.LATE,
}


class SimulatorConfig(BaseModel):
    """Everything that shapes the stream. Same config (seed included) → same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_events: int = Field(
        10_000, ge=0, description="Clean events to emit; dirty lines come on top."
    )
    n_users: int = Field(1_000, ge=1, description="Number of users.")
    n_items: int = Field(5_000, ge=1, description="Number of items in the catalog.")
    n_topics: int = Field(20, ge=4, le=1000, description="Number of latent topics.")
    min_interests: int = Field(2, ge=1, description="Fewest topics a user starts interested in.")
    max_interests: int = Field(3, ge=1, description="Most topics a user starts interested in.")
    drift_rate_per_h: float = Field(
        0.005,
        ge=0,
        description="Gradual drift, 1/hour: between sessions a share 1-exp(-rate*gap_h) of the "
        "interest mass moves towards the user's drift target topic.",
    )
    shift_probability: float = Field(
        0.03, ge=0, le=1, description="Probability of an abrupt interest shift at a session start."
    )
    shift_strength: float = Field(
        0.7,
        gt=0.5,
        le=1,
        description="Share of interest mass an abrupt shift puts on the new topic (> 0.5, so the "
        "new topic becomes the top one).",
    )
    start_ms: int = Field(
        DEFAULT_START_MS, description="Stream start, epoch ms (RFC 3339 strings accepted)."
    )
    seed: int = Field(0, ge=0, description="Seed of every random draw.")
    dirty_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction of output lines that are dirty."
    )
    dirty_kinds: tuple[DirtyKind, ...] = Field(
        tuple(DirtyKind), min_length=1, description="Dirty kinds to draw from, uniformly."
    )
    late_by_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="A late line's event time is this many seconds before its user's newest event "
        "time. Keep it above the pipeline's allowed lateness (10 minutes by default).",
    )
    session_items_mean: float = Field(
        15.0, ge=1, description="Mean items shown per session (geometric)."
    )
    session_gap_median_s: float = Field(
        3 * 3600.0, gt=0, description="Median gap between a user's sessions, seconds (log-normal)."
    )
    session_gap_sigma: float = Field(1.0, ge=0, description="Log-space sigma of the session gap.")
    first_session_spread_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="First sessions start uniformly in this many seconds after start.",
    )
    feed_interest_share: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Share of feed slots filled from the user's interests (as the feed knew "
        "them one session ago); the rest are popular items.",
    )
    zipf_exponent: float = Field(
        1.0, gt=0, description="Exponent of the Zipf base popularity by rank."
    )
    catalog_age_days: float = Field(
        30.0, ge=0, description="Items are released from this many days before start..."
    )
    release_horizon_days: float = Field(
        7.0, ge=0, description="...to this many days after start, uniformly."
    )
    popularity_rise_h: float = Field(
        6.0, gt=0, description="Rise time constant of an item's popularity, hours."
    )
    popularity_decay_median_h: float = Field(
        72.0,
        gt=0,
        description="Median decay time constant of an item's popularity, hours (log-normal).",
    )
    evergreen_floor: float = Field(
        0.05, ge=0, description="Popularity multiplier an item keeps forever after its release."
    )
    duration_median_s: float = Field(
        20.0, gt=0, description="Median item duration, seconds (log-normal)."
    )
    duration_sigma: float = Field(0.6, ge=0, description="Log-space sigma of the item duration.")
    min_duration_s: float = Field(5.0, gt=0, description="Shortest item, seconds.")
    max_duration_s: float = Field(90.0, gt=0, description="Longest item, seconds.")
    web_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of users on the web client, which sends RFC 3339 timestamps.",
    )

    @field_validator("start_ms", mode="before")
    @classmethod
    def _start_from_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            try:
                return parse_timestamp_ms(value)
            except EventValidationError as err:
                raise ValueError(f"start_ms: {err.detail}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SimulatorConfig:
        if not self.min_interests <= self.max_interests <= self.n_topics - 3:
            raise ValueError("need min_interests <= max_interests <= n_topics - 3")
        if self.min_duration_s > self.max_duration_s:
            raise ValueError("min_duration_s must be <= max_duration_s")
        return self

    @property
    def dirty_lines(self) -> int:
        """Dirty lines so that they are ``dirty_fraction`` of all lines."""
        return round(self.n_events * self.dirty_fraction / (1 - self.dirty_fraction))
