"""Sequential retriever: buckets by hand, save → load → same top-K, pipeline input names."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import tensorflow as tf

import models  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from feature_repo.features import USER_FEATURES
from models import sequential as sq
from models.catalog import Catalog
from models.sequence_training import train_sequence, user_sequences
from models.sequential_export import SEQUENCE_INPUTS, KerasMetadataNotes, SequentialModule, save

T0 = 1_700_000_000_000


def test_gap_and_reward_buckets_by_hand() -> None:
    ts = tf.constant([[0, T0, T0, T0 + 1000, T0 + 9000]], tf.int64)
    valid = tf.constant([[False, True, True, True, True]])
    # padding 0; first event 0; same second 0; 1 s → 1 + log2(1) = 1; 8 s → 1 + 3 = 4
    assert sq.gap_buckets(ts, valid).numpy().tolist() == [[0, 0, 0, 1, 4]]
    rewards = tf.constant([[0.0, -3.0, -0.5, 0.0, 1.5]])
    assert sq.reward_buckets(rewards, valid).numpy().tolist() == [[0, 0, 3, 4, 7]]


def test_epochs_shrink_to_the_step_budget() -> None:
    config = sq.SequentialConfig(epochs=12, batch_size=64, max_steps=3000)
    assert sq.epochs_within(3007, config) == 12  # ml-latest-small: 47 steps an epoch
    assert sq.epochs_within(32_000, config) == 6  # 500 steps an epoch
    assert sq.epochs_within(10**7, config) == 1


def test_training_windows_label_the_next_target() -> None:
    rows = np.array([3, 1, 2])
    seq = [(rows, np.array([1, 2, 3]) * 1000, np.zeros(3, np.float32), np.array([1, 0, 1], bool))]
    r, _, _, targets = sq.training_windows(seq, 4)
    assert r.tolist() == [[-1, -1, 3, 1]]
    assert targets.tolist() == [[-1, -1, -1, 2]]  # event 1 (row 1) is not a target


def small_catalog(n: int) -> Catalog:
    return Catalog(
        item_ids=np.array([f"i{k}" for k in range(n)], dtype=object),
        titles=np.array([f"title {k % 3}" for k in range(n)], dtype=object),
        genres=np.array(["a|b" if k % 2 else "c" for k in range(n)], dtype=object),
        duration_ms=np.zeros(n, dtype=np.int64),
    )


@pytest.fixture(scope="module")
def trained():
    n = 8
    catalog = small_catalog(n)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(12), 6)
    rows = np.concatenate([(np.arange(6) + u) % n for u in range(12)])
    ts = T0 + np.arange(len(rows), dtype=np.int64) * 60_000
    rewards = rng.uniform(-1, 1, len(rows)).astype(np.float32)
    sequences = user_sequences(users, rows, ts, rewards, np.ones(len(rows), bool))
    config = sq.SequentialConfig(max_len=4, dim=8, heads=2, blocks=1, epochs=2, batch_size=8)
    return catalog, train_sequence(catalog, sequences, config)


def test_save_load_same_top_k(trained, tmp_path, caplog) -> None:
    catalog, model = trained
    module = SequentialModule(model.model, catalog.item_ids, k=5, version=7)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        save(module, tmp_path)
    notes = [r for r in caplog.records if r.getMessage().startswith(KerasMetadataNotes.NOTES)]
    assert notes == []  # Keras's notes on the Python config: quiet by default
    loaded = tf.saved_model.load(str(tmp_path))
    serve = loaded.signatures["serving_default"]
    assert set(serve.structured_input_signature[1]) == set(SEQUENCE_INPUTS)
    assert set(SEQUENCE_INPUTS) <= set(USER_FEATURES)  # the pipeline's own feature names
    newest_first = {
        "user_recent_items": tf.constant([["i3", "i2", "i1"]]),
        "user_recent_ts_ms": tf.constant([[T0 + 3000, T0 + 2000, T0 + 1000]], tf.int64),
        "user_recent_rewards": tf.constant([[1.0, 0.5, -0.5]]),
    }
    out = serve(**newest_first)
    rows = np.array([[-1, 1, 2, 3]])
    ts = np.array([[0, T0 + 1000, T0 + 2000, T0 + 3000]])
    rw = np.array([[0.0, -0.5, 0.5, 1.0]], np.float32)
    scores = model.queries(rows, ts, rw) @ model.item_table().T
    expected = np.argsort(-scores[0], kind="stable")[:5]
    assert [x.decode() for x in out["item_ids"].numpy()[0]] == [f"i{r}" for r in expected]
    np.testing.assert_allclose(out["scores"].numpy()[0], scores[0][expected], rtol=1e-5)
    lse = np.log(np.exp(scores[0] - scores[0].max()).sum()) + scores[0].max()
    np.testing.assert_allclose(out["log_normalizer"].numpy()[0], lse, rtol=1e-5)
    rows_out = loaded.signatures["candidate_rows"](**newest_first)["item_rows"].numpy()[0]
    assert rows_out.tolist() == expected.tolist()


def test_one_new_event_changes_the_candidates(trained) -> None:
    catalog, model = trained
    module = SequentialModule(model.model, catalog.item_ids, k=8, version=7)
    before = module.serve(
        {
            "user_recent_items": tf.constant([["i1"]]),
            "user_recent_ts_ms": tf.constant([[T0]], tf.int64),
            "user_recent_rewards": tf.constant([[1.0]]),
        }
    )
    after = module.serve(
        {
            "user_recent_items": tf.constant([["i5", "i1"]]),
            "user_recent_ts_ms": tf.constant([[T0 + 60_000, T0]], tf.int64),
            "user_recent_rewards": tf.constant([[1.0, 1.0]]),
        }
    )
    assert not np.allclose(before["scores"].numpy(), after["scores"].numpy())


def test_empty_and_unknown_histories_are_served(trained) -> None:
    catalog, model = trained
    module = SequentialModule(model.model, catalog.item_ids, k=3, version=7)
    empty = module.serve(
        {
            "user_recent_items": tf.zeros([2, 0], tf.string),
            "user_recent_ts_ms": tf.zeros([2, 0], tf.int64),
            "user_recent_rewards": tf.zeros([2, 0], tf.float32),
        }
    )
    assert empty["item_ids"].shape == (2, 3)
    unknown = module.serve(
        {
            "user_recent_items": tf.constant([["nope"] * 9]),
            "user_recent_ts_ms": tf.zeros([1, 9], tf.int64),
            "user_recent_rewards": tf.zeros([1, 9], tf.float32),
        }
    )
    np.testing.assert_allclose(unknown["scores"].numpy()[0], empty["scores"].numpy()[0], rtol=1e-5)


def test_exposure_events_are_not_inputs_when_the_log_has_them(trained) -> None:
    """With ``ignore_zero_reward`` an impression (reward 0) leaves the query as it was."""
    _, model = trained
    config = dataclasses.replace(model.config, ignore_zero_reward=True, dropout=0.0)
    blind = sq.SequentialRetriever(model.model.encoder, config)
    rows = np.array([[-1, -1, 1, 2], [-1, 1, 2, 5]])
    ts = np.array([[0, 0, T0, T0 + 1000], [0, T0, T0 + 1000, T0 + 2000]])
    rewards = np.array([[0, 0, 1.0, 1.0], [0, 1.0, 1.0, 0.0]], np.float32)
    table = blind.encoder.all_items()
    out = blind.encode(rows, ts, rewards, table)[:, -1, :].numpy()
    shifted = blind.encode(np.array([[-1, 1, 2, -1]]), ts[1:], rewards[1:], table)[:, -1, :]
    np.testing.assert_allclose(out[1], shifted.numpy()[0], rtol=1e-5, atol=1e-6)


def test_candidate_ranker_rides_in_the_same_version(trained, tmp_path) -> None:
    """The candidate ranker is exported as the sequential model's ``rank_candidates``
    signature (one version for everything): save → load → the same scores."""
    from models.candidate_features import FEATURES
    from models.candidate_ranker import (
        CandidateRankerConfig,
        predict_scores,
        train_candidate_ranker,
    )

    catalog, model = trained
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, len(FEATURES))).astype(np.float32)
    engaged = (x[:, 0] > 0.5).astype(np.float32)
    reward = np.where(engaged > 0, 1.0, 0.0).astype(np.float32)
    config = CandidateRankerConfig(hidden=(8,), epochs=2, batch_size=64, reward_weight=0.5)
    ranker = train_candidate_ranker(x, engaged, reward, config)
    module = SequentialModule(model.model, catalog.item_ids, k=5, version=7, ranker=ranker)
    tf.saved_model.save(module, str(tmp_path), signatures=module.signatures())
    rank = tf.saved_model.load(str(tmp_path)).signatures["rank_candidates"]
    out = rank(candidate_features=tf.constant(x[:10]))
    np.testing.assert_allclose(out["score"].numpy(), predict_scores(ranker, x[:10]), rtol=1e-5)
    p = out["engagement_probability"].numpy()
    assert np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(
        out["score"].numpy(), np.log(p) + 0.5 * out["expected_reward"].numpy(), rtol=1e-4
    )


def test_pretrained_content_vectors_join_the_item_table(trained, tmp_path) -> None:
    """Items also embed from a pretrained content table (``models.content_items``): two
    items with the same pretrained vector and no id get the same exported vector."""
    from models.content_items import ContentItemEncoder

    catalog, _ = trained
    pretrained = np.random.default_rng(2).normal(size=(len(catalog), 6)).astype(np.float32)
    pretrained[7] = pretrained[6]
    users = np.repeat(np.arange(6), 4)
    rows = np.concatenate([(np.arange(4) + u) % 6 for u in range(6)])  # 6, 7 never targets
    ts = T0 + np.arange(len(rows), dtype=np.int64) * 60_000
    sequences = user_sequences(
        users, rows, ts, np.ones(len(rows), np.float32), np.ones(len(rows), bool)
    )
    config = sq.SequentialConfig(max_len=4, dim=8, heads=2, blocks=1, epochs=1, batch_size=8)
    model = train_sequence(catalog, sequences, config, pretrained=pretrained)
    assert isinstance(model.model.encoder, ContentItemEncoder)
    module = SequentialModule(model.model, catalog.item_ids, k=5, version=7)
    tf.saved_model.save(module, str(tmp_path), signatures=module.signatures())
    table = model.item_table()[:, :-1]  # the last column is the bias
    # rows 6 and 7: unknown ids, titles "title 0"/"title 1", genres c / a|b differ...
    # so compare the pretrained part alone: it is what the projection adds
    projected = model.model.encoder.pretrained_out(tf.constant(pretrained)).numpy()
    np.testing.assert_allclose(projected[6], projected[7])
    assert not np.allclose(table, table - projected)


def test_keras_metadata_notes_are_dropped_and_other_warnings_kept() -> None:
    notes = KerasMetadataNotes()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("tensorflow", logging.WARNING, "x", 1, message, None, None)

    assert not notes.filter(record("Skipping full serialization of TF-Keras layer <x>, ..."))
    assert not notes.filter(
        record("Model's `__init__()` arguments contain non-serializable objects. Please ...")
    )
    assert notes.filter(record("Found untraced functions such as ..."))


def test_unknown_items_score_from_content_plus_the_fitted_offset(tmp_path) -> None:
    """Items no training event targeted: no id vector of their own, scored with
    ``unknown_offset`` added, the same in NumPy and exported."""
    n = 10
    catalog = small_catalog(n)
    users = np.repeat(np.arange(10), 6)
    rows = np.concatenate([(np.arange(6) + u) % 7 for u in range(10)])  # rows 7..9 unseen
    ts = T0 + np.arange(len(rows), dtype=np.int64) * 60_000
    rewards = np.ones(len(rows), np.float32)
    sequences = user_sequences(users, rows, ts, rewards, np.ones(len(rows), bool))
    config = sq.SequentialConfig(
        max_len=4,
        dim=8,
        heads=2,
        blocks=1,
        epochs=2,
        batch_size=8,
    )
    trained = dataclasses.replace(train_sequence(catalog, sequences, config), unknown_offset=2.5)
    assert np.isfinite(trained.losses).all()
    assert trained.item_bias().tolist() == [0.0] * 7 + [2.5] * 3
    assert trained.model.encoder.known().numpy().tolist() == [True] * 7 + [False] * 3
    module = SequentialModule(
        trained.model, catalog.item_ids, k=n, version=7, item_bias=trained.item_bias()
    )
    save(module, tmp_path)
    serve = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    out = serve(
        user_recent_items=tf.constant([["i3", "i8"]]),
        user_recent_ts_ms=tf.constant([[T0 + 2000, T0 + 1000]], tf.int64),
        user_recent_rewards=tf.constant([[1.0, 1.0]]),
    )
    expected = (
        trained.queries(
            np.array([[-1, -1, 8, 3]]),
            np.array([[0, 0, T0 + 1000, T0 + 2000]]),
            np.array([[0, 0, 1.0, 1.0]], np.float32),
        )
        @ trained.item_table().T
    )
    got = dict(
        zip([x.decode() for x in out["item_ids"].numpy()[0]], out["scores"].numpy()[0], strict=True)
    )
    np.testing.assert_allclose([got[f"i{r}"] for r in range(n)], expected[0], rtol=1e-5)


def test_a_padded_batch_answers_each_history_as_alone(trained) -> None:
    """``serving.batching`` merges users' histories of different lengths by padding
    them at the end with "" (and 0): each row must answer what the user alone does."""
    from serving.batching import merge

    catalog, model = trained
    module = SequentialModule(model.model, catalog.item_ids, k=5, version=7)
    histories = [["i3", "i2", "i1"], [], ["i7"], ["i1", "i4", "i6", "i0", "i2", "i5"]]
    alone = []
    for items in histories:
        n = len(items)
        alone.append(
            {
                "user_recent_items": np.array([items], dtype=object).reshape(1, n),
                "user_recent_ts_ms": np.array([[T0 - 1000 * j for j in range(n)]], np.int64),
                "user_recent_rewards": np.linspace(-1, 1, n, dtype=np.float32)[None],
            }
        )
    variable = frozenset(alone[0])
    batched = module.rows({k: tf.constant(v) for k, v in merge(alone, variable).items()})
    for i, inputs in enumerate(alone):
        one = module.rows({k: tf.constant(v) for k, v in inputs.items()})
        assert batched["item_rows"].numpy()[i].tolist() == one["item_rows"].numpy()[0].tolist()
        np.testing.assert_allclose(
            batched["scores"].numpy()[i], one["scores"].numpy()[0], rtol=1e-5, atol=1e-6
        )
