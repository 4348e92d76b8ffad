"""Request batching: merge and split by hand, concurrent calls answered as alone,
errors reach every waiting request, only the configured signatures are batched."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import pytest

from serving.backends import Signature, TensorSpec
from serving.batching import Batcher, BatchingBackend, merge, split, variable_inputs


def one(ids: list[str], weights: list[float]) -> dict[str, np.ndarray]:
    return {
        "items": np.array([ids], dtype=object).reshape(1, len(ids)),
        "weights": np.array([weights], np.float32).reshape(1, len(weights)),
    }


def scorer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A per-row model that ignores padding: the sum of the weights of non-empty ids."""
    mask = inputs["items"] != ""
    return {"score": (inputs["weights"] * mask).sum(axis=1), "n": mask.sum(axis=1)}


def test_merge_pads_variable_lists_at_the_end_and_split_gives_back_each_row() -> None:
    calls = [one(["a", "b"], [1.0, 2.0]), one([], []), one(["c"], [4.0])]
    merged = merge(calls, frozenset({"items", "weights"}))
    assert merged["items"].tolist() == [["a", "b"], ["", ""], ["c", ""]]
    assert merged["weights"].tolist() == [[1.0, 2.0], [0.0, 0.0], [4.0, 0.0]]
    parts = split(scorer(merged), [1, 1, 1])
    assert [p["score"].tolist() for p in parts] == [[3.0], [0.0], [4.0]]
    assert [p["n"].tolist() for p in parts] == [[2], [0], [1]]


def test_merge_refuses_fixed_inputs_of_different_widths() -> None:
    with pytest.raises(ValueError, match="do not batch"):
        merge([one(["a"], [1.0]), one(["a", "b"], [1.0, 2.0])], frozenset())


def test_split_refuses_outputs_without_a_row_per_input_row() -> None:
    with pytest.raises(ValueError, match="no row per input row"):
        split({"total": np.array([1.0])}, [1, 1])


def test_rows_of_different_sizes_keep_their_own_rows() -> None:
    calls = [{"x": np.arange(3.0)}, {"x": np.arange(2.0) + 10}]
    parts = split({"y": merge(calls, frozenset())["x"] * 2}, [3, 2])
    assert [p["y"].tolist() for p in parts] == [[0.0, 2.0, 4.0], [20.0, 22.0]]


class GatedModel:
    """``scorer`` that blocks each call until released, counting calls and rows."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: list[int] = []

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.started.set()
        self.release.wait(5)
        self.calls.append(len(inputs["items"]))
        return scorer(inputs)


def run_concurrently(batcher: Batcher, requests: list[dict[str, np.ndarray]], model) -> list:
    results: list = [None] * len(requests)

    def ask(i: int) -> None:
        try:
            results[i] = batcher(requests[i])
        except Exception as e:  # the test looks at it
            results[i] = e

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    assert model.started.wait(5)  # the first call runs alone; the others queue behind it
    rest = [threading.Thread(target=ask, args=(i,)) for i in range(1, len(requests))]
    for t in rest:
        t.start()
    while batcher.waiting < len(rest):
        threading.Event().wait(0.001)
    model.release.set()
    for t in [first, *rest]:
        t.join(5)
    return results


def test_requests_that_arrive_during_a_call_make_the_next_batch() -> None:
    model = GatedModel()
    batches: list[tuple[int, int]] = []
    batcher = Batcher(
        model, 8, 0.0, frozenset({"items", "weights"}), on_batch=lambda c, r: batches.append((c, r))
    )
    requests = [one(["a"] * (i % 3), [float(i)] * (i % 3)) for i in range(6)]
    results = run_concurrently(batcher, requests, model)
    batcher.close()
    assert model.calls == [1, 5]
    assert batches == [(1, 1), (5, 5)]
    for request, result in zip(requests, results, strict=True):
        expected = scorer(request)
        assert result["score"].tolist() == expected["score"].tolist()


def test_max_batch_size_bounds_a_batch() -> None:
    model = GatedModel()
    batcher = Batcher(model, 2, 0.0, frozenset({"items", "weights"}))
    run_concurrently(batcher, [one(["a"], [1.0]) for _ in range(6)], model)
    batcher.close()
    assert model.calls == [1, 2, 2, 1]


def test_a_failing_call_fails_every_request_of_its_batch() -> None:
    def broken(inputs):
        raise RuntimeError("model down")

    batcher = Batcher(broken, 8, 0.0)
    with pytest.raises(RuntimeError, match="model down"):
        batcher(one(["a"], [1.0]))
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher(one(["a"], [1.0]))


class FakeBackend:
    version = 3

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.closed = False

    def open(self) -> None: ...

    def signature(self, model: str, name: str | None = None) -> Signature:
        spec = {
            "items": TensorSpec(np.dtype(object), (None, None)),
            "weights": TensorSpec(np.dtype(np.float32), (None, None)),
        }
        return Signature(spec, {"score": TensorSpec(np.dtype(np.float32), (None,))})

    def predict(self, model, inputs, signature=None):
        self.seen.append((model, signature))
        return scorer(inputs)

    def check(self) -> None: ...

    def close(self) -> None:
        self.closed = True


def test_backend_batches_only_the_configured_signatures_of_the_retrieval_model() -> None:
    inner = FakeBackend()
    backend = BatchingBackend(inner, "sequential", ["candidate_rows"], 8, 0.0)
    assert variable_inputs(inner.signature("sequential")) == {"items", "weights"}
    assert backend.predict("sequential", one(["a"], [2.0]), "candidate_rows")["score"].tolist() == [
        2.0
    ]
    assert backend.predict("ranker", one(["a"], [1.0]))["score"].tolist() == [1.0]
    assert backend.version == 3
    backend.close()
    assert inner.closed
    assert inner.seen == [("sequential", "candidate_rows"), ("ranker", None)]
