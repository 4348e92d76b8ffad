"""Feature names and types: defined once here, imported by the pipeline, the
training code and the service. Every view and feature name is a constant of this
module; other modules name features through these constants, never as literals.

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
EXPERIMENT_ENTITY = "experiment_group"
EXPERIMENT_GROUP_KEY = "experiment_group"  # "<experiment>/<variant>/<UTC day or empty>"

USER_REALTIME = "user_realtime"
ITEM_REALTIME = "item_realtime"
ITEM_EMBEDDING = "item_embedding"
USER_COENGAGEMENT = "user_coengagement"
ITEM_COENGAGEMENT = "item_coengagement"
KEYED_STATE = "keyed_state"
ITEM_CONTENT = "item_content"
EXPERIMENT_METRICS = "experiment_metrics"
USER_EXPERIMENTS = "user_experiments"

USER_PUSH_SOURCE = "user_realtime_push"
ITEM_PUSH_SOURCE = "item_realtime_push"
USER_COENGAGEMENT_PUSH_SOURCE = "user_coengagement_push"
ITEM_COENGAGEMENT_PUSH_SOURCE = "item_coengagement_push"
KEYED_STATE_PUSH_SOURCE = "keyed_state_push"
EXPERIMENT_METRICS_PUSH_SOURCE = "experiment_metrics_push"
USER_EXPERIMENTS_PUSH_SOURCE = "user_experiments_push"

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
USER_EMB_SHORT = "user_emb_short"  # reward-weighted pooled item embedding, short half-life
USER_EMB_LONG = "user_emb_long"  # same, long half-life
# The item-embedding table version of the two above.
USER_EMBEDDING_VERSION = "user_embedding_version"
USER_EVENT_COUNT = "user_event_count"  # all accepted events, not decayed
USER_EVENTS_SHORT = "user_events_short"  # decayed event count, short half-life
USER_EVENTS_LONG = "user_events_long"  # decayed event count, long half-life
USER_REWARD_RATE_SHORT = "user_reward_rate_short"  # decayed reward sum / decayed count
USER_REWARD_RATE_LONG = "user_reward_rate_long"
USER_ENGAGEMENT_RATE_SHORT = "user_engagement_rate_short"  # decayed engaged count / decayed count
USER_ENGAGEMENT_RATE_LONG = "user_engagement_rate_long"
USER_LAST_EVENT_MS = "user_last_event_ms"
USER_RECENT_ITEMS = "user_recent_items"  # last N items, newest first
USER_RECENT_TS_MS = "user_recent_ts_ms"
USER_RECENT_REWARDS = "user_recent_rewards"
USER_FEATURES: dict[str, str] = {
    USER_EMB_SHORT: FLOAT_LIST,
    USER_EMB_LONG: FLOAT_LIST,
    USER_EMBEDDING_VERSION: STRING,
    USER_EVENT_COUNT: INT,
    USER_EVENTS_SHORT: FLOAT,
    USER_EVENTS_LONG: FLOAT,
    USER_REWARD_RATE_SHORT: FLOAT,
    USER_REWARD_RATE_LONG: FLOAT,
    USER_ENGAGEMENT_RATE_SHORT: FLOAT,
    USER_ENGAGEMENT_RATE_LONG: FLOAT,
    USER_LAST_EVENT_MS: INT,
    USER_RECENT_ITEMS: STRING_LIST,
    USER_RECENT_TS_MS: INT_LIST,
    USER_RECENT_REWARDS: FLOAT_LIST,
}

# item_realtime: written by UpdateItemState.
ITEM_EVENT_COUNT = "item_event_count"  # all accepted events, not decayed
ITEM_IMPRESSIONS_SHORT = "item_impressions_short"  # decayed exposures, short half-life
ITEM_IMPRESSIONS_LONG = "item_impressions_long"
ITEM_ENGAGEMENTS_SHORT = "item_engagements_short"  # decayed engaged events
ITEM_ENGAGEMENTS_LONG = "item_engagements_long"
ITEM_REWARD_SUM_SHORT = "item_reward_sum_short"
ITEM_REWARD_SUM_LONG = "item_reward_sum_long"
ITEM_BETA_ALPHA = "item_beta_alpha"  # Beta posterior of engagement, long half-life
ITEM_BETA_BETA = "item_beta_beta"
ITEM_TRENDING = "item_trending"  # short engagement rate over long, ~1 at steady state
ITEM_LAST_EVENT_MS = "item_last_event_ms"
ITEM_FEATURES: dict[str, str] = {
    ITEM_EVENT_COUNT: INT,
    ITEM_IMPRESSIONS_SHORT: FLOAT,
    ITEM_IMPRESSIONS_LONG: FLOAT,
    ITEM_ENGAGEMENTS_SHORT: FLOAT,
    ITEM_ENGAGEMENTS_LONG: FLOAT,
    ITEM_REWARD_SUM_SHORT: FLOAT,
    ITEM_REWARD_SUM_LONG: FLOAT,
    ITEM_BETA_ALPHA: FLOAT,
    ITEM_BETA_BETA: FLOAT,
    ITEM_TRENDING: FLOAT,
    ITEM_LAST_EVENT_MS: INT,
}

# item_embedding: written at model export (or from the hashed-random table).
ITEM_EMBEDDING_VECTOR = "item_embedding"  # the vector: named as its view is
ITEM_EMBEDDING_VERSION = "item_embedding_version"
ITEM_EMBEDDING_FEATURES: dict[str, str] = {
    ITEM_EMBEDDING_VECTOR: FLOAT_LIST,
    ITEM_EMBEDDING_VERSION: STRING,
}

# user_coengagement / item_coengagement: written by UpdateCoEngagement
# (beam_pipelines.state.coengagement): a user's pair window, an item's neighbour row.
USER_INTERACTED_ITEMS = "user_interacted_items"  # last distinct interacted items, newest first
USER_COENGAGEMENT_FEATURES: dict[str, str] = {
    USER_INTERACTED_ITEMS: STRING_LIST,
}
ITEM_NEIGHBORS = "item_neighbors"  # items co-engaged with this one, largest count first
ITEM_NEIGHBOR_PAIRS = "item_neighbor_pairs"  # their pair counts (distinct users, windowed)
ITEM_COENGAGEMENT_FEATURES: dict[str, str] = {
    ITEM_NEIGHBORS: STRING_LIST,
    ITEM_NEIGHBOR_PAIRS: FLOAT_LIST,
}

# keyed_state: the streaming job's per-key state (beam_pipelines.restore), written
# with each feature row so that a restarted job resumes it. Not a feature: the
# service and training never read it. ``state_key`` is ``<stage>:<entity id>``.
ENCODED_STATE = "state"  # the stage's encoded state, applied event ids included
KEYED_STATE_FEATURES: dict[str, str] = {
    ENCODED_STATE: BYTES,
}

# item_content: written by the item pipeline (beam_pipelines.item_job) from item
# metadata, before any interaction: a pretrained encoder's vector of the item's text.
# A unit vector, width of the encoder (384 for MiniLM).
ITEM_CONTENT_EMBEDDING = "item_content_embedding"
ITEM_CONTENT_VERSION = "item_content_version"  # the encoder's name, e.g. all-MiniLM-L6-v2@gt-0.1.0
ITEM_CONTENT_FEATURES: dict[str, str] = {
    ITEM_CONTENT_EMBEDDING: FLOAT_LIST,
    ITEM_CONTENT_VERSION: STRING,
}

# experiment_metrics: written by the streaming job's experiment branch
# (beam_pipelines.transforms.experiment_stream) for a dashboard: per experiment,
# variant and UTC day (day "" for the whole run) the columns of
# beam_pipelines.experiments.aggregate.metrics_record, re-written as they change;
# the row's event time is when it was computed (epoch ms). Variant "" is the
# experiment's row (all its variants pooled), which carries the stage's keyed state.
# The SRM p-value is the experiment's on that day (repeated on each of its rows);
# the lifts are relative to the control (0.05: +5 %), NaN on the control's and the
# experiment's rows, with 95 % intervals (beam_pipelines.experiments.report.compare).
EXPERIMENT_NAME = "experiment"
EXPERIMENT_VARIANT = "variant"
EXPERIMENT_ALL_VARIANTS = ""  # the variant of the experiment's row
EXPERIMENT_DAY = "day"
EXPERIMENT_USERS = "users"
EXPERIMENT_EXPOSURES = "exposures"
EXPERIMENT_ENGAGEMENTS = "engagements"  # exposures with an attributed engaged event
EXPERIMENT_REWARD = "reward"  # attributed reward, summed
EXPERIMENT_RATIOS = ("engagement_rate", "reward_per_exposure")  # each with _ci_low/_ci_high
EXPERIMENT_SRM_P_VALUE = "srm_p_value"
# Per ratio: its lift against the control's, and the lift's interval.
EXPERIMENT_LIFTS: dict[str, tuple[str, str, str]] = {
    ratio: (f"{ratio}_lift", f"{ratio}_lift_ci_low", f"{ratio}_lift_ci_high")
    for ratio in EXPERIMENT_RATIOS
}
EXPERIMENT_UPDATES = "updates"  # users' row changes applied: orders two rows of a group
EXPERIMENT_METRICS_FEATURES: dict[str, str] = {
    EXPERIMENT_NAME: STRING,
    EXPERIMENT_VARIANT: STRING,
    EXPERIMENT_DAY: STRING,
    EXPERIMENT_USERS: INT,
    EXPERIMENT_EXPOSURES: INT,
    EXPERIMENT_ENGAGEMENTS: INT,
    EXPERIMENT_REWARD: FLOAT,
    **{
        f"{ratio}{end}": FLOAT for ratio in EXPERIMENT_RATIOS for end in ("", "_ci_low", "_ci_high")
    },
    EXPERIMENT_SRM_P_VALUE: FLOAT,
    **{column: FLOAT for columns in EXPERIMENT_LIFTS.values() for column in columns},
    EXPERIMENT_UPDATES: INT,
}

# user_experiments: written by the experiment branch's per-user stage, whose keyed
# state rides on these rows (restart-safe, as every stage's). Per user: the
# "experiment/variant" pairs of the user's logged exposures, and how many events
# the stage applied (orders two rows of a user).
USER_EXPERIMENT_VARIANTS = "user_experiment_variants"
USER_EXPERIMENT_EVENTS = "user_experiment_events"
USER_EXPERIMENTS_FEATURES: dict[str, str] = {
    USER_EXPERIMENT_VARIANTS: STRING_LIST,
    USER_EXPERIMENT_EVENTS: INT,
}

FEATURE_VIEWS: dict[str, tuple[str, dict[str, str]]] = {
    USER_REALTIME: (USER_KEY, USER_FEATURES),
    ITEM_REALTIME: (ITEM_KEY, ITEM_FEATURES),
    ITEM_EMBEDDING: (ITEM_KEY, ITEM_EMBEDDING_FEATURES),
    USER_COENGAGEMENT: (USER_KEY, USER_COENGAGEMENT_FEATURES),
    ITEM_COENGAGEMENT: (ITEM_KEY, ITEM_COENGAGEMENT_FEATURES),
    KEYED_STATE: (STATE_KEY, KEYED_STATE_FEATURES),
    ITEM_CONTENT: (ITEM_KEY, ITEM_CONTENT_FEATURES),
    EXPERIMENT_METRICS: (EXPERIMENT_GROUP_KEY, EXPERIMENT_METRICS_FEATURES),
    USER_EXPERIMENTS: (USER_KEY, USER_EXPERIMENTS_FEATURES),
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
