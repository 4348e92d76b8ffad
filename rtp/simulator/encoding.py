"""A simulated event as a line of the event contract (``beam_pipelines.events``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from rtp.simulator.behaviour import SessionEvent, User
from rtp.simulator.catalogue import Catalogue

SURFACE = "short_video_feed"


def rfc3339(ms: int) -> str:
    """Epoch ms → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (exact, no float rounding)."""
    seconds, millis = divmod(ms, 1000)
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


def event_object(
    catalog: Catalogue,
    user: User,
    event: SessionEvent,
    event_id: str,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": event_id,
        "user_id": user.user_id,
        "item_id": catalog.item_ids[event.item],
        "event_type": event.event_type,
        "timestamp": rfc3339(event.ts) if user.device == "web" else event.ts,
    }
    if event.watch_ms is not None:
        obj["watch_ms"] = event.watch_ms
        obj["item_duration_ms"] = catalog.duration(event.item)
    obj["surface"] = SURFACE
    obj["context"] = context or {
        "session_id": event.session_id,
        "position": event.position,
        "device": user.device,
    }
    return obj
