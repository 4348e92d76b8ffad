"""Tiny end-to-end training, SavedModel export and the serving contract.

One module-scoped run trains both models for one epoch on generated ratings
(history written with the pure-Python state code instead of the Beam backfill)
and exports one version; the tests then check what TF Serving and the pipeline
will read.
"""

import models  # noqa: F401, I001  (first, before TensorFlow: sets TF_USE_LEGACY_KERAS)
import json
import pathlib
import time

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from beam_pipelines.embedding_source import newest_table
from models import export, registry
from models import train as train_cli
from models.training_log import load_events
from models.inputs import RANKER_INPUTS, input_specs
from models.ranker import predict
from models.retrieval import query_embeddings
from tests.helpers.ratings import write_history, write_items_jsonl, write_movielens
from models.towers import QUERY_INPUTS

DIM = 32
DOCUMENTED_OUTPUTS = {
    "retrieval": {"scores": (tf.float32, [None, 100]), "item_ids": (tf.string, [None, 100])},
    "query_embedding": {"query_embedding": (tf.float32, [None, DIM])},
    "candidate_rows": {"scores": (tf.float32, [None, 100]), "item_rows": (tf.int32, [None, 100])},
    "ranker": {
        "engagement_probability": (tf.float32, [None]),
        "expected_reward": (tf.float32, [None]),
    },
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    ratings, movies = write_movielens(root, n_users=25, n_items=150, n_events=700, seed=1)
    offline = write_history(load_events(str(ratings), "movielens").frame, root / "offline")
    base = root / "models"
    args = train_cli.parser().parse_args(
        [
            "--events",
            str(ratings),
            "--format",
            "movielens",
            "--items",
            str(movies),
            "--out",
            str(base),
            "--history",
            str(offline),
            "--epochs",
            "1",
            "--seed",
            "3",
            "--join-engine",
            "asof",
        ]
    )
    config = train_cli.config_from_args(args)
    started = time.perf_counter()
    result = train_cli.fit(args, config, started)
    version = train_cli.export_trained(result, base, config)
    return result, base, version


def _specs(signature) -> dict[str, tuple[tf.DType, list]]:
    _, inputs = signature.structured_input_signature
    return {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()}


def _outputs(signature) -> dict[str, tuple[tf.DType, list]]:
    return {n: (s.dtype, s.shape.as_list()) for n, s in signature.structured_outputs.items()}


def test_metrics_are_computed(trained) -> None:
    result, _, _ = trained
    metrics = result.metrics
    assert metrics["validation_examples"] > 0 and metrics["train_examples"] > 0
    for k in (10, 50, 100):
        assert 0.0 <= metrics["retrieval"][f"recall@{k}"] <= 1.0
    assert 0.0 <= metrics["ranker"]["auc"] <= 1.0 and metrics["ranker"]["rmse"] > 0


def test_signatures_are_as_documented(trained) -> None:
    _, base, version = trained
    retrieval = tf.saved_model.load(str(base / "retrieval" / str(version)))
    ranker = tf.saved_model.load(str(base / "ranker" / str(version)))
    expected_query = {
        n: (tf.as_dtype(d), list(s)) for n, (d, s) in input_specs(QUERY_INPUTS, DIM).items()
    }
    expected_ranker = {
        n: (tf.as_dtype(d), list(s)) for n, (d, s) in input_specs(RANKER_INPUTS, DIM).items()
    }
    assert set(retrieval.signatures) == {"serving_default", "query_embedding", "candidate_rows"}
    for name in retrieval.signatures:
        assert _specs(retrieval.signatures[name]) == expected_query, name
    assert _outputs(retrieval.signatures["candidate_rows"]) == DOCUMENTED_OUTPUTS["candidate_rows"]
    assert _specs(ranker.signatures["serving_default"]) == expected_ranker
    assert _outputs(retrieval.signatures["serving_default"]) == DOCUMENTED_OUTPUTS["retrieval"]
    assert (
        _outputs(retrieval.signatures["query_embedding"]) == DOCUMENTED_OUTPUTS["query_embedding"]
    )
    assert _outputs(ranker.signatures["serving_default"]) == DOCUMENTED_OUTPUTS["ranker"]
    assert expected_query["user_event_count"] == (tf.int64, [None])
    assert expected_ranker["item_embedding"] == (tf.float32, [None, DIM])


def test_save_load_gives_identical_predictions(trained) -> None:
    result, base, version = trained
    bundle = registry.load_version(base, version)
    inputs = result.data.valid.query_inputs(result.table)
    expected = query_embeddings(result.retrieval.query_tower, inputs)
    loaded = bundle.retrieval.signatures["query_embedding"](
        **{k: tf.constant(v) for k, v in inputs.items()}
    )["query_embedding"].numpy()
    np.testing.assert_allclose(loaded, expected, rtol=1e-5, atol=1e-6)

    top = bundle.retrieval.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in inputs.items()}
    )
    scores = expected @ result.table.T
    np.testing.assert_allclose(
        top["scores"].numpy(), -np.sort(-scores, axis=1)[:, :100], rtol=1e-5, atol=1e-5
    )

    ranker_inputs = result.data.valid.ranker_inputs(result.table)
    probability, reward = predict(result.ranker, ranker_inputs)
    out = bundle.ranker.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in ranker_inputs.items()}
    )
    np.testing.assert_allclose(
        out["engagement_probability"].numpy(), probability, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(out["expected_reward"].numpy(), reward, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bundle.table, result.table)


def test_candidate_rows_are_the_top_k_as_table_rows(trained) -> None:
    result, base, version = trained
    retrieval = tf.saved_model.load(str(base / "retrieval" / str(version)))
    bundle = registry.load_version(base, version)
    inputs = {k: tf.constant(v) for k, v in result.data.valid.query_inputs(result.table).items()}
    top = retrieval.signatures["serving_default"](**inputs)
    rows = retrieval.signatures["candidate_rows"](**inputs)
    np.testing.assert_array_equal(rows["scores"].numpy(), top["scores"].numpy())
    ids = np.asarray(bundle.item_ids)[rows["item_rows"].numpy()]
    assert ids.tolist() == top["item_ids"].numpy().astype(str).tolist()


def test_bundle_api_matches_the_signatures(trained) -> None:
    _, base, version = trained
    bundle = registry.load_latest(base)
    assert bundle is not None and bundle.version == version
    user = {
        "user_recent_items": ["1", "2", "3"],
        "user_recent_ts_ms": [3000, 2000, 1000],
        "user_recent_rewards": [1.0, -0.5, 0.5],
        "user_embedding_version": "hashed-rtp-d32",
        "user_event_count": 3,
        "user_reward_rate_long": 0.33,
    }
    query = bundle.query_embedding([user, None])
    assert query.shape == (2, DIM)
    top = bundle.retrieve([user], k=5)[0]
    assert len(top) == 5 and [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    excluded = bundle.retrieve([user], k=5, exclude=[[top[0][0]]])[0]
    assert [i for i, _ in excluded] == [i for i, _ in top[1:]] + [excluded[-1][0]]
    assert excluded[0][1] == pytest.approx(top[1][1], rel=1e-5)
    scores = bundle.score(user, ["1", "2", "unknown"], [{"item_event_count": 4}, None, None])
    assert scores["engagement_probability"].shape == (3,)
    assert ((scores["engagement_probability"] > 0) & (scores["engagement_probability"] < 1)).all()


def test_item_table_is_what_the_pipeline_reads(trained) -> None:
    result, base, version = trained
    table = newest_table(base)
    assert table is not None and table.version == str(version)
    assert len(table) == len(result.data.catalog)
    first = str(result.data.catalog.item_ids[0])
    np.testing.assert_allclose(table.get(first), result.table[0], rtol=1e-6)


def test_warmup_requests_run_on_the_signatures(trained) -> None:
    _, base, version = trained
    for name in ("retrieval", "ranker"):
        directory = base / name / str(version)
        loaded = tf.saved_model.load(str(directory))
        records = list(tf.data.TFRecordDataset(str(directory / export.WARMUP_FILE)))
        assert records
        for record in records:
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = log.predict_log.request
            assert request.model_spec.name == name
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            assert set(inputs) == set(_specs(loaded.signatures["serving_default"]))
            loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})


def test_models_config_names_every_model(trained) -> None:
    _, base, _ = trained
    config = text_format.Parse(
        (base / export.MODELS_CONFIG).read_text(), model_server_config_pb2.ModelServerConfig()
    )
    paths = {c.name: c.base_path for c in config.model_config_list.config}
    assert paths == {
        n: str(pathlib.Path(base).resolve() / n) for n in ("retrieval", "ranker", "sequential")
    }


def test_markers_and_model_info(trained) -> None:
    _, base, version = trained
    for part in registry.PARTS:
        marker = json.loads((base / part / str(version) / export.COMPLETE).read_text())
        assert marker["version"] == version
    info = json.loads((base / "item_embeddings" / str(version) / "model_info.json").read_text())
    assert info["half_lives_s"] == [3600.0, 30 * 86400.0]


def test_every_version_carries_its_training_popularity(trained) -> None:
    """popular.json: engaged training examples per item, most first (the service's
    popular list for a cold user on an empty store)."""
    result, base, version = trained
    path = base / "item_embeddings" / str(version) / export.POPULAR_FILE
    document = json.loads(path.read_text())
    train = result.data.train
    engaged = train.item_rows[train.engaged.astype(bool)]
    ids = result.data.catalog.item_ids
    counts = np.bincount(engaged, minlength=len(ids))
    assert document["items"] and sum(c for _, c in document["items"]) == len(engaged)
    assert dict(document["items"]) == {str(ids[i]): counts[i] for i in np.flatnonzero(counts)}
    scores = [c for _, c in document["items"]]
    assert scores == sorted(scores, reverse=True)


def test_items_jsonl_metadata(tmp_path) -> None:
    from models.catalog import build_catalog
    from tests.helpers.ratings import rating_events

    _, movies = rating_events(n_items=5, n_events=3)
    path = write_items_jsonl(tmp_path / "items.jsonl", movies)
    catalog = build_catalog(["1", "99"], str(path))
    assert list(catalog.item_ids) == ["1", "2", "3", "4", "5", "99"]
    assert catalog.duration_ms[0] == 16_000 and catalog.titles[-1] == ""
