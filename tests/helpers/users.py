"""A ``user_realtime`` row as the streaming job writes it, for serving tests."""

from __future__ import annotations

from feature_repo import features as f


def user_row(user: str, recent: list[str], now_ms: int) -> dict:
    n = len(recent)
    return {
        f.USER_KEY: user,
        f.EVENT_TIMESTAMP: now_ms,
        "user_emb_short": [],
        "user_emb_long": [],
        "user_embedding_version": "",
        "user_event_count": n,
        "user_events_short": float(n),
        "user_events_long": float(n),
        "user_reward_rate_short": 1.0,
        "user_reward_rate_long": 1.0,
        "user_engagement_rate_short": 1.0,
        "user_engagement_rate_long": 1.0,
        "user_last_event_ms": now_ms,
        "user_recent_items": recent,
        "user_recent_ts_ms": [now_ms - 60_000 * k for k in range(n)],
        "user_recent_rewards": [1.0] * n,
    }
