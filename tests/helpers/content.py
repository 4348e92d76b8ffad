"""Test doubles of the content-encoder interface (``beam_pipelines.content``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from beam_pipelines.content.encoder import IMAGE, TEXT


def _unit(data: bytes, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeImageEncoder:
    """An image encoder double: a deterministic unit vector per image's bytes.

    It stands where a real image model would plug in (``ContentModelHandler(
    "tests.helpers.content:FakeImageEncoder", input_of=...)``): same interface,
    no weights.
    """

    name = "fake-image@test"
    modality = IMAGE
    dim = 8

    def encode(self, inputs: Sequence[bytes], batch_size: int = 64) -> np.ndarray:
        if not all(isinstance(x, bytes) for x in inputs):
            raise TypeError("FakeImageEncoder encodes image bytes")
        return np.stack([_unit(x, self.dim) for x in inputs]) if inputs else np.zeros((0, 8))


class FailingTextEncoder:
    """A text encoder that raises on any batch holding the word ``boom``."""

    name = "failing-text@test"
    modality = TEXT
    dim = 4

    def encode(self, inputs: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if any("boom" in x for x in inputs):
            raise RuntimeError("boom in the batch")
        return np.stack([_unit(x.encode(), self.dim) for x in inputs])
