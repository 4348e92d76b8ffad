"""Model speed: ranker training examples/s and in-process predict latency.

    python -m benchmarks.bench_models [--examples 20000] [--repeats 5] [--calls 200]

Prints one JSON object per measure. Speeds come with a reference measured in the
same run on the same machine (shared and noisy: compare the ratios):
- training: the ranker (DCN + two heads) against a plain Keras MLP with the same
  hidden widths and one head, on the same arrays, batch size and optimizer;
- ranking latency for N candidates: the exported ranker's ``serving_default``
  called in-process (``ModelBundle.score``, i.e. building inputs from feature rows
  too, and the bare signature call) against one NumPy matmul of the same size as
  its first layer (``[N, input width] @ [input width, 128]``);
- retrieval latency for one user: ``serving_default`` top-100 over the catalogue
  against NumPy ``q @ table.T`` + ``argpartition``.
"""

import models  # noqa: F401, I001  (first, before TensorFlow: sets TF_USE_LEGACY_KERAS)
import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from feature_repo import features as f
from models import export, registry
from models.inputs import RANKER_INPUTS, input_specs
from models.ranker import ENGAGED, REWARD, RankerModel, dense_features
from models.ranker import dataset as ranker_dataset
from models.towers import QUERY_INPUTS, QueryTower

DIM = 32
CANDIDATES = (100, 500, 1000)


def _inputs(names, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for name, (dtype, shape) in input_specs(names, DIM).items():
        if len(shape) == 2:
            out[name] = (rng.standard_normal((n, DIM)) * 0.3).astype(dtype)
        else:
            out[name] = (rng.random(n) * 20).astype(dtype)
    return out


def _emit(measure: str, **values) -> None:
    print(json.dumps({"measure": measure, **values}), flush=True)


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def _timed(fn: Callable[[], object], calls: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


@tf.function(reduce_retracing=True)
def _matmul(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    return tf.matmul(x, w)


def _input_width(inputs: dict[str, np.ndarray]) -> int:
    """Width of the ranker's first layer input: normalised scalars + embeddings."""
    one = {k: tf.constant(v[:1]) for k, v in inputs.items() if k in RANKER_INPUTS}
    return int(dense_features(one).shape[1]) + 5 * DIM


def _reference_mlp(width: int) -> tf.keras.Model:
    inputs = tf.keras.Input((width,))
    x = tf.keras.layers.Dense(128, activation="relu")(inputs)
    x = tf.keras.layers.Dense(64, activation="relu")(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1)(x))
    model.compile(optimizer="adam", loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def bench_training(n: int, repeats: int, rng: np.random.Generator) -> RankerModel:
    arrays = _inputs(RANKER_INPUTS, n, rng)
    arrays[ENGAGED] = (rng.random(n) < 0.5).astype(np.float32)
    arrays[REWARD] = rng.standard_normal(n).astype(np.float32)
    ranker = RankerModel()
    ranker.adapt({k: v for k, v in arrays.items() if k in RANKER_INPUTS})
    ranker.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    data = ranker_dataset(arrays, 1024, seed=0)
    epoch_s = []
    for repeat in range(repeats + 1):  # the first epoch traces the graph: not counted
        started = time.perf_counter()
        ranker.fit(data, epochs=1, verbose=0)
        if repeat:
            epoch_s.append(time.perf_counter() - started)
    # The reference sees the ranker's full input width (scalars + embeddings).
    width = _input_width(arrays)
    features = rng.standard_normal((n, width)).astype(np.float32)
    reference = _reference_mlp(width)
    reference_data = (
        tf.data.Dataset.from_tensor_slices((features, arrays[ENGAGED]))
        .shuffle(n, seed=0, reshuffle_each_iteration=True)
        .batch(1024)
        .prefetch(2)
    )
    reference_s = []
    for repeat in range(repeats + 1):
        started = time.perf_counter()
        reference.fit(reference_data, epochs=1, verbose=0)
        if repeat:
            reference_s.append(time.perf_counter() - started)
    ranker_eps = n / statistics.median(epoch_s)
    reference_eps = n / statistics.median(reference_s)
    _emit(
        "ranker_training",
        examples=n,
        batch_size=1024,
        repeats=repeats,
        examples_per_s=round(ranker_eps),
        reference_mlp_examples_per_s=round(reference_eps),
        ratio_to_reference=round(ranker_eps / reference_eps, 3),
    )
    return ranker


def bench_latency(ranker: RankerModel, calls: int, rng: np.random.Generator) -> None:
    query = QueryTower(DIM)
    query(_inputs(QUERY_INPUTS, 1, rng))
    n_items = 10_000
    table = rng.standard_normal((n_items, DIM)).astype(np.float32)
    ids = np.array([f"i{k}" for k in range(n_items)], dtype=object)
    with tempfile.TemporaryDirectory() as base:
        export.export_all(
            base,
            query_tower=query,
            ranker=ranker,
            table=table,
            item_ids=ids,
            retrieval_warmup=[],
            ranker_warmup=[],
            k=100,
        )
        bundle = registry.load_latest(base)
        signature = bundle.ranker.signatures["serving_default"]
        width = 128
        in_width = _input_width(_inputs(RANKER_INPUTS, 1, rng))
        for n in CANDIDATES:
            user = {name: float(rng.random()) for name in QUERY_INPUTS}
            user[f.USER_EMB_SHORT] = list(rng.standard_normal(DIM) * 0.3)
            user[f.USER_EMB_LONG] = list(rng.standard_normal(DIM) * 0.3)
            user[f.USER_EVENT_COUNT] = 12
            user[f.USER_EMBEDDING_VERSION] = str(bundle.version)
            item_ids = [f"i{k}" for k in rng.choice(n_items, n, replace=False)]
            item_rows = [
                {
                    f.ITEM_EVENT_COUNT: 5,
                    f.ITEM_BETA_ALPHA: 2.0,
                    f.ITEM_BETA_BETA: 3.0,
                    f.ITEM_TRENDING: 1.0,
                }
                for _ in range(n)
            ]
            tensors = {
                k: tf.constant(v)
                for k, v in bundle.ranker_inputs(user, item_ids, item_rows).items()
            }
            full = _timed(lambda u=user, i=item_ids, r=item_rows: bundle.score(u, i, r), calls)
            bare = _timed(lambda t=tensors: signature(**t), calls)
            # Reference: one matmul of the ranker's first-layer size, called the same way.
            x = tf.constant(rng.standard_normal((n, in_width)).astype(np.float32))
            w = tf.constant(rng.standard_normal((in_width, width)).astype(np.float32))
            reference = _timed(lambda x=x, w=w: _matmul(x, w), calls)
            numpy_ref = _timed(lambda x=x.numpy(), w=w.numpy(): x @ w, calls)
            bare_p = _percentiles(bare)
            ref_p = _percentiles(reference)
            _emit(
                "ranker_predict_latency",
                candidates=n,
                calls=calls,
                bundle_score=_percentiles(full),
                signature_call=bare_p,
                reference_tf_matmul=ref_p,
                reference_numpy_matmul=_percentiles(numpy_ref),
                p50_ratio_to_reference=round(bare_p["p50_ms"] / max(ref_p["p50_ms"], 1e-6), 1),
            )
        query_inputs = {k: tf.constant(v) for k, v in _inputs(QUERY_INPUTS, 1, rng).items()}
        top_k = bundle.retrieval.signatures["serving_default"]
        model = _timed(lambda: top_k(**query_inputs), calls)
        q = rng.standard_normal(DIM).astype(np.float32)
        reference = _timed(lambda: np.argpartition(-(table @ q), 100)[:100], calls)
        _emit(
            "retrieval_top100_latency",
            catalogue=n_items,
            calls=calls,
            signature_call=_percentiles(model),
            reference_numpy=_percentiles(reference),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    tf.keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ranker = bench_training(args.examples, args.repeats, rng)
    bench_latency(ranker, args.calls, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
