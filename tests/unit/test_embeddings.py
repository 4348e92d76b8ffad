"""Item-embedding tables: hashed random vectors and the exported Parquet table."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.embeddings import HashedEmbeddings, TableEmbeddings
from feature_repo.features import EMBEDDING_DIM


def test_hashed_vectors_are_deterministic_across_instances():
    a, b = HashedEmbeddings(dim=16), HashedEmbeddings(dim=16)
    np.testing.assert_array_equal(a.get("item-42"), b("item-42"))
    np.testing.assert_array_equal(a("item-42"), a.get("item-42"))


def test_hashed_vectors_are_unit_norm_of_the_configured_width():
    table = HashedEmbeddings()
    assert table.dim == EMBEDDING_DIM
    for item_id in ["a", "b", "", "é", "\U0001f600", "x" * 128]:
        vec = table(item_id)
        assert vec.shape == (EMBEDDING_DIM,)
        assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-12)


def test_hashed_vectors_differ_per_id_and_per_salt():
    table = HashedEmbeddings(dim=8)
    vectors = np.stack([table(f"item-{k}") for k in range(200)])
    gram = vectors @ vectors.T
    np.fill_diagonal(gram, 0.0)
    assert np.max(np.abs(gram)) < 0.999  # no two ids share (or mirror) a vector
    other = HashedEmbeddings(dim=8, salt="other")
    assert not np.allclose(table("item-1"), other("item-1"))
    assert table.version != other.version
    assert table.version == "hashed-rtp-d8"


def test_hashed_width_must_be_positive():
    with pytest.raises(ValueError, match="dim"):
        HashedEmbeddings(dim=0)


def _write(path, item_ids, vectors, versions) -> None:
    table = pa.table(
        {
            "item_id": pa.array(item_ids, pa.string()),
            "embedding": pa.array(vectors, pa.list_(pa.float32())),
            "version": pa.array(versions, pa.string()),
        }
    )
    pq.write_table(table, path)


def test_table_from_parquet(tmp_path):
    path = tmp_path / "item_embeddings.parquet"
    _write(path, ["a", "b"], [[1.0, 0.0, 0.5], [0.0, 2.0, 0.25]], ["m-7", "m-7"])
    table = TableEmbeddings.from_parquet(path)
    assert table.version == "m-7"
    assert table.dim == 3
    assert len(table) == 2
    np.testing.assert_array_equal(table.get("b"), [0.0, 2.0, 0.25])
    assert table("b").dtype == np.float64
    assert table.get("unknown") is None


def test_table_from_parquet_ignores_extra_columns(tmp_path):
    path = tmp_path / "item_embeddings.parquet"
    pq.write_table(
        pa.table(
            {
                "item_id": ["a"],
                "embedding": pa.array([[1.0, 2.0]], pa.list_(pa.float64())),
                "version": ["v1"],
                "exported_at": [123],
            }
        ),
        path,
    )
    assert TableEmbeddings.from_parquet(str(path)).dim == 2


def test_mixed_versions_are_rejected(tmp_path):
    path = tmp_path / "mixed.parquet"
    _write(path, ["a", "b"], [[1.0, 0.0], [0.0, 1.0]], ["m-7", "m-8"])
    with pytest.raises(ValueError, match="one version"):
        TableEmbeddings.from_parquet(path)


def test_mixed_widths_are_rejected(tmp_path):
    path = tmp_path / "ragged.parquet"
    _write(path, ["a", "b"], [[1.0, 0.0], [0.0, 1.0, 0.0]], ["m-7", "m-7"])
    with pytest.raises(ValueError, match="mixed widths"):
        TableEmbeddings.from_parquet(path)


def test_empty_table_is_rejected(tmp_path):
    path = tmp_path / "empty.parquet"
    _write(path, [], [], [])
    with pytest.raises(ValueError):
        TableEmbeddings.from_parquet(path)
    with pytest.raises(ValueError, match="empty"):
        TableEmbeddings({}, "v1")


def test_missing_column_is_an_error(tmp_path):
    path = tmp_path / "no_version.parquet"
    pq.write_table(pa.table({"item_id": ["a"], "embedding": [[1.0]]}), path)
    with pytest.raises(ValueError, match="version"):
        TableEmbeddings.from_parquet(path)


def test_source_keeps_a_bounded_set_of_tables_and_reloads_old_ones_by_event_time(tmp_path):
    from beam_pipelines.embedding_source import EmbeddingSource
    from tests.helpers.embeddings import random_vectors, write_table

    model_base = tmp_path / "models"
    for v in range(1, 7):  # version v applies from event time 1000 * v
        write_table(model_base, v, random_vectors(["i1"], 4, seed=v), active_from_ms=1000 * v)
    source = EmbeddingSource(str(model_base), dim=4)
    assert source.current().version == "6"
    loaded = source._loaded
    assert len(loaded.tables) == EmbeddingSource.KEEP
    assert [v for v, _ in loaded.index] == ["1", "2", "3", "4", "5", "6"]
    for v in (1, 6, 2, 5, 3):
        assert source.current(1000 * v + 500).version == str(v)
        assert len(loaded.tables) <= EmbeddingSource.KEEP
        assert "6" in loaded.tables  # the newest stays
    assert type(source.current(10)).__name__ == "HashedEmbeddings"


def test_hashed_vectors_are_cached_per_process_and_survive_pickling():
    # Runners unpickle a DoFn per bundle or worker: the copy must not start cold.
    first = HashedEmbeddings(dim=8, salt="cache-test")
    vec = first.get("item-1")
    copy = pickle.loads(pickle.dumps(first))
    assert copy.get("item-1") is vec
    assert HashedEmbeddings(dim=8, salt="cache-test").get("item-1") is vec
    assert HashedEmbeddings(dim=8, salt="other").get("item-1") is not vec
    assert len(pickle.dumps(first)) < 200  # the cache is not pickled
    with pytest.raises(ValueError):
        vec[0] = 1.0  # shared: read-only
