"""Embedded default: the retrieval and ranker SavedModels loaded into this process."""

from __future__ import annotations

import concurrent.futures
import logging
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from serving.backends import (
    ModelUnavailableError,
    Signature,
    TensorSpec,
    model_names,
    prepare_tensorflow,
)
from serving.config import InProcessModelsConfig

LOG = logging.getLogger(__name__)
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
T = TypeVar("T")


def _spec(tensor_spec: Any) -> TensorSpec:
    dtype = (
        np.dtype(object)
        if tensor_spec.dtype.name == "string"
        else np.dtype(tensor_spec.dtype.as_numpy_dtype)
    )
    return TensorSpec(dtype, tuple(tensor_spec.shape.as_list()))


def _to_numpy(tensor: Any) -> np.ndarray:
    array = tensor.numpy()
    if array.dtype == object:  # tf.string comes back as bytes
        out = np.empty(array.shape, dtype=object)
        out.ravel()[:] = [v.decode("utf-8", "replace") for v in array.ravel().tolist()]
        return out
    return array


class _KeywordCall:
    """The public path: ``signature(**tensors)``."""

    def __init__(self, function: Any) -> None:
        self.function = function

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        import tensorflow as tf

        return self.function(**{k: tf.constant(v) for k, v in inputs.items()})


class TensorCall:
    """Calls a ``ConcreteFunction`` of one dict argument with a dict of tensors.

    Public TensorFlow only: the function's own ``__call__``, which binds and checks
    its inputs on every call (Python holding the GIL, growing with the number of
    inputs). Callers keep that number small: ``_PackedCall`` and ``serving.fused``
    hand a function of a few stacked tensors, unstacked in the graph.
    """

    def __init__(self, function: Any) -> None:
        self.function = function

    def call_tensors(self, tensors: Mapping[str, Any]) -> Any:
        return self.function(dict(tensors))

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        import tensorflow as tf

        return self.call_tensors({k: tf.constant(v) for k, v in inputs.items()})


class _PackedCall:
    """Calls a signature with its inputs packed into one tensor per (dtype, row shape).

    Making an eager tensor from a NumPy array costs ~20 µs of Python whatever its
    size, and passing it to the function some more: for the ranker's 29 inputs that
    was the largest Python cost of a request after the model itself. Here the
    inputs of each (dtype, shape after the batch dimension) are stacked in NumPy
    into one ``[B, n, ...]`` array (the ranker: float scalars, int scalars and
    vectors, 3 tensors), and a wrapper ``tf.function`` unstacks them in the graph
    and calls the signature: the model sees the same values and gives the same
    outputs (tested against the plain call). Signatures with string inputs or
    unknown inner dimensions raise ``ValueError`` (not packed).
    """

    def __init__(self, function: Any) -> None:
        import tensorflow as tf

        _, specs = function.structured_input_signature
        groups: dict[tuple[Any, tuple[int, ...]], list[str]] = {}
        for name in sorted(specs):
            spec = specs[name]
            if spec.shape.rank is None or spec.shape.rank < 1 or spec.dtype == tf.string:
                raise ValueError(f"input {name} ({spec.dtype.name}, {spec.shape}) is not packable")
            inner = tuple(spec.shape.as_list()[1:])
            if None in inner:
                raise ValueError(f"input {name} has an unknown inner dimension: {spec.shape}")
            groups.setdefault((spec.dtype, inner), []).append(name)
        self.groups = [
            (f"packed_{i}", names, np.dtype(dtype.as_numpy_dtype), inner)
            for i, ((dtype, inner), names) in enumerate(groups.items())
        ]

        def unpack_and_call(packed: dict[str, Any]) -> Any:
            inputs = {}
            for key, names, _, _ in self.groups:
                inputs.update(zip(names, tf.unstack(packed[key], len(names), axis=1), strict=True))
            return function(**inputs)

        packed_specs = {
            key: tf.TensorSpec((None, len(names), *inner), tf.as_dtype(dtype), name=key)
            for key, names, dtype, inner in self.groups
        }
        concrete = tf.function(unpack_and_call, autograph=False).get_concrete_function(packed_specs)
        self.function = TensorCall(concrete)

    def pack(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``[B, n, ...]`` arrays by packed name."""
        batch = len(next(iter(inputs.values())))
        packed = {}
        for key, names, dtype, inner in self.groups:
            array = np.empty((batch, len(names), *inner), dtype=dtype)
            for j, name in enumerate(names):
                array[:, j] = inputs[name]
            packed[key] = array
        return packed

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        return self.function(self.pack(inputs))


def _guarded(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` with TensorFlow's errors as ``ModelUnavailableError``."""
    import tensorflow as tf

    try:
        return call(*args)
    except (tf.errors.OpError, ValueError, TypeError) as e:
        raise ModelUnavailableError(f"model call failed: {e}") from e


def _caller(function: Any) -> Any:
    """``_PackedCall`` of a signature if its inputs pack, else ``_KeywordCall``."""
    try:
        return _PackedCall(function)
    except (ValueError, AttributeError, TypeError) as e:
        LOG.info("%s does not apply: %s", _PackedCall.__name__, e)
    return _KeywordCall(function)


class InProcessBackend:
    """``tf.saved_model.load`` of ``<model_base>/<name>/<version>`` for both models.

    With ``timeout_s`` set, calls run on a small thread pool and a call past the
    bound raises ``ModelUnavailableError`` (it still completes in the background:
    a TensorFlow call cannot be cancelled). Without it, calls run inline.
    """

    def __init__(self, config: InProcessModelsConfig, model_base: str, version: int) -> None:
        self.config = config
        self.model_base = pathlib.Path(model_base)
        self.version = version
        self._functions: dict[tuple[str, str], Any] = {}  # callers by (model, signature)
        self._loaded_functions: dict[tuple[str, str], Any] = {}
        self._signatures: dict[tuple[str, str], Signature] = {}
        self._loaded: list[Any] = []  # keeps the loaded objects (and their variables) alive
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def open(self) -> None:
        prepare_tensorflow()
        import tensorflow as tf

        threading = tf.config.threading
        for setting, value in (
            (threading.set_intra_op_parallelism_threads, self.config.intra_op_threads),
            (threading.set_inter_op_parallelism_threads, self.config.inter_op_threads),
        ):
            try:
                if value is not None and value != 0:
                    setting(value)
            except RuntimeError as e:  # TensorFlow already initialised its runtime
                LOG.warning("TensorFlow thread setting ignored: %s", e)
        for name in model_names(self.config):
            path = self.model_base / name / str(self.version)
            try:
                loaded = tf.saved_model.load(str(path))
            except (OSError, ValueError) as e:
                raise ModelUnavailableError(f"cannot load {name} from {path}: {e}") from e
            if self.config.signature not in loaded.signatures:
                raise ModelUnavailableError(
                    f"{name} at {path} has no signature {self.config.signature!r}"
                )
            self._loaded.append(loaded)
            for signature, function in loaded.signatures.items():
                self._loaded_functions[name, signature] = function
                self._functions[name, signature] = _caller(function)
                _, input_specs = function.structured_input_signature
                self._signatures[name, signature] = Signature(
                    inputs={k: _spec(v) for k, v in input_specs.items()},
                    outputs={k: _spec(v) for k, v in function.structured_outputs.items()},
                )
            self._warm_up(name, path)
        if self.config.timeout_s is not None:
            self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="model")

    def _warm_up(self, name: str, path: pathlib.Path) -> None:
        """Replay the export's warm-up requests, as TF Serving does when it loads a
        model: the first calls of a SavedModel are slow (graph optimisation). Each
        request also warms the model's other signatures with the same inputs."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        warmup = path / WARMUP_FILE
        if not warmup.is_file():
            return
        for record in tf.data.TFRecordDataset(str(warmup)).take(MAX_WARMUP_RECORDS):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            inputs = {k: tf.make_ndarray(v) for k, v in log.predict_log.request.inputs.items()}
            for (model, signature), spec in self._signatures.items():
                if model == name and set(spec.inputs) == set(inputs):
                    self._call(self._functions[model, signature], inputs)

    def signature(self, model: str, name: str | None = None) -> Signature:
        return self._signatures[model, name or self.config.signature]

    def predict(
        self, model: str, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        function = self._functions.get((model, signature or self.config.signature))
        if function is None:
            raise ModelUnavailableError(f"model {model!r} ({signature}) is not loaded")
        return self.run(model, self._call, function, inputs)

    def run(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, a TensorFlow call, as ``predict`` makes one: within
        ``timeout_s`` if set, its TensorFlow errors as ``ModelUnavailableError``."""
        if self._pool is None:
            return _guarded(call, *args)
        future = self._pool.submit(_guarded, call, *args)
        try:
            return future.result(timeout=self.config.timeout_s)
        except concurrent.futures.TimeoutError:
            raise ModelUnavailableError(
                f"{what} took longer than {self.config.timeout_s} s"
            ) from None

    def loaded_function(self, model: str, signature: str | None = None) -> Any | None:
        """The loaded ``ConcreteFunction`` of a signature, for ``serving.fused``; None
        if there is none or ``fused`` is off."""
        if not self.config.fused:
            return None
        return self._loaded_functions.get((model, signature or self.config.signature))

    @staticmethod
    def _call(function: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: _to_numpy(v) for k, v in _guarded(function, inputs).items()}

    def check(self) -> None:
        signature = self.config.signature
        missing = [n for n in model_names(self.config) if (n, signature) not in self._functions]
        if missing:
            raise ModelUnavailableError(f"models not loaded: {missing}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._functions.clear()
        self._loaded_functions.clear()
        self._loaded.clear()
