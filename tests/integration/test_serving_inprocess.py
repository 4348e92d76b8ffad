"""The in-process backend's fast call paths on a real export (``models.export``, the
layer sizes of ``rtp train``, untrained weights): packing the inputs into one
tensor per (dtype, row shape) changes nothing the models answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.backends import inprocess
from serving.backends.inprocess import InProcessBackend
from serving.config import InProcessModelsConfig
from tests.tfserving_standin.tiny_export import export_tiny

pytestmark = pytest.mark.timeout(600)
ITEMS = [f"i{i:04d}" for i in range(300)]
VERSION = 1
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
    backend = InProcessBackend(InProcessModelsConfig(), str(model_base), VERSION)
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
