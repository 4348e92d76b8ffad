"""The in-process backend's fast call paths on a real export (``models.export``, the
layer sizes of ``rtp train``, untrained weights): packing the inputs into one
tensor per (dtype, row shape), and retrieval, filter and ranker fused into one call,
change nothing the models answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feature_repo import features as f
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.backends import inprocess
from serving.backends.inprocess import InProcessBackend
from serving.catalog import load_catalog
from serving.config import InProcessModelsConfig
from serving.features import ITEM_COLUMNS, ItemSnapshot
from serving.model_set import ModelSet

pytestmark = pytest.mark.timeout(600)
ITEMS = [f"i{i:04d}" for i in range(300)]
VERSION = 1
TWO_TOWER = "retrieval"  # the configured default is now the sequential retriever
DIM = 16


@pytest.fixture(scope="module")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    export_tiny(base, ITEMS, dim=DIM, k=120, version=VERSION, full_size=True)
    return base


def random_inputs(function, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    _, specs = function.structured_input_signature
    return {
        name: (rng.standard_normal((batch, *spec.shape.as_list()[1:])) * 5).astype(
            spec.dtype.as_numpy_dtype
        )
        for name, spec in specs.items()
    }


@pytest.mark.parametrize("model", ["retrieval", "ranker"])
def test_packed_call_answers_like_the_signature(model_base: Path, model: str) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_base / model / str(VERSION)))
    function = loaded.signatures["serving_default"]
    packed = inprocess._caller(function)
    assert isinstance(packed, inprocess._PackedCall)
    # One tensor per (dtype, row shape): float scalars, int scalars, vectors.
    assert len(packed.groups) == 3
    plain = inprocess._KeywordCall(function)
    rng = np.random.default_rng(0)
    for batch in (1, 7, 500):
        inputs = random_inputs(function, batch, rng)
        expected = {k: v.numpy() for k, v in plain(inputs).items()}
        answer = {k: v.numpy() for k, v in packed(inputs).items()}
        assert answer.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(answer[name], expected[name], err_msg=name)


def test_backend_predicts_through_the_packed_call(model_base: Path) -> None:
    backend = InProcessBackend(
        InProcessModelsConfig(retrieval_model=TWO_TOWER), str(model_base), VERSION
    )
    backend.open()
    try:
        assert all(isinstance(f, inprocess._PackedCall) for f in backend._functions.values())
        signature = backend.signature("retrieval")
        user = {
            name: np.ones((1, *spec.shape[1:]), dtype=spec.dtype)
            for name, spec in signature.inputs.items()
        }
        outputs = backend.predict("retrieval", user)
        ids = next(v for v in outputs.values() if v.dtype == object)
        assert ids.shape == (1, 120) and isinstance(ids[0, 0], str)
        assert set(ids.ravel().tolist()) <= set(ITEMS)
    finally:
        backend.close()


def random_user(rng: np.random.Generator) -> dict:
    """A user row with some features missing, as new users have."""
    row: dict = {
        name: rng.standard_normal(DIM).tolist()
        if kind == f.FLOAT_LIST
        else float(rng.random() * 100)
        if kind == f.FLOAT
        else int(rng.integers(0, 10**12))
        for name, kind in f.USER_FEATURES.items()
        if kind in (f.FLOAT, f.INT, f.FLOAT_LIST) and rng.random() < 0.8
    }
    row["user_embedding_version"] = str(VERSION)
    return row


def model_set(model_base: Path, config: InProcessModelsConfig) -> ModelSet:
    backend = InProcessBackend(config, str(model_base), VERSION)
    models = ModelSet(backend, load_catalog(model_base, VERSION), "retrieval", "ranker")
    models.open()
    return models


def test_fused_ranking_can_be_turned_off(model_base: Path) -> None:
    models = model_set(model_base, InProcessModelsConfig(retrieval_model=TWO_TOWER, fused=False))
    assert models.fused is None
    models.close()


@pytest.mark.parametrize("timeout_s", [None, 5.0])  # inline, or on the backend's pool
def test_fused_ranking_answers_like_the_separate_calls(
    model_base: Path, timeout_s: float | None
) -> None:
    models = model_set(
        model_base, InProcessModelsConfig(retrieval_model=TWO_TOWER, timeout_s=timeout_s)
    )
    try:
        assert models.fused is not None
        rng = np.random.default_rng(3)
        for case in range(40):
            user = random_user(rng)
            values = rng.random((len(ITEMS), len(ITEM_COLUMNS))) * 50
            values[:, ITEM_COLUMNS.index("item_last_event_ms")] = rng.integers(
                0, 2 * 10**12, len(ITEMS)
            )
            snapshot = ItemSnapshot(values, rng.random(len(ITEMS)) < 0.9, 0)
            retrieved = models.candidate_rows(user)
            recent = {
                0: np.zeros(0, dtype=np.int64),  # nothing recent
                1: retrieved,  # everything retrieved is recent
                2: np.array([-1, -1]),  # recent items unknown to this version
            }.get(case, rng.choice(retrieved, int(rng.integers(1, 60))))
            limit = int(rng.choice([1, 50, 120, 500]))
            rows, scores = models.ranked_candidates(user, recent, snapshot, limit)
            expected_rows, expected_scores = models._separate(user, recent, snapshot, limit)
            assert rows.tolist() == expected_rows.tolist(), case
            np.testing.assert_array_equal(scores, expected_scores, err_msg=str(case))
            assert len(rows) <= limit and (case != 1 or len(rows) == 0)
            assert scores.dtype == np.float64 and len(scores) == len(rows)
    finally:
        models.close()
