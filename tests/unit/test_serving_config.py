"""Typed serving config and the ``rtp serve`` flags that build it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from feature_repo.store import RedisStoreConfig, SqliteStoreConfig
from serving.app import config_from_args, main, parser
from serving.config import (
    GrpcModelsConfig,
    InProcessModelsConfig,
    RestModelsConfig,
    load_serving_config,
)


def args(*argv: str):
    return parser().parse_args(["--models", "/m", *argv])


def test_defaults_are_the_embedded_stack() -> None:
    config = config_from_args(args())

    assert isinstance(config.models, InProcessModelsConfig)
    assert config.models.timeout_s is None
    assert isinstance(config.store, SqliteStoreConfig)
    assert config.token is None and config.pubsub_topic is None
    assert config.ranking.candidates == 500


def test_grpc_and_rest_flags() -> None:
    grpc = config_from_args(args("--model-backend", "grpc", "--tfserving", "tfs:8500"))
    rest = config_from_args(args("--model-backend", "rest", "--tfserving", "tfs:8501"))

    assert grpc.models == GrpcModelsConfig(address="tfs:8500")
    assert rest.models == RestModelsConfig(url="http://tfs:8501")


def test_version_token_topic_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store.yaml"
    store.write_text("type: redis\nconnection_string: 127.0.0.1:6390\ntimeout_s: 0.2\n")
    monkeypatch.setenv("RTP_SERVE_TOKEN", "from-env")

    config = config_from_args(
        args(
            "--model-version",
            "12",
            "--store-config",
            str(store),
            "--pubsub-topic",
            "projects/p/topics/engagement-events",
        )
    )

    assert config.models.version == 12
    assert config.store == RedisStoreConfig(connection_string="127.0.0.1:6390", timeout_s=0.2)
    assert config.token is not None and config.token.get_secret_value() == "from-env"
    assert "from-env" not in repr(config)
    assert config.pubsub_topic == "projects/p/topics/engagement-events"


def test_config_file_with_flags_on_top(tmp_path: Path) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text(
        "model_base: /elsewhere\n"
        "models: {type: grpc, address: 'tfs:9000', timeout_s: 0.1}\n"
        "ranking: {explore_share: 0.2, seed: 5}\n"
    )

    config = config_from_args(args("--config", str(path)))

    assert config.model_base == "/m"
    assert config.models == GrpcModelsConfig(address="tfs:9000", timeout_s=0.1)
    assert config.ranking.explore_share == 0.2 and config.ranking.seed == 5


def test_new_items_flag_sets_the_item_table(tmp_path: Path) -> None:
    assert config_from_args(args()).new_items is None
    path = tmp_path / "serving.yaml"
    path.write_text("model_base: /m\nnew_items: {table_path: /old, slots: 3}\n")

    config = config_from_args(args("--config", str(path), "--new-items", "/out/items"))

    assert config.new_items is not None
    assert (config.new_items.table_path, config.new_items.slots) == ("/out/items", 3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"models": {"type": "grpc", "adress": "x:1"}}, "adress"),
        ({"models": {"type": "onnx"}}, "onnx"),
        ({"ranking": {"explore_share": 1.5}}, "explore_share"),
        ({"ranking": {"diversity_weight": -0.1}}, "diversity_weight"),
        ({"models": {"type": "rest", "url": "tfs:8501"}}, "url"),
        ({"pubsub_topic": "engagement-events"}, "pubsub_topic"),
        ({"limits": {"max_k": 0}}, "max_k"),
        ({"store": {"type": "sqlite", "pth": "x.db"}}, "pth"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_typos_and_bad_values_fail_with_their_name(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_serving_config({"model_base": "/m", **settings})


def test_tfserving_needs_a_remote_backend() -> None:
    with pytest.raises(ValueError, match="--model-backend grpc or rest"):
        config_from_args(args("--tfserving", "tfs:8500"))


def test_main_explains_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--models", str(tmp_path)]) == 2
    assert "no complete model version" in capsys.readouterr().err


def test_models_without_a_type_are_in_process() -> None:
    settings = {"timeout_s": 0.5, "intra_op_threads": 1}
    config = load_serving_config({"model_base": "/m", "models": settings})

    assert config.models == InProcessModelsConfig(timeout_s=0.5, intra_op_threads=1)


def test_worker_processes_get_the_same_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.app import CONFIG_ENV, app_from_env

    config = config_from_args(args("--token", "t0k", "--model-backend", "grpc"))
    data = config.model_dump(mode="json")
    data["token"] = "t0k"
    monkeypatch.setenv(CONFIG_ENV, json.dumps(data))

    assert app_from_env().state.service.config == config
