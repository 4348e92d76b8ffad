"""Typed configuration of the recommendation service, validated once at the edge.

Every model is ``extra="forbid"``, so a misspelt key fails at start-up with its
name. The model backend is chosen by ``models.type`` (``inprocess``, ``grpc``,
``rest``). Times are seconds unless a name says otherwise; ``*_ms`` are epoch
milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
    model_validator,
)

from beam_pipelines.events import DEFAULT_EVENT_TYPES
from beam_pipelines.experiments.config import CANDIDATE_SOURCES, CandidateSource, ExperimentsConfig
from beam_pipelines.state.config import StateConfig
from feature_repo.store import SqliteStoreConfig, StoreConfig, read_yaml_mapping
from models.blend import BLEND_CANDIDATES, BLEND_WEIGHT

TOPIC_PATTERN = r"^projects/[^/]+/topics/[^/]+$"
SQLITE_TIMEOUT_S = 0.5  # seconds per call to the embedded SQLite store (a local file)
TOKEN_ENV = "RTP_SERVE_TOKEN"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class BatchingConfig(_Config):
    """Request batching (``serving.batching``): concurrent requests' calls of the
    retrieval model's per-user signatures merged into one call, as TF Serving's
    ``--enable_batching`` does server-side. Pays only with ``limits.workers`` > 1."""

    enabled: bool = False
    """Batch the calls of ``signatures``."""

    signatures: tuple[str, ...] = ("candidate_rows", "query", "rank_candidates")
    """Signatures of the retrieval model whose calls are batched."""

    max_batch_size: int = Field(8, ge=1, le=1024)
    """Most requests' calls merged into one model call."""

    batch_timeout_ms: float = Field(0.0, ge=0, le=1000)
    """How long a batch waits to fill, milliseconds. 0: batches form only from
    requests that arrived while the previous call ran (no added latency)."""


class _ModelBackendBase(_Config):
    retrieval_model: str = "sequential"
    """Model name of the retrieval SavedModel (directory under the model base): the
    sequential retriever by default; ``retrieval`` is the two-tower. In-process, a
    version exported without a sequential model serves its two-tower instead."""

    ranker_model: str = "ranker"
    """Model name of the ranker SavedModel."""

    signature: str = "serving_default"
    """Signature called on both models."""

    use_ann: bool = True
    """Search the retrieval model's ANN index when its version has one (exported for
    large catalogues, ``models.ann``), reading it from the model base whatever the
    backend; False: the brute-force signature always."""

    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    """Request batching of the retrieval model's calls."""

    version: int | None = Field(None, ge=0)
    """Pin this model version; None follows the newest complete version."""

    reload_s: float | None = Field(30.0, gt=0)
    """Seconds between looks for a newer complete version (not with a pinned one); it
    is served once it opens (TF Serving: once the server has loaded it). None keeps
    the start-up version until a restart."""

    timeout_s: float | None = Field(0.25, gt=0)
    """Bound in seconds on one model call; past it the request degrades to the
    embedding fallback. None waits as long as the call takes."""


class InProcessModelsConfig(_ModelBackendBase):
    """Embedded default: the SavedModels loaded into the service process."""

    type: Literal["inprocess"] = "inprocess"
    """Backend selector."""

    timeout_s: float | None = Field(None, gt=0)
    """Bound in seconds on one model call. A call cannot be cancelled: it finishes in
    a worker thread while the request falls back. None (default) calls inline."""

    intra_op_threads: int | None = Field(1, ge=1)
    """TensorFlow threads splitting one op; None: TensorFlow's default (one per core).
    1 (default) suits a latency service: the ops of a 500-candidate ranker call are
    too small to gain from splitting, and idle pool threads spin (15–40% more CPU
    per call measured); concurrent requests and ``--workers`` use the other cores.
    Set before TensorFlow first runs in the process."""

    fused: bool = True
    """Run retrieval, the recent-item filter and the ranker as one TensorFlow call
    (``serving.fused``), same answer as the separate calls a model server gets, with
    less Python per request. False: the separate calls."""

    inter_op_threads: int | None = Field(1, ge=1)
    """TensorFlow threads running independent ops and function calls at once;
    None: TensorFlow's default (one per core). 1 (default): one model call at a
    time per process, beside the request threads' Python (itself one core at a
    time, the GIL); scale out with ``--workers``."""


class GrpcModelsConfig(_ModelBackendBase):
    """TF Serving over gRPC (``PredictionService``)."""

    type: Literal["grpc"] = "grpc"
    """Backend selector."""

    address: str = Field("127.0.0.1:8500", min_length=3)
    """``host:port`` of TF Serving's gRPC port."""

    max_message_bytes: int = Field(64 * 1024 * 1024, gt=0)
    """Largest request or response message, bytes."""


class RestModelsConfig(_ModelBackendBase):
    """TF Serving over its REST API (``/v1/models/<name>[/versions/<v>]:predict``)."""

    type: Literal["rest"] = "rest"
    """Backend selector."""

    url: str = Field("http://127.0.0.1:8501", pattern=r"^https?://")
    """Base URL of TF Serving's REST port."""


def _models_type(value: Any) -> str | None:
    """The ``type`` selector; a mapping without one is the in-process default."""
    if isinstance(value, Mapping):
        return value.get("type", "inprocess")
    return getattr(value, "type", None)


ModelsConfig = Annotated[
    Annotated[InProcessModelsConfig, Tag("inprocess")]
    | Annotated[GrpcModelsConfig, Tag("grpc")]
    | Annotated[RestModelsConfig, Tag("rest")],
    Discriminator(_models_type),
]


class RankingConfig(_Config):
    """Candidate generation, ranking and the post-ranking steps."""

    candidates: int = Field(500, ge=1, le=10_000)
    """Candidates taken from retrieval (at most what the export returns) and scored
    by the ranker in one call."""

    score_output: str | None = None
    """Ranker output used as the relevance score; None picks the first of
    ``engagement_probability``, ``engagement_logit``, ``score``, ``scores`` the
    signature has, else its only float output."""

    order: Literal["auto", "blend", "ranker"] = "auto"
    """How candidates are ordered. With the sequential retriever the candidates are
    its top rows and the streaming co-engagement source's (``blend_candidates`` of
    each); ``blend`` orders them by ``models.blend`` (co-engagement cosine +
    ``blend_weight`` × P_seq), ``ranker`` by the candidate ranker exported with the
    model (``models.candidate_ranker``: log P(engage) + w · E[reward | engage]).
    ``auto`` follows the version's own measurement: the order that scored better on
    its training run's validation events (``model_info.json``), else ``blend``.
    With the two-tower retriever, ``ranker`` and ``auto`` order its candidates by
    the DCN ranker."""

    blend_weight: float = Field(BLEND_WEIGHT, ge=0.0)
    """Weight of the sequential model's probability in the blend."""

    blend_candidates: int = Field(BLEND_CANDIDATES, ge=1, le=10_000)
    """Rows taken from each source before blending."""

    candidate_sources: tuple[CandidateSource, ...] = Field(CANDIDATE_SOURCES, min_length=1)
    """Sources of the blend's candidates (sequential stack): ``retriever`` (the
    sequential model's top rows) and ``coengagement`` (the streaming co-engagement
    rows); an experiment's variant may keep one. The two-tower stack has one source,
    its retriever, whatever this says."""

    exclude_recent: int = Field(50, ge=0, le=1000)
    """Drop the user's last N engaged-with items (``user_recent_items``); 0 keeps them."""

    explore_share: float = Field(0.1, ge=0.0, le=1.0)
    """Share of the k slots filled by Thompson sampling on item Beta posteriors."""

    diversity_weight: float = Field(0.2, ge=0.0, le=1.0)
    """MMR weight λ: 0 ranks by relevance alone, 1 by dissimilarity alone."""

    seed: int | None = None
    """Seed of the exploration RNG; with a seed each request draws from
    ``(seed, user_id)``, so a request is reproducible. None: fresh entropy."""


class FallbackConfig(_Config):
    """When and how the service degrades instead of failing."""

    max_feature_age_s: float = Field(30 * 86400.0, gt=0)
    """A user whose newest event is older than this (seconds) counts as stale and
    gets trending/popular items."""

    popular_size: int = Field(1000, ge=1, le=100_000)
    """Items kept in the popular/trending list."""

    popular_cache_path: str | None = None
    """JSON file keeping the last popular list, read at start-up when the store is
    down. None: next to nothing, in memory only."""

    breaker_failures: int = Field(3, ge=1)
    """Consecutive model failures that open the circuit breaker."""

    breaker_cooldown_s: float = Field(2.0, gt=0)
    """While open, requests skip the model server for this long (seconds)."""


class ItemsConfig(_Config):
    """Item features: read in bulk in the background, shared by every request."""

    refresh_s: float = Field(30.0, gt=0)
    """Seconds between background re-reads of every catalogue item's features."""

    batch_size: int = Field(256, ge=1, le=10_000)
    """Items per store read during a refresh."""


class NewItemsConfig(_Config):
    """Items uploaded after the served model version, recommended by content
    (``serving.new_items``): their ids come from the item pipeline's item table,
    their vectors from the ``item_content`` view, both read in the background."""

    table_path: str = Field(min_length=1)
    """The item table directory ``rtp items`` writes (``<out>/items``: a local
    path or a URI pyarrow opens, e.g. ``gs://bucket/items``)."""

    refresh_s: float = Field(5.0, gt=0)
    """Seconds between looks for new item-table files (only files not read yet are
    read) and store reads of their items' content vectors."""

    catalog_refresh_s: float = Field(600.0, gt=0)
    """Seconds between re-reads of the catalogue items' content vectors (the
    profile side: what a user's recent items are about)."""

    max_items: int = Field(2000, ge=1, le=200_000)
    """New items kept, newest upload first: the rows of the per-request
    matrix-vector product (384 float32 each for MiniLM). 2000 rows (3 MB) stay in
    cache: 0.2-0.6 ms a request on the loaded 2-core machine (``best_new_items``);
    5000 rows spilled out of it, 2-5 ms."""

    slots: int = Field(2, ge=0, le=100)
    """Slots of a top-k reserved for the best new items (never more than half of
    k); 0 turns the source off without removing its reads."""

    min_cosine: float = Field(0.3, ge=-1.0, le=1.0)
    """A new item takes a slot only if the cosine of its content vector with the
    user's content profile reaches this."""

    profile_items: int = Field(10, ge=1, le=1000)
    """The user's newest recent items whose content vectors are averaged into the
    profile."""

    batch_size: int = Field(256, ge=1, le=10_000)
    """Items per store read during a refresh."""

    prior: Literal["content_neighbours", "none"] = "content_neighbours"
    """How the slots are given among the new items that reach ``min_cosine``.
    ``content_neighbours``: Thompson sampling, as exploration does for catalogue
    items, on a Beta posterior whose prior comes from the item's content neighbours
    in the catalogue (``serving.new_item_prior``) plus the item's own engagements;
    the draws choose among the ``candidates_per_slot`` × slots best by cosine.
    ``none``: the best by cosine alone (no posterior, no draw, no extra reads)."""

    neighbours: int = Field(10, ge=1, le=1000)
    """Catalogue items nearest by content cosine whose posteriors make a new item's
    prior (found once per new item, in the background refresh)."""

    prior_strength: float = Field(10.0, gt=0, le=10_000)
    """Pseudo-observations of the neighbour prior: α0 = s·m, β0 = s·(1 − m) for the
    neighbours' mean engagement rate m. The item's own evidence outweighs it after
    about this many exposures."""

    candidates_per_slot: int = Field(3, ge=1, le=100)
    """With the neighbour prior: new items by cosine per reserved slot among which
    the Thompson draws choose (1: the cosine's choice, reordered by the draws). It
    bounds how far below the best cosine exploration reaches, and the per-request
    cost (slots × this × ``neighbours`` posteriors)."""


class LimitsConfig(_Config):
    """Request bounds; a request outside them gets a 4xx naming the limit."""

    default_k: int = Field(20, ge=1)
    """k when the request does not give one."""

    max_k: int = Field(1000, ge=1)
    """Largest k accepted."""

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    """Largest request body (``POST /v1/events``), bytes."""

    max_events: int = Field(500, ge=1)
    """Largest number of events in one ``POST /v1/events``."""

    workers: int = Field(1, ge=1, le=256)
    """Recommendations computed at once (threads). Under the GIL a process computes
    one request's Python at a time whatever the count, and two threads only slowed
    each other (``benchmarks.bench_overload``); ``rtp serve --workers N`` processes
    are the parallelism. Two may help with a remote store, whose reads wait on the
    network."""

    max_waiting: int = Field(8, ge=0, le=100_000)
    """Recommendation requests that may wait for a worker (served newest first); a
    request arriving at a full queue sheds the oldest waiter (503 ``overloaded`` with
    ``Retry-After``). 0: shed whenever every worker is busy."""

    max_wait_ms: float = Field(10.0, ge=0, le=60_000)
    """Longest a request waits for a worker, milliseconds (about two unloaded
    requests); past it, it is shed. This, not the queue's length, bounds the latency
    of accepted requests; shorter sheds more at moderate load (``serving.admission``)."""

    retry_after_s: int = Field(1, ge=1)
    """``Retry-After`` (seconds) of a shed request."""


class ExposuresConfig(_Config):
    """Exposure events: one per item a response shows, published to ``pubsub_topic``
    (``serving.exposures``) off the request path. Without a topic nothing is logged."""

    enabled: bool = True
    """Log exposures when a topic is configured."""

    event_type: str = "impression"
    """Event type of an exposure: one the reward config counts as an exposure
    (``RewardConfig.exposure_event_types``; ``impression`` in the short-video preset)."""

    capacity: int = Field(20_000, ge=1)
    """Exposures held in memory waiting to be published; a response's exposures that
    would pass it are dropped (and counted)."""

    batch_size: int = Field(500, ge=1, le=1000)
    """Exposures per publish call (Pub/Sub takes at most 1000 messages per request)."""

    interval_s: float = Field(0.05, gt=0, le=10)
    """Seconds between drains of the buffer by the publishing thread."""

    @model_validator(mode="after")
    def _known_type(self) -> ExposuresConfig:
        if self.event_type not in DEFAULT_EVENT_TYPES:
            raise ValueError(
                f"exposures.event_type {self.event_type!r} is not an event type of the "
                f"contract {sorted(DEFAULT_EVENT_TYPES)}"
            )
        return self


class ServingConfig(_Config):
    """Everything ``rtp serve`` needs."""

    model_base: str
    """Model base: ``<name>/<version>/`` SavedModels and ``item_embeddings/<version>/``."""

    models: ModelsConfig = Field(default_factory=InProcessModelsConfig)
    """Where the retrieval and ranker models run."""

    store: StoreConfig = Field(
        default_factory=lambda: SqliteStoreConfig(timeout_s=SQLITE_TIMEOUT_S)
    )
    """Online feature store (``feature_repo.store``); by default SQLite at
    ``feature_repo.store.DEFAULT_SQLITE_PATH``, where the jobs write by default."""

    ranking: RankingConfig = Field(default_factory=RankingConfig)
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    items: ItemsConfig = Field(default_factory=ItemsConfig)
    new_items: NewItemsConfig | None = None
    """Content candidates for items newer than the model version; None: off."""

    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    state: StateConfig = Field(default_factory=StateConfig)
    """Half-lives and priors of the pipeline's rolling state (must match the
    pipeline's): used to bring decayed item statistics forward to now."""

    token: SecretStr | None = None
    """Bearer token required on every endpoint but ``/healthz``; None: open."""

    pubsub_topic: str | None = Field(None, pattern=TOPIC_PATTERN)
    """``projects/P/topics/T`` for ``POST /v1/events`` and exposure events; None
    disables both."""

    exposures: ExposuresConfig = Field(default_factory=ExposuresConfig)

    experiments: ExperimentsConfig | None = None
    """Online experiments (``beam_pipelines.experiments.config``); None: everyone
    gets the configuration above."""


_SERVING_CONFIG: TypeAdapter[ServingConfig] = TypeAdapter(ServingConfig)


def load_serving_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> ServingConfig:
    """Validated config from a mapping or a YAML file (``${VAR}`` expanded)."""
    if isinstance(source, Mapping):
        return _SERVING_CONFIG.validate_python(dict(source))
    return _SERVING_CONFIG.validate_python(
        read_yaml_mapping(source, "a mapping of serving settings")
    )
