"""The service's parts wired together, with a start/stop lifecycle, readiness and
model-version following."""

from __future__ import annotations

import logging
import pathlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from feature_repo.store import FeatureStoreClient, StoreUnavailableError
from serving import fallbacks as fb
from serving.backends import ModelUnavailableError, make_backend, model_names
from serving.batching import BatchingBackend
from serving.catalog import ItemCatalog, load_catalog, resolve_version
from serving.config import InProcessModelsConfig, ModelsConfig, ServingConfig
from serving.events import EventPublisher
from serving.features import ItemFeatureCache, ItemSnapshot, LazyStore
from serving.metrics import ServingMetrics
from serving.model_set import ModelSet
from serving.new_items import NewItemsCache
from serving.recommender import Parts, Recommender

if TYPE_CHECKING:
    from models.ann import Ann

LOG = logging.getLogger(__name__)
RETIRE_AFTER_S = 30.0  # an old version's clients stay open this long for requests in flight


class Service:
    """Models, stores, caches and the recommender of one ``ServingConfig``.

    ``start`` fails only when nothing could ever be served: no complete model
    version under the model base, or in-process models that do not load. A store
    or model server that is down at start-up degrades to the fallbacks and is
    retried while the service runs. Unless the version is pinned, a newer complete
    version is picked up every ``models.reload_s`` seconds, once it opens (for TF
    Serving: once the server has loaded it).
    """

    def __init__(
        self,
        config: ServingConfig,
        metrics: ServingMetrics | None = None,
        rng: Callable[[str], np.random.Generator] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or ServingMetrics()
        self.state = config.state
        self._rng = rng
        self.store: LazyStore | None = None
        self.popular = fb.PopularList(config.fallback.popular_cache_path)
        self.publisher: EventPublisher | None = None
        self.recommender: Recommender | None = None
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._retiring: list[threading.Timer] = []

    @property
    def models(self) -> ModelSet | None:
        return self.recommender.parts.models if self.recommender else None

    @property
    def items(self) -> ItemFeatureCache | None:
        return self.recommender.parts.items if self.recommender else None

    def start(self) -> None:
        config = self.config
        version = resolve_version(config.model_base, config.models.version)
        if self.popular.load():
            LOG.info("popular list loaded from %s", self.popular.path)
        self.store = LazyStore(lambda: FeatureStoreClient(config.store))
        try:
            self.store.client()
        except StoreUnavailableError as e:
            LOG.warning("feature store unavailable at start-up: %s", e)
        parts = self._load(version, strict=isinstance(config.models, InProcessModelsConfig))
        self.popular.model_items = fb.load_model_popular(config.model_base, version)
        if config.pubsub_topic:
            self.publisher = EventPublisher(config.pubsub_topic)
            self.publisher.open()
        self.recommender = Recommender(
            self.store,
            parts.models,
            parts.items,
            self.popular,
            config.ranking,
            config.fallback,
            self.state,
            rng=self._rng,
            new_items=parts.new_items,
        )
        self.metrics.model_version.set(version)
        if config.models.version is None and config.models.reload_s is not None:
            self._follower = threading.Thread(target=self._follow, name="versions", daemon=True)
            self._follower.start()

    def _load(self, version: int, strict: bool) -> Parts:
        """Models (opened; with ``strict`` an open failure raises) and item features of
        ``version``, the item snapshot (and the new items, if configured) read once
        and refreshed in the background."""
        config = self.config
        catalog = load_catalog(config.model_base, version)
        models_config = self._models_config(version)
        backend = make_backend(models_config, config.model_base, version)
        names = model_names(models_config)
        batching = models_config.batching
        if batching.enabled:
            backend = BatchingBackend(
                backend,
                names[0],
                batching.signatures,
                batching.max_batch_size,
                batching.batch_timeout_ms / 1000,
                on_batch=self.metrics.observe_batch,
            )
        models = ModelSet(
            backend,
            catalog,
            *names,
            score_output=config.ranking.score_output,
            ann=self._ann(names[0], version),
        )
        try:
            models.open()
        except ModelUnavailableError as e:
            if strict:
                models.close()
                raise
            LOG.warning("model server not ready, serving the embedding fallback: %s", e)
        reader_config = config.store.model_copy(update={"apply_on_open": False})
        items = ItemFeatureCache(
            catalog,
            lambda: FeatureStoreClient(reader_config),
            config.items.refresh_s,
            config.items.batch_size,
            on_refresh=lambda snapshot: self._update_popular(catalog, snapshot),
        )
        items.refresh()
        items.start()
        new_items = None
        if config.new_items is not None:
            new_items = NewItemsCache(
                catalog, lambda: FeatureStoreClient(reader_config), config.new_items
            )
            new_items.refresh()
            new_items.start()
        return Parts(models, items, new_items)

    def _ann(self, retrieval_model: str, version: int) -> Ann | None:
        """The retrieval model's ANN index of ``version`` (``models.ann``), read from
        ``model_base`` whatever the backend: with TF Serving the service needs the same
        export (as it does for the item table). None without one or with ``use_ann`` off."""
        if not self.config.models.use_ann:
            return None
        from models import ann

        index = ann.read(pathlib.Path(self.config.model_base) / retrieval_model / str(version))
        if index is not None:
            LOG.info("%s v%s: %s", retrieval_model, version, index.manifest)
        return index

    def _models_config(self, version: int) -> ModelsConfig:
        """The configured models; in-process, a version exported without the
        configured retrieval model (e.g. no sequential retriever) serves its two-tower."""
        models = self.config.models
        path = pathlib.Path(self.config.model_base) / models.retrieval_model / str(version)
        if isinstance(models, InProcessModelsConfig) and not path.is_dir():
            LOG.info(
                "no %s model in version %s: serving retrieval", models.retrieval_model, version
            )
            return models.model_copy(update={"retrieval_model": "retrieval"})
        return models

    def _update_popular(self, catalog: ItemCatalog, snapshot: ItemSnapshot) -> None:
        scores = fb.popularity(snapshot, snapshot.read_at_ms, self.state)
        top = fb.top_items(catalog.item_ids, scores, self.config.fallback.popular_size)
        if top:
            self.popular.update(top, snapshot.read_at_ms)
        self.metrics.item_features_age.set_function(
            lambda: max(time.time() - snapshot.read_at_ms / 1000.0, 0.0)
        )

    def _follow(self) -> None:
        interval = self.config.models.reload_s
        assert interval is not None
        while not self._stop.wait(interval):
            try:
                self.follow_once()
            except Exception:  # the thread must survive anything a bad export does
                LOG.exception("checking for a new model version failed")

    def follow_once(self) -> bool:
        """Switch to the newest complete version if it is newer and opens; True if so."""
        assert self.recommender is not None
        current = self.recommender.parts.models.version
        try:
            newest = resolve_version(self.config.model_base)
        except LookupError:
            return False
        if newest <= current:
            return False
        try:
            parts = self._load(newest, strict=True)
        except (ModelUnavailableError, OSError, ValueError) as e:
            LOG.info("model version %s not served yet: %s", newest, e)
            return False
        old = self.recommender.swap(parts.models, parts.items, parts.new_items)
        self.popular.model_items = fb.load_model_popular(self.config.model_base, newest)
        self.metrics.model_version.set(newest)
        LOG.info("now serving model version %s (was %s)", newest, current)
        timer = threading.Timer(RETIRE_AFTER_S, _retire, args=(old,))
        timer.daemon = True
        timer.start()
        self._retiring.append(timer)
        return True

    def readiness(self) -> dict[str, str]:
        """``{"models": ..., "store": ..., "popular": ...}``, each ``"ok"`` or why not
        (``popular``: a popular list to fall back on, from the store's items, the
        cache file or the model version's training popularity)."""
        status = {}
        try:
            models = self.models
            if models is None:
                raise ModelUnavailableError("not started")
            if not models.ready:
                models.open()
            models.backend.check()
            status["models"] = "ok"
        except ModelUnavailableError as e:
            status["models"] = str(e)
        try:
            if self.store is None:
                raise StoreUnavailableError("not started")
            self.store.ping()
            status["store"] = "ok"
        except StoreUnavailableError as e:
            status["store"] = str(e)
        status["popular"] = "ok" if self.popular.available else "no popular list"
        return status

    def stop(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=30)
        for timer in self._retiring:  # retiring twice is harmless
            timer.cancel()
            _retire(*timer.args)
        if self.recommender is not None:
            _retire(self.recommender.parts)
        if self.publisher is not None:
            self.publisher.close()
        if self.store is not None:
            self.store.close()


def _retire(parts: Parts) -> None:
    parts.items.stop()
    if parts.new_items is not None:
        parts.new_items.stop()
    parts.models.close()
