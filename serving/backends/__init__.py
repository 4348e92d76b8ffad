"""Model access behind one interface: ``ModelBackend.predict(model, inputs) -> outputs``.

Implementations: ``inprocess`` (the SavedModels loaded in this process, the
embedded default), ``grpc`` (TF Serving's ``PredictionService``) and ``rest``
(TF Serving's ``:predict``), chosen by ``config.type`` from ``BACKENDS``. Client
libraries are imported lazily by each implementation. Every backend talks to one
pinned version of each model, so retrieval, ranker and item table always agree.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from serving.config import ModelsConfig


class ModelUnavailableError(RuntimeError):
    """The model could not answer: unreachable, too slow, not loaded, or it failed."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """dtype and shape of a signature tensor (``None`` for unknown dimensions)."""

    dtype: np.dtype
    shape: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class Signature:
    """Named inputs and outputs of one model signature."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


class ModelBackend(Protocol):
    """Where the models run. ``open`` loads or connects and reads the signatures."""

    version: int

    def open(self) -> None: ...

    def signature(self, model: str, name: str | None = None) -> Signature:
        """Signature ``name`` of ``model`` (default: the configured one), read in
        ``open``; ``KeyError`` if the model has no signature of that name."""
        ...

    def predict(
        self, model: str, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs by name (strings as ``str`` objects) of signature ``signature``
        (default: the configured one); ``ModelUnavailableError`` if the model cannot
        answer within the configured timeout."""
        ...

    def check(self) -> None:
        """Raise ``ModelUnavailableError`` unless every model can serve now."""
        ...

    def close(self) -> None: ...


# config.type → "module:class" under serving.backends
BACKENDS: dict[str, str] = {
    "inprocess": "serving.backends.inprocess:InProcessBackend",
    "grpc": "serving.backends.grpc:GrpcBackend",
    "rest": "serving.backends.rest:RestBackend",
}


def make_backend(config: ModelsConfig, model_base: str, version: int) -> ModelBackend:
    """The backend selected by ``config.type`` for ``version`` (not opened yet)."""
    module, name = BACKENDS[config.type].split(":")
    backend_class = getattr(importlib.import_module(module), name)
    return backend_class(config, model_base, version)


def model_names(config: ModelsConfig) -> tuple[str, str]:
    return config.retrieval_model, config.ranker_model


def prepare_tensorflow() -> None:
    """Import ``models`` first: it sets ``TF_USE_LEGACY_KERAS`` before TensorFlow loads."""
    importlib.import_module("models")
