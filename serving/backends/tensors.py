"""NumPy ↔ TensorFlow ``TensorProto`` and ``SignatureDef`` → ``Signature``, without
calling TensorFlow ops (the protos only): what the TF Serving clients send and read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from serving.backends import Signature, TensorSpec

# tensorflow/core/framework/types.proto
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING, DT_INT64, DT_BOOL = 1, 2, 3, 7, 9, 10
_TO_NUMPY: dict[int, np.dtype] = {
    DT_FLOAT: np.dtype(np.float32),
    DT_DOUBLE: np.dtype(np.float64),
    DT_INT32: np.dtype(np.int32),
    DT_INT64: np.dtype(np.int64),
    DT_BOOL: np.dtype(np.bool_),
    DT_STRING: np.dtype(object),
}
_FROM_NUMPY = {dtype: enum for enum, dtype in _TO_NUMPY.items()}
_NAMES = {
    "DT_FLOAT": DT_FLOAT,
    "DT_DOUBLE": DT_DOUBLE,
    "DT_INT32": DT_INT32,
    "DT_STRING": DT_STRING,
    "DT_INT64": DT_INT64,
    "DT_BOOL": DT_BOOL,
}
# Repeated-field name of each dtype, used when a server sends values without tensor_content.
_VAL_FIELDS = {
    DT_FLOAT: "float_val",
    DT_DOUBLE: "double_val",
    DT_INT32: "int_val",
    DT_INT64: "int64_val",
    DT_BOOL: "bool_val",
}


def numpy_dtype(enum: int | str) -> np.dtype:
    """NumPy dtype of a TF ``DataType`` (enum value or name such as ``"DT_FLOAT"``)."""
    value = _NAMES.get(enum, -1) if isinstance(enum, str) else enum
    if value not in _TO_NUMPY:
        raise ValueError(f"unsupported tensor dtype {enum!r}")
    return _TO_NUMPY[value]


def to_tensor_proto(array: np.ndarray) -> Any:
    """``TensorProto`` of a numeric or string array (numbers as raw ``tensor_content``)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    array = np.asarray(array)
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape]
    shape = tensor_shape_pb2.TensorShapeProto(dim=dims)
    if array.dtype.kind in "OUS":
        values = [v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel()]
        return tensor_pb2.TensorProto(dtype=DT_STRING, tensor_shape=shape, string_val=values)
    enum = _FROM_NUMPY.get(array.dtype)
    if enum is None:
        raise ValueError(f"unsupported array dtype {array.dtype}")
    content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return tensor_pb2.TensorProto(dtype=enum, tensor_shape=shape, tensor_content=content)


def from_tensor_proto(proto: Any) -> np.ndarray:
    """Array of a ``TensorProto`` (strings decoded as UTF-8 ``str`` objects)."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.dtype == DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = [v.decode("utf-8", errors="replace") for v in proto.string_val]
        return values.reshape(shape)
    dtype = numpy_dtype(proto.dtype)
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).reshape(shape)
    values = np.asarray(getattr(proto, _VAL_FIELDS[proto.dtype]), dtype=dtype)
    size = int(np.prod(shape))
    if values.size == 1 and size != 1:  # a splat: one value repeated over the shape
        values = np.full(size, values[0], dtype=dtype)
    return values.reshape(shape)


def _spec(tensor_info: Any) -> TensorSpec:
    dims = tuple(None if d.size < 0 else d.size for d in tensor_info.tensor_shape.dim)
    return TensorSpec(numpy_dtype(tensor_info.dtype), dims)


def signature_from_proto(signature_def: Any) -> Signature:
    """``Signature`` of a ``SignatureDef`` proto (as TF Serving's metadata returns it)."""
    return Signature(
        inputs={name: _spec(info) for name, info in signature_def.inputs.items()},
        outputs={name: _spec(info) for name, info in signature_def.outputs.items()},
    )


def readable_signatures(
    defs: Mapping[str, Any], parse: Callable[[Any], Signature], required: str
) -> dict[str, Signature]:
    """Every signature of ``defs`` that ``parse`` can read, by name: TF Serving also
    lists ``__saved_model_init_op``, whose output has no dtype. ``required`` must be
    readable (its error propagates)."""
    signatures = {}
    for name, signature_def in defs.items():
        try:
            signatures[name] = parse(signature_def)
        except (ValueError, KeyError):
            if name == required:
                raise
    return signatures


def signature_from_json(signature_def: dict[str, Any]) -> Signature:
    """``Signature`` of a SignatureDef in TF Serving's REST metadata JSON."""

    def spec(info: dict[str, Any]) -> TensorSpec:
        dims = info.get("tensor_shape", {}).get("dim", [])
        shape = tuple(None if int(d["size"]) < 0 else int(d["size"]) for d in dims)
        return TensorSpec(numpy_dtype(info["dtype"]), shape)

    return Signature(
        inputs={n: spec(i) for n, i in signature_def.get("inputs", {}).items()},
        outputs={n: spec(i) for n, i in signature_def.get("outputs", {}).items()},
    )
