"""Experiments config and assignment: stable, balanced, layers exclusive, bad configs
refused with a message that names the problem."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from beam_pipelines.experiments.assignment import (
    BUCKETS,
    NONE,
    Assigner,
    bucket,
    parse_context,
    variant_shares,
)
from beam_pipelines.experiments.config import ExperimentsConfig, load_experiments_config
from beam_pipelines.experiments.stats import srm_p_value


def config(*experiments: dict[str, Any]) -> ExperimentsConfig:
    return ExperimentsConfig.model_validate({"experiments": list(experiments)})


def experiment(name: str = "e", **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "salt": f"{name}-salt",
        "variants": [{"name": "control"}, {"name": "treatment"}],
        **overrides,
    }


def test_bucket_is_pinned_and_independent_of_the_process_hash_seed() -> None:
    """The same user lands in the same bucket in any process, on any machine: a
    changed value here would reshuffle every running experiment."""
    assert bucket("salt", "user-1") == 2683
    code = (
        "from beam_pipelines.experiments.assignment import bucket; print(bucket('salt', 'user-1'))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert out.stdout.strip() == "2683"


def test_salt_and_user_do_not_run_into_each_other() -> None:
    assert bucket("ab", "c") != bucket("a", "bc")


def test_assignment_is_balanced_over_100k_users() -> None:
    three = config(experiment(variants=[{"name": "control"}, {"name": "b"}, {"name": "c"}]))
    assigner = Assigner(three)
    counts = {"control": 0, "b": 0, "c": 0}
    for u in range(100_000):
        counts[assigner.assign(f"user-{u}").variant or ""] += 1

    p = srm_p_value(counts, variant_shares(three.experiments[0]))
    assert p > 0.001, counts


def test_weights_and_traffic_set_the_shares() -> None:
    weighted = config(
        experiment(traffic=0.4, variants=[{"name": "control", "weight": 3}, {"name": "t"}])
    )
    assert variant_shares(weighted.experiments[0]) == {"control": 0.75, "t": 0.25}
    assigner = Assigner(weighted)
    assigned = [assigner.assign(f"u{i}") for i in range(20_000)]
    inside = [a for a in assigned if a is not NONE]
    assert 0.38 < len(inside) / len(assigned) < 0.42
    share = sum(a.variant == "control" for a in inside) / len(inside)
    assert 0.73 < share < 0.77


def test_assignment_carries_the_variant_overrides() -> None:
    assigner = Assigner(
        config(
            experiment(
                variants=[
                    {"name": "control", "weight": 1e-9},
                    {
                        "name": "t",
                        "explore_share": 0.3,
                        "features": "frozen",
                        "freeze_at": "2024-06-01T00:00:00Z",
                    },
                ]
            )
        )
    )
    a = assigner.assign("anyone")
    assert (a.experiment, a.variant) == ("e", "t")
    assert dict(a.overrides) == {"explore_share": 0.3, "freeze_ms": 1_717_200_000_000}
    assert assigner.assign("anyone") is a  # one object per combination


def test_a_layer_gives_a_user_at_most_one_experiment() -> None:
    layered = config(
        experiment("a", layer="ranking", traffic=0.5),
        experiment("b", layer="ranking", traffic=0.5),
        experiment("c", traffic=0.5),  # a layer of its own
    )
    assigner = Assigner(layered)
    seen = {("a",): 0, ("b",): 0, ("a", "c"): 0, ("b", "c"): 0}
    for u in range(20_000):
        pairs = assigner.assign(f"u{u}").pairs
        names = tuple(e for e, _ in pairs)
        assert not {"a", "b"} <= set(names)
        assert names in seen  # everyone is in a or b: the layer's traffic sums to 1
        seen[names] += 1
    # Layers are independent: about half of a's users are also in c.
    assert 0.45 < seen[("a", "c")] / (seen[("a",)] + seen[("a", "c")]) < 0.55


def test_two_layers_travel_as_comma_joined_names() -> None:
    assigner = Assigner(config(experiment("a"), experiment("c")))
    a = assigner.assign("u1")
    assert a.experiment == "a,c"
    assert parse_context({"experiment": a.experiment, "variant": a.variant}) == list(a.pairs)
    assert parse_context({"experiment": "a,c", "variant": "x"}) == []
    assert parse_context(None) == [] and parse_context({"position": 1}) == []


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        (
            [experiment(variants=[{"name": "control"}, {"name": "t", "model_version": 3}])],
            "model_version is not supported",
        ),
        (
            [experiment(variants=[{"name": "control"}, {"name": "t", "model_name": "x"}])],
            "model_name is not supported",
        ),
        (
            [experiment(variants=[{"name": "control"}, {"name": "t", "features": "frozen"}])],
            "freeze_at is required",
        ),
        (
            [
                experiment(
                    variants=[
                        {"name": "control"},
                        {"name": "t", "features": "frozen", "freeze_at": "2024-06-01T00:00:00"},
                    ]
                )
            ],
            "timezone",
        ),
        ([experiment(variants=[{"name": "control"}, {"name": "control"}])], "names repeat"),
        ([experiment(variants=[{"name": "control"}])], "at least 2"),
        ([experiment(control="nobody")], "control 'nobody' is not a variant"),
        ([experiment(colour="red")], "Extra inputs are not permitted"),
        ([experiment(variants=[{"name": "a,b"}, {"name": "c"}])], "should match pattern"),
        ([experiment(traffic=0)], "greater than 0"),
        ([experiment("a"), experiment("a", salt="other")], "experiment names repeat"),
        ([experiment("a"), experiment("b", salt="a-salt")], "share a salt"),
        (
            [experiment("a", layer="l", traffic=0.6), experiment("b", layer="l", traffic=0.5)],
            "sums to 1.1 > 1",
        ),
        (
            [
                experiment("a", variants=[{"name": "c"}, {"name": "t", "explore_share": 0.2}]),
                experiment("b", variants=[{"name": "c"}, {"name": "t", "explore_share": 0.3}]),
            ],
            "both change explore_share",
        ),
    ],
)
def test_bad_configs_are_refused(experiments: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExperimentsConfig.model_validate({"experiments": experiments})


def test_yaml_config(tmp_path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(
        "experiments:\n"
        "  - name: fresh\n"
        "    salt: fresh-1\n"
        "    variants:\n"
        "      - {name: control}\n"
        "      - {name: frozen, features: frozen, freeze_at: '2024-06-01T02:00:00+02:00'}\n"
    )
    loaded = load_experiments_config(path)
    assert loaded.experiments[0].variants[1].freeze_ms == 1_717_200_000_000
    assert loaded.experiments[0].control_name == "control"
    assert BUCKETS == 10_000
