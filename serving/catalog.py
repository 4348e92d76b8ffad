"""The item catalogue of one model version: ids and embeddings from the exported table.

``<model_base>/item_embeddings/<version>/item_embeddings.parquet`` (``item_id``,
``embedding``, ``version``) is the retrieval model's own item table: the ranker's
``item_embedding`` input, the space of the users' rolling embeddings, the MMR
similarity and the embedding fallback all use it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Sequence

import numpy as np

TABLE_DIR = "item_embeddings"
TABLE_FILE = "item_embeddings.parquet"
INFO_FILE = "model_info.json"


@dataclasses.dataclass(frozen=True)
class ItemCatalog:
    """Row ``i`` is item ``item_ids[i]``; ``embeddings`` is ``[N, D]`` float32."""

    version: int
    item_ids: np.ndarray
    embeddings: np.ndarray
    index: dict[str, int] = dataclasses.field(repr=False)
    candidate_order: str | None = None
    """How this version's training measured the new stack's candidates best ordered
    (``blend`` or ``ranker``, ``model_info.json``); None: not measured."""

    def __len__(self) -> int:
        return len(self.item_ids)

    @functools.cached_property
    def unit_embeddings(self) -> np.ndarray:
        """``embeddings`` as float64 rows of unit length (zero rows stay zero), for
        MMR's cosine similarities: normalised once per version, not per request.
        Row-wise, so a row is the same as ``postrank.unit_rows`` of that row alone."""
        from serving.postrank import unit_rows

        return unit_rows(self.embeddings.astype(np.float64))

    def rows(self, item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row of each id, -1 for an id not in the catalogue."""
        # Dict lookups: ~60 µs for 550 ids, where pandas' get_indexer spends ~170 µs,
        # most of it inferring the type of the ids it is given.
        ids = item_ids.tolist() if isinstance(item_ids, np.ndarray) else item_ids
        get = self.index.get
        return np.fromiter([get(i, -1) for i in ids], dtype=np.int64, count=len(ids))


def resolve_version(model_base: str | pathlib.Path, pinned: int | None = None) -> int:
    """``pinned`` if it is a complete export, else the newest complete version
    (``models.registry``: all three parts with their ``_COMPLETE`` markers);
    ``LookupError`` saying why when there is none."""
    from models import registry

    if pinned is not None:
        reason = registry.incomplete_reason(model_base, pinned)
        if reason is not None:
            raise LookupError(f"pinned model version {pinned} under {model_base}: {reason}")
        return pinned
    version = registry.newest_complete_version(model_base)
    if version is None:
        raise LookupError(
            f"no complete model version under {model_base}: expected "
            f"retrieval/<v>, ranker/<v> and {TABLE_DIR}/<v>, each with a _COMPLETE marker "
            "(rtp train --out MODEL_BASE writes them)"
        )
    return version


def load_catalog(model_base: str | pathlib.Path, version: int) -> ItemCatalog:
    """The item table of ``version``; ``ValueError`` if it is empty or ragged."""
    import pyarrow.parquet as pq

    path = pathlib.Path(model_base) / TABLE_DIR / str(version) / TABLE_FILE
    table = pq.read_table(path, columns=["item_id", "embedding"])
    ids = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    if len(ids) == 0:
        raise ValueError(f"{path}: the item table is empty")
    vectors = table.column("embedding").to_pylist()
    widths = {len(v) for v in vectors}
    if len(widths) != 1:
        raise ValueError(f"{path}: embeddings of mixed widths {sorted(widths)}")
    embeddings = np.asarray(vectors, dtype=np.float32)
    index = {item: row for row, item in enumerate(ids)}
    if len(index) != len(ids):
        raise ValueError(f"{path}: duplicate item ids")
    info_path = path.parent / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    order = (info.get("candidate_ranker") or {}).get("order")
    catalog = ItemCatalog(version, ids, embeddings, index, order)
    catalog.unit_embeddings  # noqa: B018  (computed now, not by the first request)
    return catalog
