"""``rtp train``'s command line → ``TrainConfig``: flags reach the config, bad values
fail at the edge with the flag's name."""

import models  # noqa: F401, I001  (first, before TensorFlow: sets TF_USE_LEGACY_KERAS)
import pytest

from models import train as train_cli
from models.config import TrainConfig

REQUIRED = ["--events", "events.jsonl", "--out", "out/models"]


def config(*flags: str) -> TrainConfig:
    return train_cli.config_from_args(train_cli.parser().parse_args([*REQUIRED, *flags]))


def test_serving_k_defaults_to_the_config_default() -> None:
    assert config().serving_k == TrainConfig().serving_k == 100


def test_serving_k_reaches_the_config() -> None:
    assert config("--serving-k", "40").serving_k == 40
    assert config("--serving-k=1").serving_k == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "must be >= 1, got 0"), ("-5", "must be >= 1, got -5"), ("ten", "must be an integer")],
)
def test_serving_k_rejects_bad_values_naming_the_flag(value, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_cli.parser().parse_args([*REQUIRED, f"--serving-k={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --serving-k" in err and message in err


def test_other_flags_still_reach_the_config() -> None:
    got = config("--seed", "3", "--epochs", "2", "--train-fraction", "0.5", "--serving-k", "7")
    assert (got.seed, got.epochs, got.train_fraction, got.serving_k) == (3, 2, 0.5, 7)
