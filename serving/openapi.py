"""The service's OpenAPI document, served at ``GET /openapi.json``.

Written out rather than derived by FastAPI: the handlers read their parameters
and bodies themselves (the recommendation path skips FastAPI's per-request
dependency resolution, the events path validates with the pipeline's parser), so
FastAPI would document none of them. ``tests/unit/test_serving_openapi.py`` keeps
it true: every route is documented, and schemathesis checks that the answers
conform to it.
"""

from __future__ import annotations

from typing import Any

from beam_pipelines.events import (
    DEFAULT_EVENT_TYPES,
    MAX_CONTEXT_KEY_CHARS,
    MAX_CONTEXT_KEYS,
    MAX_CONTEXT_VALUE_CHARS,
    MAX_ID_CHARS,
    MIN_TIMESTAMP_MS,
)
from serving.config import LimitsConfig

OPENAPI_PATH = "/openapi.json"

# An identifier: 1 to MAX_ID_CHARS characters, no C0/C1 control characters (the
# service rejects them). Lone surrogates (a JSON "\ud800" escape), which the service
# also rejects, are no Unicode text: no JSON Schema string holds one.
_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"


def _id(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_CHARS,
        "pattern": _ID_PATTERN,
        "description": description,
    }


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _error(description: str, codes: list[str], **extra: Any) -> dict[str, Any]:
    schema = {"allOf": [{"$ref": "#/components/schemas/Error"}], "description": ", ".join(codes)}
    schema["properties"] = {"error": {"enum": codes}}
    return _json(schema, description, **extra)


def _schemas(limits: LimitsConfig) -> dict[str, Any]:
    nullable_string = {"type": ["string", "null"]}
    context_value = {
        "type": ["string", "number", "boolean"],
        "maxLength": MAX_CONTEXT_VALUE_CHARS,
    }
    whole_ms = {"type": ["integer", "null"], "minimum": 0, "maximum": 10**13}
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string", "description": "A stable code."},
                "message": {"type": "string", "description": "What was wrong, for a person."},
                "rejected": {
                    "type": "array",
                    "description": "Every invalid event of a rejected body (invalid_event).",
                    "items": {
                        "type": "object",
                        "required": ["index", "reason", "detail"],
                        "additionalProperties": False,
                        "properties": {
                            "index": {"type": "integer", "minimum": 0},
                            "reason": {"type": "string"},
                            "detail": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Recommendations": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "request_id",
                "user_id",
                "surface",
                "k",
                "items",
                "model_version",
                "feature_age_s",
                "fallback",
                "fallback_reason",
                "fallback_detail",
                "experiment",
                "variant",
            ],
            "properties": {
                "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "user_id": {"type": "string"},
                "surface": nullable_string,
                "k": {"type": "integer", "minimum": 1, "maximum": limits.max_k},
                "items": {
                    "type": "array",
                    "maxItems": limits.max_k,
                    "description": "Best first; at most k.",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["item_id", "score", "source"],
                        "properties": {
                            "item_id": {"type": "string"},
                            "score": {"type": ["number", "null"]},
                            "source": {
                                "type": "string",
                                "description": "ranked, explore, popular or new_item.",
                            },
                        },
                    },
                },
                "model_version": {"type": ["integer", "null"]},
                "feature_age_s": {"type": ["number", "null"], "description": "Seconds."},
                "fallback": {
                    **nullable_string,
                    "description": "The fallback taken, null when the models answered.",
                },
                "fallback_reason": nullable_string,
                "fallback_detail": nullable_string,
                "experiment": nullable_string,
                "variant": nullable_string,
            },
        },
        "Event": {
            "type": "object",
            "description": "An engagement event (the pipeline's contract, "
            "beam_pipelines.events). The timestamp may be at most 24 h ahead of the "
            "service's clock, and watch_ms at most 10 x item_duration_ms.",
            "additionalProperties": False,
            "required": ["event_id", "user_id", "item_id", "event_type", "timestamp"],
            "properties": {
                "event_id": _id("Unique per event: redeliveries are deduplicated by it."),
                "user_id": _id("The user."),
                "item_id": _id("The item."),
                "event_type": {"enum": sorted(DEFAULT_EVENT_TYPES)},
                "timestamp": {
                    "description": "Event time: epoch milliseconds, or RFC 3339 with an offset.",
                    "oneOf": [
                        {"type": "number", "minimum": MIN_TIMESTAMP_MS},
                        {"type": "string", "format": "date-time"},
                    ],
                },
                "watch_ms": whole_ms,
                "item_duration_ms": {
                    "type": ["integer", "null"],
                    "exclusiveMinimum": 0,
                    "maximum": 10**13,
                },
                "surface": {**_id("Where it happened."), "type": ["string", "null"]},
                "context": {
                    "type": ["object", "null"],
                    "maxProperties": MAX_CONTEXT_KEYS,
                    "propertyNames": {
                        "maxLength": MAX_CONTEXT_KEY_CHARS,
                    },
                    "additionalProperties": context_value,
                },
            },
        },
    }


def openapi_document(limits: LimitsConfig, token: bool) -> dict[str, Any]:
    """The document for a service with these limits, with or without a bearer token."""
    unauthorized = {"401": _error("Missing or wrong bearer token.", ["unauthorized"])}
    secured = unauthorized if token else {}
    overloaded = {
        "Retry-After": {
            "description": "Seconds to wait before retrying (overloaded only).",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }
    recommendations = {
        "summary": "Ranked items for a user",
        "parameters": [
            {"name": "user_id", "in": "query", "required": True, "schema": _id("The user.")},
            {
                "name": "k",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": limits.max_k,
                    "default": limits.default_k,
                },
            },
            {"name": "surface", "in": "query", "required": False, "schema": _id("Where shown.")},
        ],
        "responses": {
            "200": _json({"$ref": "#/components/schemas/Recommendations"}, "Recommendations."),
            "400": _error(
                "A parameter is unknown, repeated, missing or invalid.",
                [
                    "unknown_parameter",
                    "repeated_parameter",
                    "missing_parameter",
                    "invalid_parameter",
                ],
            ),
            **secured,
            "503": _error(
                "Overloaded (shed at once, with Retry-After), or nothing at all to serve.",
                ["overloaded", "unavailable"],
                headers=overloaded,
            ),
        },
    }
    event = {"$ref": "#/components/schemas/Event"}
    events = {
        "summary": "Publish engagement events",
        "description": f"One event or an array of 1 to {limits.max_events}; one invalid "
        f"event rejects the whole body. At most {limits.max_body_bytes} bytes.",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            event,
                            {
                                "type": "array",
                                "items": event,
                                "minItems": 1,
                                "maxItems": limits.max_events,
                            },
                        ]
                    }
                }
            },
        },
        "responses": {
            "202": _json(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["accepted", "message_ids"],
                    "properties": {
                        "accepted": {"type": "integer", "minimum": 1},
                        "message_ids": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Published to Pub/Sub.",
            ),
            "400": _error("An invalid event (every one listed).", ["invalid_event"]),
            **secured,
            "413": _error("The body is too large.", ["body_too_large"]),
            "503": _error(
                "No Pub/Sub topic configured, or Pub/Sub did not acknowledge in time.",
                ["events_disabled", "publish_failed"],
            ),
        },
    }
    readiness = {
        "type": "object",
        "required": ["ready", "degraded"],
        "properties": {"ready": {"type": "boolean"}, "degraded": {"type": "boolean"}},
        "additionalProperties": {"type": "string", "description": "A component's status."},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "rtp recommendations",
            "version": "1",
            "description": "Errors are JSON {error, message}. An unknown path answers 404 "
            "not_found and a method a path does not serve 405 method_not_allowed.",
        },
        "paths": {
            "/v1/recommendations": {"get": recommendations},
            "/v1/events": {"post": events},
            "/healthz": {
                "get": {
                    "summary": "The process answers",
                    "security": [],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            },
                            "Alive.",
                        )
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Something can be served",
                    "responses": {
                        "200": _json(readiness, "Ready (possibly degraded)."),
                        **secured,
                        "503": _json(readiness, "Nothing can be served."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **secured,
                    },
                }
            },
            OPENAPI_PATH: {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": _json({"type": "object"}, "OpenAPI 3.1."),
                        **secured,
                    },
                }
            },
        },
        "components": {"schemas": _schemas(limits)},
    }
    if token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
