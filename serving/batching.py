"""Request batching: concurrent requests' model calls merged into one call.

A model call costs a fixed part (dispatching the graph's ops) and a part that
grows with the rows it scores: the sequential retriever over 5,000 items, with
the service's one TensorFlow thread, costs 1.07 ms of CPU for one user, 1.31 ms
for two and 3.18 ms for eight in one call (``serving/README.md``, Performance).
``BatchingBackend`` wraps a ``ModelBackend``: calls of the configured signatures
wait in a queue and a batching thread runs them as one call, rows concatenated
along the first axis, then splits the outputs back by rows.

Batches form only while a call is running, as in TF Serving with
``batch_timeout_micros: 0``: an idle batcher runs the first call at once (no added
latency at low load), and the requests that arrive meanwhile make the next batch.
``batch_timeout_ms`` > 0 waits that long for a fuller batch. Only concurrent
requests batch, so it pays with ``limits.workers`` > 1 request threads per process.

Inputs whose second axis is variable (``[B, None]``, the recent-event lists) are
padded at the end to the longest in the batch with the dtype's zero (``""`` for
strings): the sequential export's own padding (``models.sequential_export``), so a
padded row answers what it answers alone. The batch's scores can differ from the
single calls' in the last float bits (a batched matmul sums in another order).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.backends import ModelBackend, Signature

LOG = logging.getLogger(__name__)


@dataclass
class _Call:
    inputs: Mapping[str, np.ndarray]
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    counts = {np.shape(v)[0] if np.ndim(v) else 1 for v in inputs.values()}
    if len(counts) != 1:
        raise ValueError(f"inputs disagree on their number of rows: {sorted(counts)}")
    return counts.pop()


def _pad_value(array: np.ndarray) -> Any:
    return b"" if array.dtype.kind == "S" else "" if array.dtype.kind in "OU" else 0


def merge(
    calls: Sequence[Mapping[str, np.ndarray]], variable: frozenset[str]
) -> dict[str, np.ndarray]:
    """The calls' inputs as one batch; inputs named in ``variable`` (``[B, None]``)
    padded at the end of their second axis to the batch's longest."""
    merged = {}
    for name in calls[0]:
        parts = [np.asarray(c[name]) for c in calls]
        widths = {p.shape[1:] for p in parts}
        if len(widths) > 1:
            if name not in variable or any(p.ndim != 2 for p in parts):
                raise ValueError(f"{name}: shapes {sorted(widths)} do not batch")
            width = max(p.shape[1] for p in parts)
            parts = [
                np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=_pad_value(p))
                if p.shape[1] < width
                else p
                for p in parts
            ]
        merged[name] = np.concatenate(parts, axis=0)
    return merged


def split(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Each call's rows of ``outputs`` (every output has a row per input row)."""
    total = sum(rows)
    for name, value in outputs.items():
        if np.ndim(value) == 0 or np.shape(value)[0] != total:
            raise ValueError(f"output {name} has no row per input row: {np.shape(value)}")
    bounds = np.cumsum([0, *rows])
    return [
        {name: value[bounds[i] : bounds[i + 1]] for name, value in outputs.items()}
        for i in range(len(rows))
    ]


class Batcher:
    """One signature's queue and batching thread: ``__call__`` blocks until its rows
    are answered."""

    def __init__(
        self,
        call: Any,
        max_batch_size: int,
        timeout_s: float,
        variable: frozenset[str] = frozenset(),
        name: str = "batcher",
        on_batch: Any = None,
    ) -> None:
        """``call(inputs) -> outputs``; ``max_batch_size``: most requests' calls merged
        into one; ``on_batch(calls, rows)``: after each call."""
        self._call, self._max, self._timeout_s = call, max_batch_size, timeout_s
        self._variable, self._on_batch = variable, on_batch
        self._queue: deque[_Call] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        call = _Call(inputs, _rows(inputs))
        with self._ready:
            if self._closed:
                raise RuntimeError("batcher closed")
            self._queue.append(call)
            self._ready.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    @property
    def waiting(self) -> int:
        """Calls queued for the next batch."""
        with self._ready:
            return len(self._queue)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _take(self) -> list[_Call]:
        """The next batch (waits for one), oldest first; empty once closed."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._timeout_s > 0 and self._queue:
                self._ready.wait_for(
                    lambda: self._closed or len(self._queue) >= self._max, self._timeout_s
                )
            count = min(len(self._queue), self._max)
            return [self._queue.popleft() for _ in range(count)]

    def _run(self) -> None:
        while batch := self._take():
            self._answer(batch)
        with self._ready:  # closed: whatever is left fails
            while self._queue:
                call = self._queue.popleft()
                call.error = RuntimeError("batcher closed")
                call.done.set()

    def _answer(self, batch: list[_Call]) -> None:
        try:
            if len(batch) == 1:
                results = [self._call(batch[0].inputs)]
            else:
                outputs = self._call(merge([c.inputs for c in batch], self._variable))
                results = split(outputs, [c.rows for c in batch])
            for call, result in zip(batch, results, strict=True):
                call.result = result
        except BaseException as e:  # every waiting request gets the model's error
            for call in batch:
                call.error = e
        finally:
            for call in batch:
                call.done.set()
            if self._on_batch is not None:
                self._on_batch(len(batch), sum(c.rows for c in batch))


def variable_inputs(signature: Signature) -> frozenset[str]:
    """Inputs of ``signature`` shaped ``[B, None]``: the lists a batch pads."""
    return frozenset(
        name
        for name, spec in signature.inputs.items()
        if len(spec.shape) == 2 and spec.shape[1] is None
    )


class BatchingBackend:
    """A ``ModelBackend`` whose ``predict`` on the ``signatures`` of ``model`` goes
    through a ``Batcher`` each; everything else is the wrapped backend's."""

    def __init__(
        self,
        backend: ModelBackend,
        model: str,
        signatures: Sequence[str],
        max_batch_size: int,
        timeout_s: float,
        on_batch: Any = None,
    ) -> None:
        self.backend = backend
        self.version = backend.version
        self._model, self._signatures = model, tuple(signatures)
        self._max, self._timeout_s, self._on_batch = max_batch_size, timeout_s, on_batch
        self._batchers: dict[str, Batcher] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # run, loaded_function, config, ...
        return getattr(self.backend, name)

    def open(self) -> None:
        self.backend.open()

    def signature(self, model: str, name: str | None = None) -> Signature:
        return self.backend.signature(model, name)

    def check(self) -> None:
        self.backend.check()

    def predict(
        self, model: str, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        if model != self._model or signature not in self._signatures:
            return self.backend.predict(model, inputs, signature)
        return self._batcher(signature)(inputs)

    def _batcher(self, signature: str) -> Batcher:
        batcher = self._batchers.get(signature)
        if batcher is None:
            with self._lock:
                batcher = self._batchers.get(signature)
                if batcher is None:
                    variable = variable_inputs(self.backend.signature(self._model, signature))

                    def call(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                        return self.backend.predict(self._model, inputs, signature)

                    batcher = Batcher(
                        call,
                        self._max,
                        self._timeout_s,
                        variable,
                        name=f"batch-{signature}",
                        on_batch=self._on_batch,
                    )
                    self._batchers[signature] = batcher
        return batcher

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()
        self.backend.close()
