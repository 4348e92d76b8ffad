"""Typed experiments config (YAML), validated once at the edge.

    experiments:
      - name: fresh_features
        salt: fresh-features-2024-06
        layer: features          # default: the experiment's own layer
        traffic: 0.5             # share of the layer's users in this experiment
        variants:
          - {name: control, weight: 1}
          - {name: frozen, weight: 1, features: frozen, freeze_at: "2024-06-01T00:00:00Z"}

A user is in at most one experiment per layer; layers are independent of each
other, so a user may be in one experiment of each layer. Two layers must not
change the same setting (a user in both would get one of them at random).

A variant changes what the service already has a knob for: ``explore_share``,
``diversity_weight``, ``candidate_sources`` and ``features`` (``frozen``: the
user's streamed events after ``freeze_at`` are ignored). ``model_name`` and
``model_version`` are refused: the service serves one model version at a time
(``serving.service``); compare models by running a second deployment.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from beam_pipelines.events import MAX_CONTEXT_VALUE_CHARS
from feature_repo.store import read_yaml_mapping

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
"""Experiment, variant and layer names: no comma, which joins names in an event's context."""

CandidateSource = Literal["retriever", "coengagement", "new_items"]
# ``new_items``: the service's reserved slots for uploads newer than the model
# version (``serving.new_items``; they appear only where ``new_items`` is configured).
CANDIDATE_SOURCES: tuple[CandidateSource, ...] = ("retriever", "coengagement", "new_items")

# Settings a variant may change (its ``overrides``), in the order they are listed.
SETTINGS = ("explore_share", "diversity_weight", "candidate_sources", "freeze_ms")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class VariantConfig(_Config):
    """One arm of an experiment; unset settings keep the service's own."""

    name: str = Field(pattern=NAME_PATTERN)
    """Variant name, as it appears in responses and exposure events."""

    weight: float = Field(1.0, gt=0)
    """Relative share of the experiment's users (weights need not sum to 1)."""

    explore_share: float | None = Field(None, ge=0.0, le=1.0)
    """Replaces ``ranking.explore_share``: share of the k slots given to exploration."""

    diversity_weight: float | None = Field(None, ge=0.0, le=1.0)
    """Replaces ``ranking.diversity_weight``: the MMR weight λ."""

    candidate_sources: tuple[CandidateSource, ...] | None = Field(None, min_length=1)
    """Replaces ``ranking.candidate_sources``: which sources feed the blend
    (``retriever``: the sequential model's rows; ``coengagement``: the streaming
    co-engagement rows)."""

    features: Literal["streamed", "frozen"] = "streamed"
    """``frozen``: the user's recent events after ``freeze_at`` are ignored (and the
    pooled embeddings re-pooled from the rest), as if the stream stopped then."""

    freeze_at: AwareDatetime | None = None
    """With ``features: frozen``: the time (with an offset, e.g. ``...Z``) the
    user's features stop at."""

    model_name: str | None = None
    """Not supported (refused with a message): one model set per service."""

    model_version: int | None = None
    """Not supported (refused with a message): one model version per service."""

    @model_validator(mode="after")
    def _consistent(self) -> VariantConfig:
        for field in ("model_name", "model_version"):
            if getattr(self, field) is not None:
                raise ValueError(
                    f"variant {self.name!r}: {field} is not supported: the service serves one "
                    "model version at a time (one model set per process); run the other model "
                    "as a second deployment and split traffic in front of it"
                )
        if (self.features == "frozen") != (self.freeze_at is not None):
            raise ValueError(
                f"variant {self.name!r}: freeze_at is required with features: frozen "
                "and only allowed with it"
            )
        return self

    @property
    def freeze_ms(self) -> int | None:
        """``freeze_at`` in epoch milliseconds (UTC), None for streamed features."""
        if self.freeze_at is None:
            return None
        return round(self.freeze_at.astimezone(dt.UTC).timestamp() * 1000)

    def overrides(self) -> dict[str, Any]:
        """The settings this variant changes (keys of ``SETTINGS``)."""
        values = {
            "explore_share": self.explore_share,
            "diversity_weight": self.diversity_weight,
            "candidate_sources": self.candidate_sources,
            "freeze_ms": self.freeze_ms,
        }
        return {k: v for k, v in values.items() if v is not None}


class ExperimentConfig(_Config):
    """One experiment: its users are ``traffic`` of its layer's, split by weight."""

    name: str = Field(pattern=NAME_PATTERN)
    """Experiment name, as it appears in responses and exposure events."""

    salt: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    """Hashed with the user id to pick the variant; a new salt reshuffles the users."""

    layer: str | None = Field(None, pattern=NAME_PATTERN)
    """Experiments of one layer never share a user; None: a layer of its own."""

    traffic: float = Field(1.0, gt=0.0, le=1.0)
    """Share of the layer's users (hash buckets) in this experiment."""

    control: str | None = None
    """Variant the others are compared with; None: the first."""

    variants: tuple[VariantConfig, ...] = Field(min_length=2)
    """The arms, at least two."""

    @model_validator(mode="after")
    def _variants(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r}: variant names repeat: {names}")
        if self.control is not None and self.control not in names:
            raise ValueError(
                f"experiment {self.name!r}: control {self.control!r} is not a variant {names}"
            )
        return self

    @property
    def layer_name(self) -> str:
        return self.layer or self.name

    @property
    def control_name(self) -> str:
        return self.control or self.variants[0].name


class ExperimentsConfig(_Config):
    """Every experiment the service runs."""

    experiments: tuple[ExperimentConfig, ...] = ()
    """In order: within a layer, experiments take consecutive bucket ranges, so
    changing one's traffic or order moves the users of the ones after it."""

    @model_validator(mode="after")
    def _exclusive(self) -> ExperimentsConfig:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names repeat: {names}")
        salts = [e.salt for e in self.experiments]
        if len(set(salts)) != len(salts):
            raise ValueError("experiments share a salt: their variants would be correlated")
        for layer, members in self.layers().items():
            total = sum(e.traffic for e in members)
            if total > 1.0 + 1e-9:
                raise ValueError(
                    f"layer {layer!r}: traffic of {[e.name for e in members]} sums to {total:g} > 1"
                )
        self._settings_owned_by_one_layer()
        longest = sum(max(len(e.name) + 1 for e in members) for members in self.layers().values())
        if longest > MAX_CONTEXT_VALUE_CHARS:
            raise ValueError(
                f"experiment names of all layers joined are up to {longest} characters, more "
                f"than an event context value holds ({MAX_CONTEXT_VALUE_CHARS})"
            )
        return self

    def _settings_owned_by_one_layer(self) -> None:
        owner: dict[str, str] = {}
        for layer, members in self.layers().items():
            changed = {key for e in members for v in e.variants for key in v.overrides()}
            for key in sorted(changed):
                if owner.setdefault(key, layer) != layer:
                    raise ValueError(
                        f"layers {owner[key]!r} and {layer!r} both change {key}: a user in "
                        "both would get one of them; keep each setting in one layer"
                    )

    def layers(self) -> dict[str, list[ExperimentConfig]]:
        """Layer name → its experiments, both in config order."""
        out: dict[str, list[ExperimentConfig]] = {}
        for experiment in self.experiments:
            out.setdefault(experiment.layer_name, []).append(experiment)
        return out

    def experiment(self, name: str) -> ExperimentConfig | None:
        return next((e for e in self.experiments if e.name == name), None)


def load_experiments_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | ExperimentsConfig,
) -> ExperimentsConfig:
    """Validated config from a mapping or a YAML file (``${VAR}`` expanded)."""
    if isinstance(source, ExperimentsConfig):
        return source
    if isinstance(source, Mapping):
        return ExperimentsConfig.model_validate(dict(source))
    return ExperimentsConfig.model_validate(
        read_yaml_mapping(source, "a mapping with 'experiments'")
    )
