"""Where the pipeline gets item embeddings, refreshed while the job runs.

Layout written at model export: ``<model_base>/item_embeddings/<version>/item_embeddings.parquet``,
on any Beam filesystem (local, ``gs://``)
(``version`` an integer, as TF Serving numbers model versions). A version directory
whose table is missing or unreadable is skipped with a logged reason. With no
model base, or before any version exists, items get hashed random vectors.
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.embeddings import HashedEmbeddings, TableEmbeddings
from feature_repo.features import EMBEDDING_DIM

LOG = logging.getLogger(__name__)
TABLE_DIR = "item_embeddings"
TABLE_FILE = "item_embeddings.parquet"


def table_path(model_base: str | pathlib.Path, version: int | str) -> str:
    """Where version ``version``'s table lives (local path or any Beam filesystem URI)."""
    return FileSystems.join(str(model_base), TABLE_DIR, str(version), TABLE_FILE)


def _versions(model_base: str | pathlib.Path) -> list[str]:
    """Version names (integers as text) with a table file, oldest first."""
    pattern = table_path(model_base, "*")
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as err:  # an unreachable bucket: keep the current table
        LOG.warning("cannot list %s: %s", pattern, err)
        return []
    names = {FileSystems.split(FileSystems.split(m.path)[0])[1] for m in found}
    return sorted((n for n in names if n.isdigit()), key=int)


def load_table(model_base: str | pathlib.Path, version: str) -> TableEmbeddings | None:
    """The table of one version, or None (logged) if it is not usable."""
    path = table_path(model_base, version)
    try:
        with FileSystems.open(path) as handle:
            table = TableEmbeddings.from_parquet(handle)
    except Exception as err:  # a half-written or corrupt export: skip it
        LOG.warning("skipping embedding table %s: %s", path, err)
        return None
    if table.version != version:
        LOG.warning("skipping %s: the table says version %s", path, table.version)
        return None
    return table


def newest_table(model_base: str | pathlib.Path) -> TableEmbeddings | None:
    """The newest loadable table under ``model_base``, or None."""
    for version in reversed(_versions(model_base)):
        table = load_table(model_base, version)
        if table is not None:
            return table
    return None


class _Loaded:
    """Versions known and tables loaded in this process for one model base, shared by
    every handle. ``index``: (version, active_from_ms) of every usable version found,
    oldest first; ``tables``: at most ``EmbeddingSource.KEEP`` of them in memory."""

    def __init__(self):
        self.lock = threading.Lock()
        self.index: list[tuple[str, int]] = []
        self.tables: dict[str, TableEmbeddings] = {}
        self.checked_at = float("-inf")


class EmbeddingSource:
    """Picklable handle to the item-embedding tables under ``model_base``.

    Every ``refresh_s`` seconds it looks for new version directories and loads
    them, without restarting the job. ``current(event_time_ms)`` is the newest
    table already active at that event time (see ``ACTIVE_FROM_KEY``), or hashed
    vectors when there is none. This plays the role of a slowly changing side
    input: the DirectRunner holds a global-window side input back until its
    source finishes, so the refresh lives here, on every runner alike. Loaded
    tables are shared per process: runners re-create DoFns (and this handle)
    per bundle, and must not reload the tables each time.
    """

    KEEP = 3  # tables kept in memory; older ones are reloaded if an event time needs them
    _processes_tables: dict[tuple[str, int], _Loaded] = {}
    _registry_lock = threading.Lock()

    def __init__(
        self, model_base: str | None = None, dim: int = EMBEDDING_DIM, refresh_s: float = 60.0
    ):
        if refresh_s <= 0:
            raise ValueError(f"refresh_s must be > 0 seconds, got {refresh_s}")
        self.model_base = model_base
        self.dim = dim
        self.refresh_s = refresh_s
        self._hashed = HashedEmbeddings(dim)
        with self._registry_lock:
            key = (model_base or "", dim)
            self._loaded = self._processes_tables.setdefault(key, _Loaded())

    def current(self, event_time_ms: int | None = None):
        """The table for an event at ``event_time_ms`` (None: the newest)."""
        self._refresh()
        for version, active_from_ms in reversed(self._loaded.index):
            if event_time_ms is None or active_from_ms <= event_time_ms:
                table = self._loaded.tables.get(version)
                if table is None:
                    table = self._reload(version)
                if table is not None:
                    return table
        return self._hashed

    def _reload(self, version: str) -> TableEmbeddings | None:
        """An evicted version an event time needs again (a replay over many versions)."""
        loaded = self._loaded
        with loaded.lock:
            table = loaded.tables.get(version)
            if table is not None:
                return table
            table = load_table(self.model_base, version)
            if table is None:  # gone or broken since: no event time picks it any more
                loaded.index = [entry for entry in loaded.index if entry[0] != version]
                return None
            LOG.info("item embeddings: reloaded version %s for an older event time", version)
            tables = dict(loaded.tables)
            tables[version] = table
            loaded.tables = _evict(tables, keep=self.KEEP, pinned={version, loaded.index[-1][0]})
            return table

    def _refresh(self) -> None:
        loaded = self._loaded
        now = time.monotonic()
        if not self.model_base or now - loaded.checked_at < self.refresh_s:
            return
        with loaded.lock:
            if now - loaded.checked_at < self.refresh_s:
                return
            loaded.checked_at = now
            index, tables = list(loaded.index), dict(loaded.tables)
            newest = int(index[-1][0]) if index else -1
            for version in _versions(self.model_base):
                if int(version) > newest:
                    table = load_table(self.model_base, version)
                    if table is not None:
                        LOG.info("item embeddings: version %s (%d items)", version, len(table))
                        index.append((version, table.active_from_ms))
                        tables[version] = table
            if index:
                tables = _evict(tables, keep=self.KEEP, pinned={index[-1][0]})
            loaded.index, loaded.tables = index, tables

    def __getstate__(self):
        return {"model_base": self.model_base, "dim": self.dim, "refresh_s": self.refresh_s}

    def __setstate__(self, state) -> None:
        self.__init__(**state)


def _evict(
    tables: dict[str, TableEmbeddings], keep: int, pinned: set[str]
) -> dict[str, TableEmbeddings]:
    """At most ``keep`` tables (but every pinned one), dropping the oldest versions first."""
    drop = sorted((v for v in tables if v not in pinned), key=int)
    excess = max(len(tables) - keep, 0)
    return {v: t for v, t in tables.items() if v not in set(drop[:excess])}
