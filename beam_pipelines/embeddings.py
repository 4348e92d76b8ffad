"""Item-embedding tables: the exported model table, or hashed random vectors.

Before any model exists every item gets a deterministic pseudo-random unit vector
derived from a hash of its id, so the pipeline runs from day one; once a model is
exported its Parquet table (columns ``item_id``, ``embedding``, ``version``) is
used instead. Loading Parquet needs pyarrow, imported lazily.
"""

from __future__ import annotations

import hashlib

import numpy as np

from feature_repo.features import EMBEDDING_DIM


class HashedEmbeddings:
    """Deterministic unit vectors from a hash of the item id (no model needed).

    A vector costs ~70 µs to draw, so they are cached per process and shared by
    every instance of the same salt and width: runners copy (unpickle) a DoFn and
    what it holds per bundle or per worker, and each copy would start cold.
    """

    _process_caches: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def __init__(self, dim: int = EMBEDDING_DIM, salt: str = "rtp"):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.salt = salt
        self.version = f"hashed-{salt}-d{dim}"
        self._cache = self._process_caches.setdefault((salt, dim), {})

    def __getstate__(self):
        return {"dim": self.dim, "salt": self.salt}

    def __setstate__(self, state) -> None:
        self.__init__(**state)

    def get(self, item_id: str) -> np.ndarray:
        vec = self._cache.get(item_id)
        if vec is None:
            digest = hashlib.blake2b(f"{self.salt}:{item_id}".encode(), digest_size=8).digest()
            rng = np.random.default_rng(int.from_bytes(digest, "little"))
            vec = rng.standard_normal(self.dim)
            vec /= np.linalg.norm(vec)
            vec.flags.writeable = False  # shared by every user of the cache
            if len(self._cache) < 1_000_000:
                self._cache[item_id] = vec
        return vec

    __call__ = get


# Optional Parquet schema metadata: the event time (epoch ms, as text) from which a
# table applies. Switching by event time makes a replay pick the same version for
# the same events as the live job did. Absent: 0, i.e. as soon as it is found.
ACTIVE_FROM_KEY = b"active_from_ms"


class TableEmbeddings:
    """An exported item-embedding table; unknown items have no embedding."""

    def __init__(self, table: dict[str, np.ndarray], version: str, active_from_ms: int = 0):
        """``active_from_ms``: event time (epoch ms) from which the table applies."""
        if not table:
            raise ValueError("embedding table is empty")
        dims = {len(v) for v in table.values()}
        if len(dims) != 1:
            raise ValueError(f"embedding table has mixed widths {sorted(dims)}")
        self.dim = dims.pop()
        self.version = version
        self.active_from_ms = active_from_ms
        self._table = table

    def get(self, item_id: str) -> np.ndarray | None:
        return self._table.get(item_id)

    __call__ = get

    def __len__(self) -> int:
        return len(self._table)

    @classmethod
    def from_parquet(cls, path) -> TableEmbeddings:
        """From a Parquet path or an open binary file."""
        import pyarrow.parquet as pq

        arrow = pq.read_table(path, columns=["item_id", "embedding", "version"])
        active_from = (arrow.schema.metadata or {}).get(ACTIVE_FROM_KEY, b"0")
        table = arrow.to_pydict()
        versions = set(table["version"])
        if len(versions) != 1:
            raise ValueError(f"{path}: expected one version, found {sorted(versions)}")
        vectors = {
            item: np.asarray(vec, dtype=np.float64)
            for item, vec in zip(table["item_id"], table["embedding"], strict=True)
        }
        return cls(vectors, versions.pop(), int(active_from))


ItemEmbeddings = HashedEmbeddings | TableEmbeddings
