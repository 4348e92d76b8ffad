"""The model clients against the TF Serving stand-in's real wire protocol (gRPC and
REST), on a real export (``models.export``) with untrained weights.

The stand-in runs as a subprocess so a test can stop it or make it slow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.candidate_features import FEATURES
from rtp import local_servers as servers
from rtp.tfserving_standin.launch import standin
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.backends import ModelUnavailableError, make_backend
from serving.catalog import load_catalog
from serving.config import GrpcModelsConfig, InProcessModelsConfig, RestModelsConfig
from serving.features import ItemSnapshot
from serving.model_set import ModelSet

pytestmark = pytest.mark.timeout(600)
ITEMS = [f"i{i:04d}" for i in range(600)]
VERSION = 3
DIM = 8
TWO_TOWER = "retrieval"  # the configured default is now the sequential retriever


@pytest.fixture(scope="module")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    export_tiny(base, ITEMS, dim=DIM, k=500, version=VERSION)
    return base


@pytest.fixture(scope="module")
def tfserving(model_base: Path) -> Iterator[tuple[str, str, Path]]:
    """(gRPC address, REST URL, delay file) of a stand-in serving the export."""
    delay_file = model_base / "delay_s"
    with standin(model_base, delay_file=delay_file) as (server, rest_port):
        yield server.address, f"http://{servers.HOST}:{rest_port}", delay_file


def model_set(
    config, model_base: Path, version: int = VERSION, retrieval: str = TWO_TOWER
) -> ModelSet:
    models = ModelSet(
        make_backend(config, str(model_base), version),
        load_catalog(model_base, VERSION),
        retrieval,
        "ranker",
    )
    models.open()
    return models


def backend_configs(tfserving: tuple[str, str, Path]) -> dict:
    """In-process, gRPC and REST configs of the same export."""
    grpc_address, rest_url, _ = tfserving
    return {
        "inprocess": InProcessModelsConfig(),
        "grpc": GrpcModelsConfig(address=grpc_address, timeout_s=5),
        "rest": RestModelsConfig(url=rest_url, timeout_s=5),
    }


def user() -> dict:
    rng = np.random.default_rng(1)
    return {
        "user_emb_short": rng.standard_normal(DIM).tolist(),
        "user_emb_long": rng.standard_normal(DIM).tolist(),
        "user_event_count": 12,
        "user_events_short": 3.5,
        "user_reward_rate_short": 0.4,
    }


def items(n: int) -> ItemSnapshot:
    rng = np.random.default_rng(2)
    snapshot = ItemSnapshot.empty(n)
    return ItemSnapshot(rng.random(snapshot.values.shape) * 5, snapshot.known, 0)


def test_grpc_and_rest_answer_like_the_inprocess_models(
    model_base: Path, tfserving: tuple[str, str, Path]
) -> None:
    grpc_address, rest_url, _ = tfserving
    configs = {
        "inprocess": InProcessModelsConfig(retrieval_model=TWO_TOWER),
        "grpc": GrpcModelsConfig(address=grpc_address, retrieval_model=TWO_TOWER, timeout_s=5),
        "rest": RestModelsConfig(url=rest_url, retrieval_model=TWO_TOWER, timeout_s=5),
    }
    snapshot = items(len(ITEMS))
    answers = {}
    for name, config in configs.items():
        models = model_set(config, model_base)
        try:
            models.backend.check()
            ids, retrieval_scores = models.retrieve(user())
            rows = models.catalog.rows(ids.tolist())
            answers[name] = (ids, retrieval_scores, models.rank(user(), rows, snapshot))
            # What a request ranks: one fused call in-process, separate calls remotely.
            assert (models.fused is not None) == (name == "inprocess"), name
            recent = rows[[3, 0, 40]]
            answers[name + "-ranked"] = models.ranked_candidates(user(), recent, snapshot, 100)
            signatures = {m: models.backend.signature(m) for m in ("retrieval", "ranker")}
            answers[name + "-signatures"] = signatures
        finally:
            models.close()

    ids, retrieval_scores, ranker_scores = answers["inprocess"]
    assert len(ids) == 500 and ids.dtype == object and isinstance(ids[0], str)
    assert len(ranker_scores) == 500
    for name in ("grpc", "rest"):
        assert answers[name][0].tolist() == ids.tolist(), name
        np.testing.assert_array_equal(answers[name][1], retrieval_scores)
        np.testing.assert_array_equal(answers[name][2], ranker_scores)
        assert answers[name + "-signatures"] == answers["inprocess-signatures"], name
        expected_rows, expected_scores = answers["inprocess-ranked"]
        assert answers[name + "-ranked"][0].tolist() == expected_rows.tolist(), name
        np.testing.assert_array_equal(answers[name + "-ranked"][1], expected_scores)
    rows, scores = answers["inprocess-ranked"]
    assert len(rows) == len(scores) == 100 and not set(rows.tolist()) & set(recent.tolist())


def test_grpc_and_rest_serve_the_sequential_retriever_like_inprocess(
    model_base: Path, tfserving: tuple[str, str, Path]
) -> None:
    configs = backend_configs(tfserving)  # the sequential retriever, the default
    history = {
        "user_recent_items": [ITEMS[7], "unknown", ITEMS[3]],
        "user_recent_ts_ms": [3_000_000, 2_000_000, 1_000_000],
        "user_recent_rewards": [1.0, 0.0, 0.5],
    }
    answers = {}
    for name, config in configs.items():
        models = model_set(config, model_base, retrieval="sequential")
        try:
            assert models.sequential, name
            answers[name] = models.sequence_candidates(history)
        finally:
            models.close()
    rows, probability = answers["inprocess"]
    assert len(rows) == 500 and 0 < probability.sum() <= 1.0
    for name in ("grpc", "rest"):
        assert answers[name][0].tolist() == rows.tolist(), name
        np.testing.assert_array_equal(answers[name][1], probability)


def test_grpc_and_rest_rank_candidates_like_inprocess(
    model_base: Path, tfserving: tuple[str, str, Path]
) -> None:
    """The candidate ranker rides in the sequential model's version
    (``rank_candidates``): every backend gives the same scores."""
    configs = backend_configs(tfserving)
    features = np.random.default_rng(3).normal(size=(300, len(FEATURES))).astype(np.float32)
    scores = {}
    for name, config in configs.items():
        models = model_set(config, model_base, retrieval="sequential")
        try:
            assert models.candidate_ranker, name
            scores[name] = models.rank_candidates(features)
        finally:
            models.close()
    assert scores["inprocess"].shape == (300,)
    for name in ("grpc", "rest"):
        np.testing.assert_allclose(scores[name], scores["inprocess"], rtol=1e-6, err_msg=name)


def test_unknown_version_is_not_found(model_base: Path, tfserving: tuple[str, str, Path]) -> None:
    grpc_address, rest_url, _ = tfserving
    for config in (GrpcModelsConfig(address=grpc_address), RestModelsConfig(url=rest_url)):
        backend = make_backend(config, str(model_base), VERSION + 1)
        with pytest.raises(ModelUnavailableError, match=r"NOT_FOUND|HTTP 404"):
            backend.open()
        backend.close()


def test_tensor_codec_matches_tensorflow() -> None:
    import tensorflow as tf

    from serving.backends.tensors import from_tensor_proto, to_tensor_proto

    arrays = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1, -2, 3], dtype=np.int64),
        np.array([["a", "bé"], ["c", ""]], dtype=object),
        np.array([0.5], dtype=np.float64),
    ]
    for array in arrays:
        # Ours → TensorFlow's decoder (strings come back as bytes).
        decoded = tf.make_ndarray(to_tensor_proto(array))
        if array.dtype == object:
            decoded = np.vectorize(bytes.decode, otypes=[object])(decoded)
        assert decoded.tolist() == array.tolist()
        # TensorFlow's encoder → ours.
        encoded = tf.make_tensor_proto(array.astype(str) if array.dtype == object else array)
        assert from_tensor_proto(encoded).tolist() == array.tolist()
    # Values sent as repeated fields (not tensor_content), including a splat.
    splat = tf.make_tensor_proto(np.float32(2.5), shape=[2, 2])
    assert from_tensor_proto(splat).tolist() == [[2.5, 2.5], [2.5, 2.5]]


def test_slow_server_hits_the_timeout(model_base: Path, tfserving: tuple[str, str, Path]) -> None:
    grpc_address, rest_url, delay_file = tfserving
    for config in (
        GrpcModelsConfig(address=grpc_address, retrieval_model=TWO_TOWER, timeout_s=0.3),
        RestModelsConfig(url=rest_url, retrieval_model=TWO_TOWER, timeout_s=0.3),
    ):
        models = model_set(config, model_base)
        delay_file.write_text("2.0")
        try:
            # The client's deadline (0.3 s), not the 2 s delay, ends the call.
            with pytest.raises(ModelUnavailableError, match=r"DEADLINE_EXCEEDED|Timeout"):
                models.retrieve(user())
        finally:
            delay_file.unlink()
        models.retrieve(user())  # fast again
        models.close()
