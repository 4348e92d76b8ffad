"""Loading exported models: the newest complete version under a model base.

A version ``v`` is complete when ``retrieval/v``, ``ranker/v`` and
``item_embeddings/v`` all exist, each holds the ``_COMPLETE`` marker export writes
last, both SavedModels load and say they are version ``v``, and the item table
loads with version ``v``. Anything else (a half-written export, a corrupt file,
a copy from another version) is skipped with a logged reason, falling back to
the next older version.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from feature_repo.features import (
    USER_EMBEDDING_VERSION,
    USER_RECENT_ITEMS,
    USER_RECENT_REWARDS,
    USER_RECENT_TS_MS,
)
from models.export import (
    COMPLETE,
    ENGAGEMENT_PROBABILITY,
    ITEM_EMBEDDINGS,
    ITEM_IDS,
    QUERY_EMBEDDING,
    QUERY_SIGNATURE,
    RANKER,
    RETRIEVAL,
    SCORES,
    TABLE_FILE,
)
from models.inputs import ITEM_EMBEDDING, RANKER_ITEM_SCALARS, rows_to_inputs, user_inputs
from models.pooling import half_lives_s, pool_user
from models.ranker import EXPECTED_REWARD
from models.towers import QUERY_EMBEDDINGS

LOG = logging.getLogger(__name__)
PARTS = (RETRIEVAL, RANKER, ITEM_EMBEDDINGS)


class ModelLoadError(RuntimeError):
    """A version that cannot be used; the message says why."""


def list_versions(model_base: str | os.PathLike[str]) -> list[int]:
    """Every integer version directory under any of the three parts, newest first."""
    base = pathlib.Path(model_base)
    found = {
        int(p.name)
        for part in PARTS
        if (base / part).is_dir()
        for p in (base / part).iterdir()
        if p.is_dir() and p.name.isdigit()
    }
    return sorted(found, reverse=True)


def incomplete_reason(model_base: str | os.PathLike[str], version: int) -> str | None:
    """Why ``version`` is not a finished export (None when every part and marker is there)."""
    base = pathlib.Path(model_base)
    for part in PARTS:
        directory = base / part / str(version)
        if not directory.is_dir():
            return f"{part}/{version} is missing"
        marker = directory / COMPLETE
        if not marker.is_file():
            return f"{part}/{version} has no {COMPLETE} marker (export unfinished?)"
        try:
            said = json.loads(marker.read_text())["version"]
        except (ValueError, KeyError, TypeError) as err:
            return f"{part}/{version}/{COMPLETE} is unreadable: {err}"
        if int(said) != version:
            return f"{part}/{version}/{COMPLETE} names version {said}"
    return None


def _load_saved_model(directory: pathlib.Path, version: int) -> Any:
    try:
        loaded = tf.saved_model.load(str(directory))
    except Exception as err:  # corrupt or truncated protos and variables raise many types
        raise ModelLoadError(f"{directory} does not load: {type(err).__name__}: {err}") from err
    said = loaded.model_version.numpy().decode()
    if said != str(version):
        raise ModelLoadError(f"{directory} is model version {said}, not {version}")
    return loaded


def _load_table(directory: pathlib.Path, version: int) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    path = directory / TABLE_FILE
    try:
        table = pq.read_table(path, columns=["item_id", "embedding", "version"])
        versions = set(table.column("version").to_pylist())
        ids = np.array(table.column("item_id").to_pylist(), dtype=object)
        matrix = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(
            np.float32
        )
    except Exception as err:
        raise ModelLoadError(f"{path} does not load: {type(err).__name__}: {err}") from err
    if versions != {str(version)}:
        raise ModelLoadError(f"{path} has versions {sorted(versions)}, not {version}")
    return ids, matrix


class ModelBundle:
    """One complete version: retrieval and ranker SavedModels plus the item table.

    Feature rows are dicts of user_realtime / item_realtime features as the
    feature store returns them (``None`` for an unknown entity).
    """

    def __init__(
        self,
        model_base: pathlib.Path,
        version: int,
        retrieval: Any,
        ranker: Any,
        item_ids: np.ndarray,
        table: np.ndarray,
    ):
        self.model_base, self.version = model_base, version
        self.retrieval, self.ranker = retrieval, ranker
        self.item_ids, self.table = item_ids, table
        self.dim = int(table.shape[1])
        self._rows = {item: i for i, item in enumerate(item_ids)}
        self._top_k = retrieval.signatures["serving_default"]
        self._embed = retrieval.signatures[QUERY_SIGNATURE]
        self._rank = ranker.signatures["serving_default"]
        self.k = int(self._top_k.structured_outputs[SCORES].shape[1])

    def item_embedding(self, item_id: str) -> np.ndarray | None:
        row = self._rows.get(item_id)
        return None if row is None else self.table[row]

    def user_inputs(self, user_rows: Sequence[Mapping[str, Any] | None]) -> dict[str, np.ndarray]:
        """Query inputs; rows pooled under another table version are re-pooled here
        from their last-N events, as the pipeline does on a version change."""
        inputs = user_inputs(user_rows, self.dim)
        for b, row in enumerate(user_rows):
            if row and str(row.get(USER_EMBEDDING_VERSION)) != str(self.version):
                pooled = pool_user(
                    row.get(USER_RECENT_ITEMS) or [],
                    row.get(USER_RECENT_TS_MS) or [],
                    row.get(USER_RECENT_REWARDS) or [],
                    self.item_embedding,
                    self.dim,
                    half_lives_s(),
                )
                for h, name in enumerate(QUERY_EMBEDDINGS):
                    inputs[name][b] = pooled[h]
        return inputs

    def query_embedding(self, user_rows: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
        """``[B, dim]`` query vectors (the retrieval SavedModel's ``query_embedding``)."""
        out = self._embed(**_tensors(self.user_inputs(user_rows)))
        return out[QUERY_EMBEDDING].numpy()

    def retrieve(
        self,
        user_rows: Sequence[Mapping[str, Any] | None],
        k: int | None = None,
        exclude: Sequence[Iterable[str]] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(item_id, score)`` per user, best first.

        Without exclusions this is the SavedModel's BruteForce top-K (``k`` at most
        ``self.k``); with them, the same dot products over the whole table in NumPy.
        """
        k = self.k if k is None else k
        if exclude is None and k <= self.k:
            out = self._top_k(**_tensors(self.user_inputs(user_rows)))
            ids, scores = out[ITEM_IDS].numpy(), out[SCORES].numpy()
            return [
                [(i.decode(), float(s)) for i, s in zip(ids[b, :k], scores[b, :k], strict=True)]
                for b in range(len(ids))
            ]
        scores = self.query_embedding(user_rows) @ self.table.T
        results = []
        for b in range(len(scores)):
            banned = [self._rows[i] for i in (exclude[b] if exclude else ()) if i in self._rows]
            scores[b, banned] = -np.inf
            top = np.argsort(-scores[b], kind="stable")[:k]
            results.append(
                [
                    (str(self.item_ids[i]), float(scores[b, i]))
                    for i in top
                    if np.isfinite(scores[b, i])
                ]
            )
        return results

    def ranker_inputs(
        self,
        user_row: Mapping[str, Any] | None,
        item_ids: Sequence[str],
        item_rows: Sequence[Mapping[str, Any] | None],
    ) -> dict[str, np.ndarray]:
        """Ranker inputs for one user and ``len(item_ids)`` candidates."""
        if len(item_rows) != len(item_ids):
            raise ValueError(f"{len(item_ids)} item ids but {len(item_rows)} item rows")
        user = self.user_inputs([user_row])
        n = len(item_ids)
        inputs = {name: np.repeat(value, n, axis=0) for name, value in user.items()}
        inputs.update(rows_to_inputs(item_rows, RANKER_ITEM_SCALARS, self.dim))
        embeddings = np.zeros((n, self.dim), dtype=np.float32)
        for j, item in enumerate(item_ids):
            row = self._rows.get(item)
            if row is not None:
                embeddings[j] = self.table[row]
        inputs[ITEM_EMBEDDING] = embeddings
        return inputs

    def score(
        self,
        user_row: Mapping[str, Any] | None,
        item_ids: Sequence[str],
        item_rows: Sequence[Mapping[str, Any] | None],
    ) -> dict[str, np.ndarray]:
        """``engagement_probability`` and ``expected_reward`` ``[len(item_ids)]``;
        an item missing from the table gets a zero embedding."""
        out = self._rank(**_tensors(self.ranker_inputs(user_row, item_ids, item_rows)))
        return {
            ENGAGEMENT_PROBABILITY: out[ENGAGEMENT_PROBABILITY].numpy(),
            EXPECTED_REWARD: out[EXPECTED_REWARD].numpy(),
        }


def _tensors(inputs: Mapping[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {name: tf.constant(value) for name, value in inputs.items()}


def load_version(model_base: str | os.PathLike[str], version: int) -> ModelBundle:
    """Load one version or raise ``ModelLoadError`` saying why it is unusable."""
    base = pathlib.Path(model_base)
    reason = incomplete_reason(base, version)
    if reason:
        raise ModelLoadError(reason)
    item_ids, table = _load_table(base / ITEM_EMBEDDINGS / str(version), version)
    retrieval = _load_saved_model(base / RETRIEVAL / str(version), version)
    ranker = _load_saved_model(base / RANKER / str(version), version)
    return ModelBundle(base, version, retrieval, ranker, item_ids, table)


def load_latest(model_base: str | os.PathLike[str]) -> ModelBundle | None:
    """The newest usable version, or None (each skipped version is logged with its reason)."""
    for version in list_versions(model_base):
        try:
            bundle = load_version(model_base, version)
        except ModelLoadError as err:
            LOG.warning("skipping model version %s under %s: %s", version, model_base, err)
            continue
        LOG.info("loaded model version %s from %s", version, model_base)
        return bundle
    return None


def newest_complete_version(model_base: str | os.PathLike[str]) -> int | None:
    """The newest version whose files and markers are all present (nothing is loaded)."""
    for version in list_versions(model_base):
        reason = incomplete_reason(model_base, version)
        if reason is None:
            return version
        LOG.warning("skipping model version %s under %s: %s", version, model_base, reason)
    return None
