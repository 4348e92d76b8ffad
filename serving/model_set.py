"""One model version as the recommender uses it: retrieval, ranker and item table.

Inputs are built by signature input name: a ``user_realtime`` feature from the
user's row (repeated per candidate for the ranker), an ``item_realtime`` feature
from the item snapshot, ``item_embedding`` from the version's item table. A
signature input with no such source is a wiring error reported at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from feature_repo import features as f
from models.pooling import pool_user
from serving import postrank
from serving.backends import ModelBackend, ModelUnavailableError, Signature, TensorSpec
from serving.catalog import ItemCatalog
from serving.features import ItemSnapshot

if TYPE_CHECKING:
    from models.ann import Ann

LOG = logging.getLogger(__name__)
ITEM_EMBEDDING_INPUT = f.ITEM_EMBEDDING_VECTOR
SCORE_OUTPUTS = ("engagement_probability", "engagement_logit", "score", "scores")
ROWS_SIGNATURE, ROWS_OUTPUT = "candidate_rows", "item_rows"  # models.export's names
SCORES_OUTPUT = "scores"
LOG_NORMALIZER = "log_normalizer"  # models.sequential_export: P(item) = exp(score - it)
RANK_SIGNATURE, RANK_INPUT, RANK_OUTPUT = "rank_candidates", "candidate_features", "score"
QUERY_SIGNATURE, QUERY_OUTPUT = "query", "query"  # models.sequential_export's names


def user_value(user: Mapping[str, Any], name: str, spec: TensorSpec) -> np.ndarray:
    """One row of input ``name``: ``[D]`` for a vector, a scalar otherwise."""
    value = user.get(name)
    if len(spec.shape) == 2:
        width = spec.shape[1]
        if value is None or len(value) == 0 or (width is not None and len(value) != width):
            return np.zeros(width or 0, dtype=spec.dtype)  # missing, as for a new user
        return np.asarray(value, dtype=spec.dtype)
    return np.asarray(0 if value is None else value, dtype=spec.dtype)


def align_user(
    user: Mapping[str, Any], catalog: ItemCatalog, half_lives_s: tuple[float, float]
) -> Mapping[str, Any]:
    """The user's row with ``user_emb_short``/``user_emb_long`` in this version's item space.

    The pipeline pools embeddings of the item table it had (``user_embedding_version``);
    after a model change, until it re-pools, they live in another space. Then they
    are re-pooled here from the user's last-N events with ``models.pooling``, as the
    pipeline does on a version change (``models.registry`` does the same).
    """
    if str(user.get(f.USER_EMBEDDING_VERSION)) == str(catalog.version):
        return user

    def lookup(item_id: str) -> np.ndarray | None:
        row = catalog.index.get(item_id)
        return None if row is None else catalog.embeddings[row]

    pooled = pool_user(
        list(user.get(f.USER_RECENT_ITEMS) or []),
        list(user.get(f.USER_RECENT_TS_MS) or []),
        list(user.get(f.USER_RECENT_REWARDS) or []),
        lookup,
        catalog.embeddings.shape[1],
        half_lives_s,
    )
    return {**user, f.USER_EMB_SHORT: pooled[0], f.USER_EMB_LONG: pooled[1]}


def _check_sources(model: str, signature: Signature, allowed: set[str]) -> None:
    missing = sorted(set(signature.inputs) - allowed)
    if missing:
        raise ModelUnavailableError(f"{model} inputs without a feature source: {missing}")


def pick_score_output(signature: Signature, configured: str | None) -> str:
    """The ranker output used as relevance (see ``RankingConfig.score_output``)."""
    if configured is not None:
        if configured not in signature.outputs:
            raise ModelUnavailableError(
                f"ranker has no output {configured!r}: {sorted(signature.outputs)}"
            )
        return configured
    for name in SCORE_OUTPUTS:
        if name in signature.outputs:
            return name
    floats = [n for n, s in signature.outputs.items() if s.dtype.kind == "f"]
    if len(floats) == 1:
        return floats[0]
    raise ModelUnavailableError(f"cannot tell the ranker's score among {sorted(signature.outputs)}")


def _usable_rows_signature(
    backend: ModelBackend, model: str, retrieval: Signature, catalog: ItemCatalog
) -> str | None:
    """``ROWS_SIGNATURE`` if the retrieval ``model`` has it and its rows are this
    catalogue's (checked on one query against the ids of the main signature); else
    None, and candidates come from the ids (exports from before it existed)."""
    try:
        signature = backend.signature(model, ROWS_SIGNATURE)
    except KeyError:
        return None
    output = signature.outputs.get(ROWS_OUTPUT)
    if signature.inputs != retrieval.inputs or output is None or output.dtype.kind != "i":
        return None
    inputs = {n: user_value({}, n, s)[None] for n, s in retrieval.inputs.items()}
    ids = next(v for v in backend.predict(model, inputs).values() if v.dtype == object)
    rows = backend.predict(model, inputs, ROWS_SIGNATURE)[ROWS_OUTPUT]
    if np.asarray(rows).reshape(-1).tolist() != catalog.rows(ids.reshape(-1)).tolist():
        LOG.warning("%s: %s rows are not the item table's; using ids", model, ROWS_SIGNATURE)
        return None
    return ROWS_SIGNATURE


class ModelSet:
    """Retrieval → candidates, ranker → scores, through one ``ModelBackend``.

    ``ann``: the sequential retriever's ANN index of this version (``models.ann``),
    if it has one. Then its top rows come from the retriever's ``query`` signature
    and a search of the index here, in this process, whatever the backend (TF
    Serving answers the query vector); else from the brute-force signature.
    """

    def __init__(
        self,
        backend: ModelBackend,
        catalog: ItemCatalog,
        retrieval_model: str,
        ranker_model: str,
        score_output: str | None = None,
        ann: Ann | None = None,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.version = backend.version
        self.retrieval_model, self.ranker_model = retrieval_model, ranker_model
        self._score_output_config = score_output
        self.score_output = ""
        self._retrieval: Signature | None = None
        self._ranker: Signature | None = None
        self.rows_signature: str | None = None  # set by open when usable
        self.fused: Any = None  # a serving.fused.FusedRanking, set by open when usable
        self.sequential = False  # set by open: retrieval answers next-item probabilities
        self.candidate_ranker = False  # set by open: the sequential model ranks candidates
        self._ann = ann
        self.ann: Ann | None = None  # set by open: ``ann`` if it fits this model and catalogue

    @property
    def ready(self) -> bool:
        return self._ranker is not None

    def open(self) -> None:
        """Open the backend and check both signatures against the feature sources."""
        self.backend.open()
        retrieval = self.backend.signature(self.retrieval_model)
        ranker = self.backend.signature(self.ranker_model)
        _check_sources(self.retrieval_model, retrieval, set(f.USER_FEATURES))
        ranker_sources = {*f.USER_FEATURES, *f.ITEM_FEATURES, ITEM_EMBEDDING_INPUT}
        _check_sources(self.ranker_model, ranker, ranker_sources)
        kinds = {s.dtype.kind for s in retrieval.outputs.values()}
        if not {"O", "f"} <= kinds:
            raise ModelUnavailableError(
                f"{self.retrieval_model} must output item ids (string) and scores (float)"
            )
        self.score_output = pick_score_output(ranker, self._score_output_config)
        self.rows_signature = _usable_rows_signature(
            self.backend, self.retrieval_model, retrieval, self.catalog
        )
        self._retrieval, self._ranker = retrieval, ranker
        self.sequential = (
            self.rows_signature is not None
            and LOG_NORMALIZER
            in self.backend.signature(self.retrieval_model, ROWS_SIGNATURE).outputs
        )
        self.candidate_ranker = self.sequential and self._has_rank_signature()
        self.ann = self._usable_ann() if self.sequential else None
        self.fused = None if self.sequential else self._fused_ranking()

    def _usable_ann(self) -> Ann | None:
        """``ann`` if the retriever has a ``query`` signature of the index's width and
        the index has a row per catalogue item; else None (brute force), logged."""
        if self._ann is None:
            return None
        manifest = self._ann.manifest
        try:
            query = self.backend.signature(self.retrieval_model, QUERY_SIGNATURE)
        except KeyError:
            LOG.warning("%s has an ANN index but no %s signature", self.retrieval_model, "query")
            return None
        spec = query.outputs.get(QUERY_OUTPUT)
        if (
            spec is None
            or spec.shape[-1] != manifest.dim
            or manifest.item_count != len(self.catalog)
        ):
            LOG.warning("%s: ANN index does not fit the model or catalogue", self.retrieval_model)
            return None
        return self._ann

    def _has_rank_signature(self) -> bool:
        try:
            signature = self.backend.signature(self.retrieval_model, RANK_SIGNATURE)
        except KeyError:
            return False
        return RANK_INPUT in signature.inputs and RANK_OUTPUT in signature.outputs

    def _fused_ranking(self) -> Any:
        """A ``FusedRanking`` if the backend has the loaded functions and, on one
        query, it answers exactly what the separate calls answer; else None."""
        loaded = getattr(self.backend, "loaded_function", None)
        if loaded is None or self.rows_signature is None:
            return None
        retrieval = loaded(self.retrieval_model, self.rows_signature)
        ranker = loaded(self.ranker_model)
        if retrieval is None or ranker is None:
            return None
        from serving.fused import FusedRanking

        assert self._retrieval is not None and self._ranker is not None
        try:
            fused = FusedRanking(
                retrieval,
                self._retrieval,
                ROWS_OUTPUT,
                ranker,
                self._ranker,
                self.score_output,
                self.catalog.embeddings,
            )
        except ValueError as e:
            LOG.info("retrieval and ranker not fused: %s", e)
            return None
        items = ItemSnapshot.empty(len(self.catalog))
        recent = self.catalog.rows(self.catalog.item_ids[:3])
        rows, scores = self._separate({}, recent, items, len(self.catalog))
        fused_rows, fused_scores = fused({}, recent, items, len(self.catalog))
        if rows.tolist() != fused_rows.tolist() or scores.tolist() != fused_scores.tolist():
            LOG.warning("fused retrieval and ranker disagree with the separate calls; not fused")
            return None
        return fused

    def _signatures(self) -> tuple[Signature, Signature]:
        if self._retrieval is None or self._ranker is None:
            self.open()
        assert self._retrieval is not None and self._ranker is not None
        return self._retrieval, self._ranker

    def retrieve(self, user: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, retrieval scores) of the top candidates, best first."""
        retrieval, _ = self._signatures()
        inputs = {n: user_value(user, n, s)[None] for n, s in retrieval.inputs.items()}
        outputs = self.backend.predict(self.retrieval_model, inputs)
        ids = next(v for v in outputs.values() if v.dtype == object)
        scores = next(v for v in outputs.values() if v.dtype.kind == "f")
        return np.asarray(ids).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)

    def candidate_rows(self, user: Mapping[str, Any]) -> np.ndarray:
        """Catalogue rows of the top candidates, best first (-1: not in the catalogue):
        ``retrieve`` then ``catalog.rows``, or the same in one call of the retrieval
        model's ``ROWS_SIGNATURE``, which skips the item id strings."""
        retrieval, _ = self._signatures()
        if self.ann is not None:
            return self._searched(user)[0]
        if self.rows_signature is None:
            ids, _ = self.retrieve(user)
            return self.catalog.rows(ids)
        inputs = {n: user_value(user, n, s)[None] for n, s in retrieval.inputs.items()}
        outputs = self.backend.predict(self.retrieval_model, inputs, self.rows_signature)
        rows = np.asarray(outputs[ROWS_OUTPUT], dtype=np.int64).reshape(-1)
        return np.where((rows >= 0) & (rows < len(self.catalog)), rows, -1)

    def sequence_candidates(self, user: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, P(next item)) of the sequential retriever's top rows, best first
        (-1: not in the catalogue). With ``ann`` the probabilities' normalizer is
        estimated (``models.ann.log_normalizer``), else exact."""
        retrieval, _ = self._signatures()
        if self.ann is not None:
            rows, scores, normalizer = self._searched(user)
        else:
            inputs = {n: user_value(user, n, s)[None] for n, s in retrieval.inputs.items()}
            outputs = self.backend.predict(self.retrieval_model, inputs, ROWS_SIGNATURE)
            rows = np.asarray(outputs[ROWS_OUTPUT], dtype=np.int64).reshape(-1)
            scores = np.asarray(outputs[SCORES_OUTPUT], dtype=np.float64).reshape(-1)
            normalizer = float(np.asarray(outputs[LOG_NORMALIZER]).reshape(-1)[0])
        rows = np.where((rows >= 0) & (rows < len(self.catalog)), rows, -1)
        return rows, np.exp(scores - normalizer)

    def _searched(self, user: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
        """(rows, scores, estimated log normalizer) of the index's top rows for the
        retriever's query vector: as many rows as the brute-force signature answers,
        so callers over-fetch and drop seen items the same way."""
        assert self.ann is not None
        retrieval, _ = self._signatures()
        inputs = {n: user_value(user, n, s)[None] for n, s in retrieval.inputs.items()}
        query = self.backend.predict(self.retrieval_model, inputs, QUERY_SIGNATURE)[QUERY_OUTPUT]
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        scores, rows = self.ann.search(query[None])
        normalizer = self.ann.log_normalizer(query, scores[0], rows[0])
        return rows[0], scores[0].astype(np.float64), normalizer

    def rank_candidates(self, features: np.ndarray) -> np.ndarray:
        """The candidate ranker's order score of each row of ``features``
        (``models.candidate_features.FEATURES`` columns)."""
        inputs = {RANK_INPUT: np.asarray(features, dtype=np.float32)}
        outputs = self.backend.predict(self.retrieval_model, inputs, RANK_SIGNATURE)
        return np.asarray(outputs[RANK_OUTPUT], dtype=np.float64).reshape(-1)

    def ranker_inputs(
        self, user: Mapping[str, Any], rows: np.ndarray, items: ItemSnapshot
    ) -> dict[str, np.ndarray]:
        """Ranker inputs for catalogue ``rows`` (one batch, one row per candidate)."""
        _, ranker = self._signatures()
        n = len(rows)
        inputs: dict[str, np.ndarray] = {}
        for name, spec in ranker.inputs.items():
            if name == ITEM_EMBEDDING_INPUT:
                inputs[name] = self.catalog.embeddings[rows].astype(spec.dtype, copy=False)
            elif name in f.ITEM_FEATURES:
                inputs[name] = items.column(name)[rows].astype(spec.dtype)
            else:  # the user's value on every row (a read-only view, not n copies)
                one = user_value(user, name, spec)
                inputs[name] = np.broadcast_to(one, (n, *one.shape))
        return inputs

    def ranked_candidates(
        self, user: Mapping[str, Any], recent: np.ndarray, items: ItemSnapshot, limit: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores): the first ``limit`` retrieved catalogue rows that are neither
        unknown nor among the ``recent`` rows, best retrieved first, and their ranker
        scores. One call with ``fused``, else ``candidate_rows`` then ``rank``."""
        self._signatures()
        fused = self.fused
        if fused is not None:
            return self.backend.run("retrieval and ranker", fused, user, recent, items, limit)  # type: ignore[attr-defined]
        return self._separate(user, recent, items, limit)

    def _separate(
        self, user: Mapping[str, Any], recent: np.ndarray, items: ItemSnapshot, limit: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = postrank.unseen_rows(self.candidate_rows(user), recent)[:limit]
        return rows, self.rank(user, rows, items) if len(rows) else np.zeros(0)

    def rank(self, user: Mapping[str, Any], rows: np.ndarray, items: ItemSnapshot) -> np.ndarray:
        """Ranker score of each candidate row, in one call."""
        outputs = self.backend.predict(self.ranker_model, self.ranker_inputs(user, rows, items))
        return np.asarray(outputs[self.score_output], dtype=np.float64).reshape(-1)

    def close(self) -> None:
        self.fused = None  # it holds the loaded functions (and their variables)
        self.backend.close()
