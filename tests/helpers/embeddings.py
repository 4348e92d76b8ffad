"""Item-embedding tables in the model-export layout, for EmbeddingSource tests."""

from __future__ import annotations

import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.embedding_source import table_path
from beam_pipelines.embeddings import ACTIVE_FROM_KEY


def write_table(
    model_base: pathlib.Path,
    version: int,
    vectors: dict[str, np.ndarray],
    active_from_ms: int | None = None,
) -> pathlib.Path:
    """``<model_base>/item_embeddings/<version>/item_embeddings.parquet``; with
    ``active_from_ms`` (event time, epoch ms) in the Parquet schema metadata."""
    path = pathlib.Path(table_path(model_base, version))
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "item_id": pa.array(list(vectors), pa.string()),
            "embedding": pa.array(
                [list(map(float, v)) for v in vectors.values()], pa.list_(pa.float32())
            ),
            "version": pa.array([str(version)] * len(vectors), pa.string()),
        }
    )
    if active_from_ms is not None:
        table = table.replace_schema_metadata({ACTIVE_FROM_KEY: str(active_from_ms).encode()})
    pq.write_table(table, path)
    return path


def random_vectors(item_ids: list[str], dim: int, seed: int) -> dict[str, np.ndarray]:
    """Float32-exact vectors (the table stores float32)."""
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal(dim).astype(np.float32).astype(np.float64) for i in item_ids}
