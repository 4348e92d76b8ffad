"""The reward function: preset values worked out by hand, config validation, loading."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from beam_pipelines.events import EngagementEvent
from beam_pipelines.rewards import (
    MOVIELENS,
    MUSIC,
    PRESETS,
    SHORT_VIDEO,
    ConstantRule,
    RewardConfig,
    WatchRatioRule,
    compute_reward,
    load_reward_config,
)


def _event(event_type: str, watch_ms=None, duration_ms=None, context=None) -> EngagementEvent:
    return EngagementEvent(
        event_id="e-1",
        user_id="u-1",
        item_id="i-1",
        event_type=event_type,
        timestamp_ms=1_700_000_000_000,
        watch_ms=watch_ms,
        item_duration_ms=duration_ms,
        context=context,
    )


# --- presets, by hand ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("impression", (0.0, False)),
        ("like", (1.0, True)),
        ("share", (2.0, True)),
        ("follow", (2.0, True)),
        ("skip", (-0.5, False)),
        ("hide", (-2.0, False)),
    ],
)
def test_short_video_constant_rewards(event_type, expected):
    assert SHORT_VIDEO.reward(_event(event_type)) == expected


@pytest.mark.parametrize(
    ("watch_ms", "duration_ms", "expected"),
    [
        (0, 10_000, (0.0, False)),
        (2_500, 10_000, (0.25, False)),
        (4_999, 10_000, (0.4999, False)),
        (5_000, 10_000, (0.5, True)),  # engaged from half the item
        (10_000, 10_000, (1.0, True)),
        (15_000, 10_000, (1.5, True)),
        (15_001, 10_000, (1.5, True)),  # clipped at the top
        (100_000, 10_000, (1.5, True)),  # 10x, the validator's limit
    ],
)
def test_short_video_view_is_the_clipped_watch_ratio(watch_ms, duration_ms, expected):
    reward, engaged = SHORT_VIDEO.reward(_event("view", watch_ms, duration_ms))
    assert reward == pytest.approx(expected[0])
    assert engaged is expected[1]


def test_watch_ratio_is_clipped_at_the_bottom():
    # The parser rejects negative watch_ms; the rule clips on its own anyway.
    assert compute_reward(WatchRatioRule(), _event("view", -3_000, 10_000)) == (
        0.0,
        False,
    )
    rule = WatchRatioRule(clip_min=0.2, clip_max=0.8, engaged_min_ratio=0.1)
    assert compute_reward(rule, _event("view", 500, 10_000)) == (0.2, False)
    assert compute_reward(rule, _event("view", 1_500, 10_000)) == (0.2, True)
    assert compute_reward(rule, _event("view", 9_000, 10_000)) == (0.8, True)


@pytest.mark.parametrize(("watch_ms", "duration_ms"), [(None, 10_000), (5_000, None), (None, None)])
def test_view_without_watch_or_duration_gets_the_missing_reward(watch_ms, duration_ms):
    assert SHORT_VIDEO.reward(_event("view", watch_ms, duration_ms)) == (0.0, False)
    rule = WatchRatioRule(missing=-0.1)
    assert compute_reward(rule, _event("view", watch_ms, duration_ms)) == (-0.1, False)


@pytest.mark.parametrize(
    ("event_type", "watch_ms", "expected"),
    [
        ("stream", 30_000, (1.0, True)),  # exactly 30 s counts
        ("stream", 240_000, (1.0, True)),
        ("stream", 29_999, (-0.5, False)),
        ("stream", 0, (-0.5, False)),
        ("stream", None, (-0.5, False)),
        ("skip", None, (-0.5, False)),
        ("save", None, (1.5, True)),
    ],
)
def test_music_preset(event_type, watch_ms, expected):
    assert MUSIC.reward(_event(event_type, watch_ms)) == expected


@pytest.mark.parametrize(
    ("rating", "expected"),
    [
        (5, (1.0, True)),
        (4.5, (0.75, True)),
        (4, (0.5, True)),
        (3, (0.0, False)),  # neutral is not an engagement
        (2, (-0.5, False)),
        (1, (-1.0, False)),
        (0.5, (-1.25, False)),
    ],
)
def test_movielens_reward_is_centered_rating(rating, expected):
    assert MOVIELENS.reward(_event("rating", context={"rating": rating})) == expected


@pytest.mark.parametrize("context", [None, {}, {"rating": "4"}, {"rating": True}, {"stars": 5}])
def test_movielens_without_a_numeric_rating_is_neutral(context):
    assert MOVIELENS.reward(_event("rating", context=context)) == (0.0, False)


def test_exposures_and_event_types_of_the_presets():
    assert SHORT_VIDEO.event_types == {
        "impression",
        "view",
        "like",
        "share",
        "follow",
        "skip",
        "hide",
    }
    assert SHORT_VIDEO.is_exposure("impression")
    assert not SHORT_VIDEO.is_exposure("like")
    assert MUSIC.is_exposure("stream") and MUSIC.is_exposure("skip")
    assert not MUSIC.is_exposure("save")
    assert MOVIELENS.is_exposure("rating")  # no exposure types: every event is one


def test_event_type_without_a_rule_is_a_key_error():
    with pytest.raises(KeyError):
        SHORT_VIDEO.reward(_event("stream"))


def test_configs_are_frozen():
    with pytest.raises(pydantic.ValidationError):
        SHORT_VIDEO.name = "other"


# --- config validation ---------------------------------------------------------------


def _config(**overrides) -> dict:
    config = {
        "name": "custom",
        "version": 2,
        "rules": {
            "impression": {"kind": "constant", "reward": 0.0, "engaged": False},
            "view": {"kind": "watch_ratio", "clip_min": 0.0, "clip_max": 2.0},
            "like": {"kind": "constant", "reward": 1.0, "engaged": True},
        },
        "exposure_event_types": ["impression"],
    }
    config.update(overrides)
    return config


def test_a_dict_config_is_validated_and_typed():
    config = load_reward_config(_config())
    assert isinstance(config, RewardConfig)
    assert config.version == 2
    assert isinstance(config.rules["like"], ConstantRule)
    assert isinstance(config.rules["view"], WatchRatioRule)
    assert config.reward(_event("view", 30_000, 10_000)) == (2.0, True)
    assert config.exposure_event_types == ("impression",)


def test_unknown_top_level_key_is_named():
    with pytest.raises(pydantic.ValidationError, match="exposure_types"):
        load_reward_config(_config(exposure_types=["impression"]))


def test_unknown_key_inside_a_rule_is_named():
    rules = _config()["rules"] | {
        "like": {"kind": "constant", "reward": 1, "engaged": 1, "rewrd": 2}
    }
    with pytest.raises(pydantic.ValidationError, match="rewrd"):
        load_reward_config(_config(rules=rules))


def test_unknown_rule_kind_is_rejected():
    rules = {"like": {"kind": "bonus", "reward": 1}}
    with pytest.raises(pydantic.ValidationError, match="kind"):
        load_reward_config(_config(rules=rules, exposure_event_types=[]))


def test_exposure_type_must_have_a_rule():
    with pytest.raises(pydantic.ValidationError, match="stream"):
        load_reward_config(_config(exposure_event_types=["impression", "stream"]))


def test_clip_min_above_clip_max_is_rejected():
    rules = {"view": {"kind": "watch_ratio", "clip_min": 1.0, "clip_max": 0.5}}
    with pytest.raises(pydantic.ValidationError, match="clip_min"):
        load_reward_config(_config(rules=rules, exposure_event_types=[]))
    with pytest.raises(pydantic.ValidationError, match="clip_min"):
        WatchRatioRule(clip_min=1.0, clip_max=0.5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"rules": {}, "exposure_event_types": []},
        {"version": 0},
        {
            "rules": {"rating": {"kind": "rating", "scale": 0}},
            "exposure_event_types": [],
        },
        {
            "rules": {"stream": {"kind": "watch_threshold", "threshold_ms": -1}},
            "exposure_event_types": [],
        },
    ],
)
def test_other_invalid_configs(overrides):
    with pytest.raises(pydantic.ValidationError):
        load_reward_config(_config(**overrides))


# --- loading -------------------------------------------------------------------------


def test_yaml_file_is_loaded(tmp_path):
    path = tmp_path / "rewards.yaml"
    path.write_text(yaml.safe_dump(_config()))
    from_path = load_reward_config(path)
    assert from_path == load_reward_config(_config())
    assert load_reward_config(str(path)) == from_path


def test_yaml_file_with_a_typo_fails_at_load(tmp_path):
    path = tmp_path / "rewards.yaml"
    path.write_text("name: custom\nrules:\n  like: {kind: constant, reward: 1.0, engagd: true}\n")
    with pytest.raises(pydantic.ValidationError, match="engagd"):
        load_reward_config(path)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_by_name(name):
    assert load_reward_config(name) is PRESETS[name]
    assert load_reward_config(PRESETS[name]) is PRESETS[name]


def test_presets_survive_a_dict_round_trip():
    for preset in PRESETS.values():
        assert load_reward_config(preset.model_dump()) == preset


@pytest.mark.parametrize("source", ["shortvideo", "no/such/rewards.yaml"])
def test_unknown_preset_or_missing_file_is_a_value_error(source, tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        load_reward_config(source)
    with pytest.raises(ValueError, match="neither a preset"):
        load_reward_config(tmp_path / "missing.yaml")


def test_conversions_are_engaged_events_of_the_conversion_types():
    from beam_pipelines.rewards import MOVIELENS, MUSIC, SHORT_VIDEO

    assert SHORT_VIDEO.is_conversion("view", engaged=True)
    assert not SHORT_VIDEO.is_conversion("view", engaged=False)
    assert not SHORT_VIDEO.is_conversion("like", engaged=True)  # a signal, not a success
    assert MUSIC.is_conversion("stream", engaged=True)
    assert not MUSIC.is_conversion("save", engaged=True)
    assert MOVIELENS.is_conversion("rating", engaged=True)  # empty: every engaged event


def test_conversion_types_must_have_rules():
    from pydantic import ValidationError

    from beam_pipelines.rewards import RewardConfig

    with pytest.raises(ValidationError, match="conversion_event_types"):
        RewardConfig(
            name="x",
            rules={"like": {"kind": "constant", "reward": 1.0, "engaged": True}},
            conversion_event_types=("view",),
        )
