"""Feast objects (entities, sources, feature views) built from ``features.py``.

Offline layout (what the backfill job writes and Feast's file offline store reads)::

    <offline_dir>/
        user_realtime/*.parquet    user_id, event_timestamp, every USER_FEATURES column
        item_realtime/*.parquet    item_id, event_timestamp, every ITEM_FEATURES column
        item_embedding/*.parquet   item_id, event_timestamp, every ITEM_EMBEDDING_FEATURES column
        item_content/*.parquet     item_id, event_timestamp, every ITEM_CONTENT_FEATURES column

Each view is one directory (``features.offline_view_dir``) holding any number of
Parquet files; ``event_timestamp`` is a UTC timestamp column (``timestamp[ms, UTC]``
or finer) and list features are Parquet lists. ``offline_dir`` is a local path or a
URI (``gs://...``); local paths are made absolute because Feast resolves relative
FileSource paths against a repo directory we do not have.

``user_realtime`` and ``item_realtime`` are fed online by push sources (the streaming
job); ``item_embedding`` is written at model export through ``write_to_online_store``;
``item_content`` by the item pipeline (``rtp items``) through the store client.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bytes, FeastType, Float32, Int64, String

from feature_repo import features as f

FEAST_TYPES: dict[str, FeastType] = {
    f.FLOAT: Float32,
    f.INT: Int64,
    f.STRING: String,
    f.FLOAT_LIST: Array(Float32),
    f.INT_LIST: Array(Int64),
    f.STRING_LIST: Array(String),
    f.BYTES: Bytes,
}

# The realtime views hold decayed state as of the entity's last event: it stays
# meaningful for weeks (the readers apply the remaining decay), so the TTL only
# bounds how far back a point-in-time join looks. 90 days keeps returning users
# and slow items in training data without joining rows from another era. (Feast
# 0.67 does not apply the TTL to online reads: an older row is still served.)
REALTIME_TTL = timedelta(days=90)
# Embeddings are valid until the model version changes (tagged by
# item_embedding_version), not until some age; Feast reads timedelta(0) as "no limit".
EMBEDDING_TTL = timedelta(0)

USER = Entity(name=f.USER_ENTITY, join_keys=[f.USER_KEY], value_type=ValueType.STRING)
ITEM = Entity(name=f.ITEM_ENTITY, join_keys=[f.ITEM_KEY], value_type=ValueType.STRING)
STATE = Entity(name=f.STATE_ENTITY, join_keys=[f.STATE_KEY], value_type=ValueType.STRING)
EXPERIMENT = Entity(
    name=f.EXPERIMENT_ENTITY, join_keys=[f.EXPERIMENT_GROUP_KEY], value_type=ValueType.STRING
)


def feast_schema(view: str) -> list[Field]:
    """Feast fields of one view, in the order of ``features.FEATURE_VIEWS``."""
    _, schema = f.FEATURE_VIEWS[view]
    return [Field(name=name, dtype=FEAST_TYPES[kind]) for name, kind in schema.items()]


def file_source(offline_dir: str, view: str) -> FileSource:
    """Parquet history of ``view`` under ``offline_dir`` (see the module docstring)."""
    if "://" not in offline_dir:
        offline_dir = os.path.abspath(offline_dir)
    return FileSource(
        name=f"{view}_history",
        path=f.offline_view_dir(offline_dir, view),
        timestamp_field=f.EVENT_TIMESTAMP,
    )


def _view(view: str, entity: Entity, source: Any, ttl: timedelta) -> FeatureView:
    return FeatureView(
        name=view,
        entities=[entity],
        schema=feast_schema(view),
        source=source,
        ttl=ttl,
        online=True,
    )


def build_definitions(offline_dir: str) -> list[Any]:
    """All Feast objects of the repository, reading offline history from ``offline_dir``."""

    def push(name: str, view: str) -> PushSource:
        """The push source ``name`` of a streamed view, its history in ``offline_dir``."""
        return PushSource(name=name, batch_source=file_source(offline_dir, view))

    user_push = push(f.USER_PUSH_SOURCE, f.USER_REALTIME)
    item_push = push(f.ITEM_PUSH_SOURCE, f.ITEM_REALTIME)
    embeddings = file_source(offline_dir, f.ITEM_EMBEDDING)
    user_pairs = push(f.USER_COENGAGEMENT_PUSH_SOURCE, f.USER_COENGAGEMENT)
    item_pairs = push(f.ITEM_COENGAGEMENT_PUSH_SOURCE, f.ITEM_COENGAGEMENT)
    keyed_state = push(f.KEYED_STATE_PUSH_SOURCE, f.KEYED_STATE)
    content = file_source(offline_dir, f.ITEM_CONTENT)
    experiment_metrics = push(f.EXPERIMENT_METRICS_PUSH_SOURCE, f.EXPERIMENT_METRICS)
    user_experiments = push(f.USER_EXPERIMENTS_PUSH_SOURCE, f.USER_EXPERIMENTS)
    return [
        USER,
        ITEM,
        STATE,
        EXPERIMENT,
        keyed_state,
        user_push,
        item_push,
        embeddings,
        user_pairs,
        item_pairs,
        content,
        experiment_metrics,
        user_experiments,
        _view(f.USER_REALTIME, USER, user_push, REALTIME_TTL),
        _view(f.ITEM_REALTIME, ITEM, item_push, REALTIME_TTL),
        _view(f.ITEM_EMBEDDING, ITEM, embeddings, EMBEDDING_TTL),
        _view(f.USER_COENGAGEMENT, USER, user_pairs, REALTIME_TTL),
        _view(f.ITEM_COENGAGEMENT, ITEM, item_pairs, REALTIME_TTL),
        _view(f.KEYED_STATE, STATE, keyed_state, REALTIME_TTL),
        # Valid until the encoder changes (item_content_version), as embeddings.
        _view(f.ITEM_CONTENT, ITEM, content, EMBEDDING_TTL),
        _view(f.EXPERIMENT_METRICS, EXPERIMENT, experiment_metrics, REALTIME_TTL),
        _view(f.USER_EXPERIMENTS, USER, user_experiments, REALTIME_TTL),
    ]
