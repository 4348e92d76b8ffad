"""TF Serving over gRPC: ``PredictionService.Predict``/``GetModelMetadata`` and
``ModelService.GetModelStatus`` through the ``tensorflow-serving-api`` stubs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.backends import ModelUnavailableError, Signature, model_names, prepare_tensorflow
from serving.backends.tensors import (
    from_tensor_proto,
    readable_signatures,
    signature_from_proto,
    to_tensor_proto,
)
from serving.config import GrpcModelsConfig

AVAILABLE = 30  # ModelVersionStatus.State.AVAILABLE
_OPEN_TIMEOUT_S = 5.0  # metadata and status calls, made at start-up and by /readyz


class GrpcBackend:
    """One channel to TF Serving; every call names the pinned ``version``.

    A call that fails or passes ``timeout_s`` raises ``ModelUnavailableError``
    naming the gRPC status code.
    """

    def __init__(self, config: GrpcModelsConfig, model_base: str, version: int) -> None:
        self.config = config
        self.version = version
        self._channel: Any = None
        self._predict: Any = None
        self._models: Any = None
        self._signatures: dict[str, dict[str, Signature]] = {}  # model → name → signature

    def open(self) -> None:
        prepare_tensorflow()
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        size = self.config.max_message_bytes
        self._channel = grpc.insecure_channel(
            self.config.address,
            options=[
                ("grpc.max_send_message_length", size),
                ("grpc.max_receive_message_length", size),
            ],
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        for name in model_names(self.config):
            self._signatures[name] = self._read_signatures(name)

    def _spec(self, name: str, signature: str | None = None) -> Any:
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=name)
        spec.version.value = self.version
        if signature:
            spec.signature_name = signature
        return spec

    def _read_signatures(self, name: str) -> dict[str, Signature]:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(name), metadata_field=["signature_def"]
        )
        response = self._call(self._predict.GetModelMetadata, request, name, _OPEN_TIMEOUT_S)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        if self.config.signature not in signatures.signature_def:
            raise ModelUnavailableError(
                f"{name} v{self.version} has no signature {self.config.signature!r}"
            )
        return readable_signatures(
            signatures.signature_def, signature_from_proto, self.config.signature
        )

    def _call(self, method: Any, request: Any, name: str, timeout_s: float | None) -> Any:
        import grpc

        try:
            return method(request, timeout=timeout_s)
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") else "UNKNOWN"
            raise ModelUnavailableError(
                f"{name} v{self.version} at {self.config.address}: {code}"
            ) from e

    def signature(self, model: str, name: str | None = None) -> Signature:
        return self._signatures[model][name or self.config.signature]

    def predict(
        self, model: str, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        from tensorflow_serving.apis import predict_pb2

        spec = self._spec(model, signature or self.config.signature)
        request = predict_pb2.PredictRequest(model_spec=spec)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(to_tensor_proto(value))
        response = self._call(self._predict.Predict, request, model, self.config.timeout_s)
        return {name: from_tensor_proto(proto) for name, proto in response.outputs.items()}

    def check(self) -> None:
        from tensorflow_serving.apis import get_model_status_pb2

        for name in model_names(self.config):
            request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(name))
            response = self._call(self._models.GetModelStatus, request, name, _OPEN_TIMEOUT_S)
            states = {s.version: s.state for s in response.model_version_status}
            if states.get(self.version) != AVAILABLE:
                raise ModelUnavailableError(f"{name} v{self.version} is not AVAILABLE: {states}")

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
