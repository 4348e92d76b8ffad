"""Feature names and types: defined once here, imported by the pipeline, the
training code and the service.

Units: every ``*_ms`` value is epoch milliseconds (UTC). Decayed values are
exponentially decayed sums as of the entity's newest event time
(``*_last_event_ms``), with the half-lives of ``beam_pipelines.state.config``.

This module imports nothing from Feast so that Beam workers and the service can
use the names without the Feast SDK; ``feature_repo.definitions`` turns the
schema below into Feast objects.
"""

from __future__ import annotations

USER_ENTITY = "user"
USER_KEY = "user_id"
ITEM_ENTITY = "item"
ITEM_KEY = "item_id"
STATE_ENTITY = "state_key"
STATE_KEY = "state_key"

USER_REALTIME = "user_realtime"
ITEM_REALTIME = "item_realtime"
ITEM_EMBEDDING = "item_embedding"
USER_COENGAGEMENT = "user_coengagement"
ITEM_COENGAGEMENT = "item_coengagement"
KEYED_STATE = "keyed_state"
ITEM_CONTENT = "item_content"

USER_PUSH_SOURCE = "user_realtime_push"
ITEM_PUSH_SOURCE = "item_realtime_push"
USER_COENGAGEMENT_PUSH_SOURCE = "user_coengagement_push"
ITEM_COENGAGEMENT_PUSH_SOURCE = "item_coengagement_push"
KEYED_STATE_PUSH_SOURCE = "keyed_state_push"

# Column holding the event time of a feature row (Feast's timestamp_field).
EVENT_TIMESTAMP = "event_timestamp"

# Value types, mapped to Feast types in feature_repo.definitions.
FLOAT = "float"
INT = "int"
STRING = "string"
FLOAT_LIST = "float_list"
INT_LIST = "int_list"
STRING_LIST = "string_list"
BYTES = "bytes"

# Default embedding width of the hashed-random item table and the models.
EMBEDDING_DIM = 32

# user_realtime: written by UpdateUserState.
USER_FEATURES: dict[str, str] = {
    "user_emb_short": FLOAT_LIST,  # reward-weighted pooled item embedding, short half-life
    "user_emb_long": FLOAT_LIST,  # same, long half-life
    "user_embedding_version": STRING,  # item-embedding table version of the two above
    "user_event_count": INT,  # all accepted events, not decayed
    "user_events_short": FLOAT,  # decayed event count, short half-life
    "user_events_long": FLOAT,  # decayed event count, long half-life
    "user_reward_rate_short": FLOAT,  # decayed reward sum / decayed count
    "user_reward_rate_long": FLOAT,
    "user_engagement_rate_short": FLOAT,  # decayed engaged count / decayed count
    "user_engagement_rate_long": FLOAT,
    "user_last_event_ms": INT,
    "user_recent_items": STRING_LIST,  # last N items, newest first
    "user_recent_ts_ms": INT_LIST,
    "user_recent_rewards": FLOAT_LIST,
}

# item_realtime: written by UpdateItemState.
ITEM_FEATURES: dict[str, str] = {
    "item_event_count": INT,  # all accepted events, not decayed
    "item_impressions_short": FLOAT,  # decayed exposures, short half-life
    "item_impressions_long": FLOAT,
    "item_engagements_short": FLOAT,  # decayed engaged events
    "item_engagements_long": FLOAT,
    "item_reward_sum_short": FLOAT,
    "item_reward_sum_long": FLOAT,
    "item_beta_alpha": FLOAT,  # Beta posterior of engagement, long half-life
    "item_beta_beta": FLOAT,
    "item_trending": FLOAT,  # short engagement rate over long, ~1 at steady state
    "item_last_event_ms": INT,
}

# item_embedding: written at model export (or from the hashed-random table).
ITEM_EMBEDDING_FEATURES: dict[str, str] = {
    "item_embedding": FLOAT_LIST,
    "item_embedding_version": STRING,
}

# user_coengagement / item_coengagement: written by UpdateCoEngagement
# (beam_pipelines.state.coengagement): a user's pair window, an item's neighbour row.
USER_COENGAGEMENT_FEATURES: dict[str, str] = {
    "user_interacted_items": STRING_LIST,  # last distinct interacted items, newest first
}
ITEM_COENGAGEMENT_FEATURES: dict[str, str] = {
    "item_neighbors": STRING_LIST,  # items co-engaged with this one, largest count first
    "item_neighbor_pairs": FLOAT_LIST,  # their pair counts (distinct users, windowed)
}

# keyed_state: the streaming job's per-key state (beam_pipelines.restore), written
# with each feature row so that a restarted job resumes it. Not a feature: the
# service and training never read it. ``state_key`` is ``<stage>:<entity id>``.
KEYED_STATE_FEATURES: dict[str, str] = {
    "state": BYTES,  # the stage's encoded state, applied event ids included
}

# item_content: written by the item pipeline (beam_pipelines.item_job) from item
# metadata, before any interaction: a pretrained encoder's vector of the item's text.
ITEM_CONTENT_FEATURES: dict[str, str] = {
    "item_content_embedding": FLOAT_LIST,  # unit vector, width of the encoder (384 for MiniLM)
    "item_content_version": STRING,  # the encoder's name, e.g. all-MiniLM-L6-v2@gt-0.1.0
}

FEATURE_VIEWS: dict[str, tuple[str, dict[str, str]]] = {
    USER_REALTIME: (USER_KEY, USER_FEATURES),
    ITEM_REALTIME: (ITEM_KEY, ITEM_FEATURES),
    ITEM_EMBEDDING: (ITEM_KEY, ITEM_EMBEDDING_FEATURES),
    USER_COENGAGEMENT: (USER_KEY, USER_COENGAGEMENT_FEATURES),
    ITEM_COENGAGEMENT: (ITEM_KEY, ITEM_COENGAGEMENT_FEATURES),
    KEYED_STATE: (STATE_KEY, KEYED_STATE_FEATURES),
    ITEM_CONTENT: (ITEM_KEY, ITEM_CONTENT_FEATURES),
}


def feature_refs(view: str) -> list[str]:
    """Feast feature references (``view:name``) of one feature view."""
    _, features = FEATURE_VIEWS[view]
    return [f"{view}:{name}" for name in features]


def offline_view_dir(offline_dir: str, view: str) -> str:
    """Directory of a feature view's offline Parquet history: ``<offline_dir>/<view>``.

    The backfill job writes any number of ``*.parquet`` files there (one row per
    entity and event time, the columns of ``FEATURE_VIEWS[view]`` plus the join key
    and ``EVENT_TIMESTAMP``); Feast's file offline store reads the directory whole.
    ``offline_dir`` may be a local path or a URI such as ``gs://bucket/offline``.
    """
    if view not in FEATURE_VIEWS:
        raise ValueError(f"unknown feature view {view!r}; known: {sorted(FEATURE_VIEWS)}")
    return f"{offline_dir.rstrip('/')}/{view}"
