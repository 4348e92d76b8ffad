"""Typed state configuration, validated once at the edge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

HOUR_S = 3600.0
DAY_S = 86400.0


class StateConfig(BaseModel):
    """Half-lives (seconds), history length and priors of the rolling state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_short_half_life_s: float = Field(HOUR_S, gt=0, description="Short-term user half-life, s.")
    user_long_half_life_s: float = Field(
        30 * DAY_S, gt=0, description="Long-term user half-life, s."
    )
    item_short_half_life_s: float = Field(HOUR_S, gt=0, description="Short-term item half-life, s.")
    item_long_half_life_s: float = Field(
        7 * DAY_S, gt=0, description="Long-term item half-life, s."
    )
    recent_events: int = Field(50, ge=1, le=1000, description="Last N events kept per user.")
    beta_prior_alpha: float = Field(1.0, gt=0, description="Beta prior pseudo-engagements.")
    beta_prior_beta: float = Field(1.0, gt=0, description="Beta prior pseudo-non-engagements.")

    @model_validator(mode="after")
    def _short_below_long(self) -> StateConfig:
        if self.user_short_half_life_s > self.user_long_half_life_s:
            raise ValueError("user_short_half_life_s must be <= user_long_half_life_s")
        if self.item_short_half_life_s > self.item_long_half_life_s:
            raise ValueError("item_short_half_life_s must be <= item_long_half_life_s")
        return self
