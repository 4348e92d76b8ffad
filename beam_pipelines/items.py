"""The item metadata contract: bytes (a Pub/Sub message, a catalogue line) in, a
typed item out; what the item pipeline encodes.

A message is a JSON object: ``item_id`` (string, 1..128 chars, required) and
optional ``title`` (≤ 512 chars), ``description`` (≤ 4,096), ``tags`` (a list
of ≤ 32 strings of ≤ 64 chars, or one ``|``-joined string as MovieLens genres),
``topic``, ``creator`` (≤ 128 each), ``duration_ms`` (int ≥ 0, milliseconds)
and ``upload_time`` (RFC 3339 or epoch milliseconds). Other fields are ignored:
catalogue files carry more (the simulator's ground truth), and an upload
service may add its own. The simulator's ``release_ms`` and MovieLens'
``genres`` are read as ``upload_time`` and ``tags``.

``parse_item`` raises only ``ItemValidationError``, whose ``reason`` is one of
the event contract's ``Reason`` codes: one set of dead-letter reasons.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from typing import Any

from beam_pipelines.content.catalog import item_text
from beam_pipelines.events import (
    MAX_ID_CHARS,
    EventValidationError,
    Reason,
    parse_timestamp_ms,
)

MAX_ITEM_BYTES = 32 * 1024
MAX_TITLE_CHARS = 512
MAX_DESCRIPTION_CHARS = 4096
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_NAME_CHARS = 128


class ItemValidationError(EventValidationError):
    """An input that is not valid item metadata; ``reason`` says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class ItemRecord:
    """One item's metadata. ``upload_ms``: epoch milliseconds, None when unknown."""

    item_id: str
    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    topic: str = ""
    creator: str = ""
    duration_ms: int = 0
    upload_ms: int | None = None

    @property
    def text(self) -> str:
        """What the text encoder reads: ``item_text`` of title, tags + topic, description."""
        tags = [*self.tags, self.topic] if self.topic and self.topic not in self.tags else self.tags
        return item_text(self.title, tags, self.description)


def _decode(data: Any) -> dict[str, Any]:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_ITEM_BYTES:
        raise ItemValidationError(Reason.OVERSIZE, f"{len(raw)} bytes > {MAX_ITEM_BYTES}")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ItemValidationError(Reason.NOT_UTF8, str(err)) from None
    except (ValueError, RecursionError) as err:
        raise ItemValidationError(Reason.MALFORMED_JSON, str(err)[:200]) from None
    if not isinstance(obj, dict):
        raise ItemValidationError(Reason.NOT_OBJECT, f"JSON {type(obj).__name__}")
    return obj


def _string(obj: dict[str, Any], name: str, limit: int, required: bool = False) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise ItemValidationError(Reason.MISSING_FIELD, name)
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "item_id":
        value = str(value)  # MovieLens ids are numbers
    if not isinstance(value, str):
        raise ItemValidationError(Reason.BAD_TYPE, f"{name} is {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise ItemValidationError(Reason.EMPTY_FIELD, name)
    if len(value) > limit:
        raise ItemValidationError(Reason.FIELD_TOO_LONG, f"{name}: {len(value)} chars > {limit}")
    return value


def _tags(obj: dict[str, Any]) -> tuple[str, ...]:
    value = obj.get("tags", obj.get("genres"))
    if value is None:
        return ()
    if isinstance(value, str):
        value = [t for t in value.split("|") if t and t != "(no genres listed)"]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ItemValidationError(Reason.BAD_TYPE, "tags must be a list of strings")
    if len(value) > MAX_TAGS:
        raise ItemValidationError(Reason.FIELD_TOO_LONG, f"tags: {len(value)} > {MAX_TAGS}")
    for tag in value:
        if len(tag) > MAX_TAG_CHARS:
            raise ItemValidationError(Reason.FIELD_TOO_LONG, f"tag of {len(tag)} chars")
    return tuple(t.strip() for t in value if t.strip())


def _duration(obj: dict[str, Any]) -> int:
    value = obj.get("duration_ms")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ItemValidationError(Reason.BAD_TYPE, f"duration_ms must be an int >= 0: {value!r}")
    return value


def _upload_ms(obj: dict[str, Any]) -> int | None:
    value = obj.get("upload_time", obj.get("release_ms"))
    if value is None:
        return None
    try:
        return parse_timestamp_ms(value)
    except EventValidationError as err:
        raise ItemValidationError(Reason.BAD_TIMESTAMP, err.detail) from None


def parse_item(data: bytes | str) -> ItemRecord:
    """Validated item metadata from one JSON message (see the module docstring)."""
    obj = _decode(data)
    return ItemRecord(
        item_id=_string(obj, "item_id", MAX_ID_CHARS, required=True),
        title=_string(obj, "title", MAX_TITLE_CHARS),
        description=_string(obj, "description", MAX_DESCRIPTION_CHARS),
        tags=_tags(obj),
        topic=_string(obj, "topic", MAX_NAME_CHARS),
        creator=_string(obj, "creator", MAX_NAME_CHARS),
        duration_ms=_duration(obj),
        upload_ms=_upload_ms(obj),
    )


MOVIELENS_COLUMNS = ("movieId", "title", "genres")


def movielens_line_to_json(line: bytes) -> bytes:
    """A ``movies.csv`` data line as an item message (``movieId`` → ``item_id``,
    ``genres`` → ``tags``). A line that is not CSV passes through unchanged, so
    the parser dead-letters it with its reason rather than this step failing."""
    try:
        fields = next(csv.reader([line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return line
    record: dict[str, Any] = dict(zip(MOVIELENS_COLUMNS, fields, strict=False))
    record["item_id"] = record.pop("movieId", None) or None
    return json.dumps(record, ensure_ascii=False).encode("utf-8")
