"""The content-encoder interface and the registry that names encoders.

A content encoder turns one modality of item content (text, an image, an audio
clip) into a fixed-width vector. Everything downstream (the item pipeline's
``RunInference`` handler, ``encode_catalog``, the ``item_content`` feature view)
sees only this interface, so a new modality is a new class, not a new pipeline.

Plug-in point: implement ``ContentEncoder`` (``name``, ``modality``, ``dim``,
``encode``) and either pass an instance where an encoder is taken, or register
its factory under a name with ``register_encoder`` (or name it by class path,
``"package.module:Factory"``, which ``load_encoder`` imports lazily). An image
encoder takes ``bytes`` (an encoded image), an audio encoder ``bytes`` (an
encoded clip); ``tests/helpers/content.py`` has a deterministic image double.
No image or audio encoder ships yet: no PyPI package we found ships usable
image weights that load offline without PyTorch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

TEXT = "text"
IMAGE = "image"
AUDIO = "audio"
MODALITIES = (TEXT, IMAGE, AUDIO)


@runtime_checkable
class ContentEncoder(Protocol):
    """One pretrained encoder of one modality.

    ``name`` versions the embeddings it makes (``model@package-version``): vectors
    of two names are never compared or mixed. ``encode`` returns float32
    ``[len(inputs), dim]`` with L2-normalised rows (cosine = dot product), row i
    for ``inputs[i]``; ``batch_size`` bounds one forward pass (memory), not the
    call.
    """

    name: str
    modality: str
    dim: int

    def encode(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray: ...


_REGISTRY: dict[str, str | Callable[[], ContentEncoder]] = {
    # Short name → factory or "module:attribute" (imported on first use).
    "all-MiniLM-L6-v2": "beam_pipelines.content.minilm:MiniLMEncoder",
}
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"


def register_encoder(name: str, factory: str | Callable[[], ContentEncoder]) -> None:
    """Make ``load_encoder(name)`` build an encoder with ``factory`` (a callable or
    a ``"module:attribute"`` class path)."""
    _REGISTRY[name] = factory


def registered_encoders() -> list[str]:
    return sorted(_REGISTRY)


def load_encoder(name: str = DEFAULT_TEXT_ENCODER) -> ContentEncoder:
    """A new encoder by registered short name or ``"module:attribute"`` class path.

    Loading reads weights (tens of MB): callers that encode repeatedly keep the
    instance (``RunInference`` shares one per process).
    """
    factory = _REGISTRY.get(name, name)
    if isinstance(factory, str):
        if ":" not in factory:
            raise ValueError(
                f"unknown content encoder {name!r}; registered: {registered_encoders()}, "
                "or give a class path 'module:Factory'"
            )
        module, attribute = factory.split(":", 1)
        factory = getattr(importlib.import_module(module), attribute)
    encoder = factory()
    check_encoder(encoder)
    return encoder


def check_encoder(encoder: Any) -> None:
    """``TypeError``/``ValueError`` unless ``encoder`` has the interface's attributes."""
    if not isinstance(encoder, ContentEncoder):
        raise TypeError(f"{encoder!r} lacks name/modality/dim/encode of ContentEncoder")
    if encoder.modality not in MODALITIES:
        raise ValueError(f"encoder modality must be one of {MODALITIES}, got {encoder.modality!r}")
    if not encoder.name or encoder.dim < 1:
        raise ValueError(f"encoder needs a name and dim >= 1, got {encoder.name!r}, {encoder.dim}")
