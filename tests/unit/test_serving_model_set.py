"""``ModelSet.candidate_rows``: the retrieval's ``candidate_rows`` signature when it
agrees with the ids, the ids otherwise; ``ranked_candidates`` through separate calls
(a fake backend, no TensorFlow; the fused call: ``tests/integration/test_serving_inprocess``)."""

from collections.abc import Mapping

import numpy as np

from serving.backends import Signature, TensorSpec
from serving.catalog import ItemCatalog
from serving.features import ItemSnapshot
from serving.model_set import ROWS_SIGNATURE, ModelSet

IDS = ["a", "b", "c", "d"]
QUERY = {"user_event_count": TensorSpec(np.dtype(np.int64), (None,))}
TOP = [2, 0, 3]  # the retrieval's answer, as rows of IDS


def catalog() -> ItemCatalog:
    ids = np.array(IDS, dtype=object)
    return ItemCatalog(7, ids, np.eye(4, dtype=np.float32), {i: r for r, i in enumerate(IDS)})


class FakeBackend:
    version = 7

    def __init__(self, rows: list[int] | None) -> None:
        self.rows = rows  # what candidate_rows answers; None: no such signature
        self.calls: list[str | None] = []

    def open(self) -> None:
        pass

    def signature(self, model: str, name: str | None = None) -> Signature:
        if model == "ranker":
            f32 = TensorSpec(np.dtype(np.float32), (None,))
            return Signature({"user_event_count": QUERY["user_event_count"]}, {"score": f32})
        if name is None:
            outputs = {
                "scores": TensorSpec(np.dtype(np.float32), (None, 3)),
                "item_ids": TensorSpec(np.dtype(object), (None, 3)),
            }
            return Signature(dict(QUERY), outputs)
        if name == ROWS_SIGNATURE and self.rows is not None:
            outputs = {
                "scores": TensorSpec(np.dtype(np.float32), (None, 3)),
                "item_rows": TensorSpec(np.dtype(np.int32), (None, 3)),
            }
            return Signature(dict(QUERY), outputs)
        raise KeyError(name)

    def predict(
        self, model: str, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        self.calls.append(signature)
        if model == "ranker":  # scores 0, 1, 2, ... by row position
            return {"score": np.arange(len(inputs["user_event_count"]), dtype=np.float32)}
        scores = np.array([[0.9, 0.5, 0.1]], dtype=np.float32)
        if signature == ROWS_SIGNATURE:
            return {"scores": scores, "item_rows": np.array([self.rows], dtype=np.int32)}
        ids = np.array([[IDS[r] for r in TOP]], dtype=object)
        return {"scores": scores, "item_ids": ids}


def model_set(backend: FakeBackend) -> ModelSet:
    models = ModelSet(backend, catalog(), "retrieval", "ranker")
    models.open()
    return models


def test_rows_signature_is_used_when_it_agrees_with_the_ids() -> None:
    backend = FakeBackend(rows=TOP)
    models = model_set(backend)
    assert models.rows_signature == ROWS_SIGNATURE
    backend.calls.clear()
    assert models.candidate_rows({"user_event_count": 3}).tolist() == TOP
    assert backend.calls == [ROWS_SIGNATURE]


def test_ids_are_used_without_the_signature_or_when_rows_disagree() -> None:
    for rows in (None, [0, 2, 3]):
        backend = FakeBackend(rows=rows)
        models = model_set(backend)
        assert models.rows_signature is None
        backend.calls.clear()
        assert models.candidate_rows({"user_event_count": 3}).tolist() == TOP
        assert backend.calls == [None]


def test_ranked_candidates_drop_recent_rows_and_keep_the_retrieval_order() -> None:
    backend = FakeBackend(rows=[2, -1, 0, 9, 3])  # -1 and 9: not in the catalogue
    models = model_set(backend)
    models.rows_signature = ROWS_SIGNATURE  # the fake's rows disagree with its ids
    assert models.fused is None  # no loaded functions
    user = {"user_event_count": 3}
    rows, scores = models.ranked_candidates(user, np.array([0, -1]), ItemSnapshot.empty(4), 10)
    assert rows.tolist() == [2, 3] and scores.tolist() == [0.0, 1.0]
    rows, scores = models.ranked_candidates(
        user, np.array([], dtype=np.int64), ItemSnapshot.empty(4), 2
    )
    assert rows.tolist() == [2, 0] and scores.tolist() == [0.0, 1.0]
    backend.calls.clear()
    rows, scores = models.ranked_candidates(user, np.array([2, 0, 3]), ItemSnapshot.empty(4), 10)
    assert rows.tolist() == [] and scores.tolist() == []
    assert backend.calls == [ROWS_SIGNATURE]  # no ranker call for no candidates
