"""The stand-in's servables and its gRPC and REST front ends (see the package docstring).

Behaviour follows TF Serving where the service depends on it: a request without a
version gets the newest loaded version; an unknown model or version is
``NOT_FOUND``; a missing or extra input is ``INVALID_ARGUMENT``; metadata is the
SavedModel's own ``SignatureDefMap``; ``model_version_policy { latest { num_versions: N } }``
keeps the N newest versions (``all`` and ``specific`` are honoured too).
``delay_s`` makes every Predict sleep first, to test client timeouts; with
``delay_file`` the delay is read from that file before each Predict (no file: no
delay), so a test can slow a running server down and speed it up again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib
import re
import time
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


class ServingError(Exception):
    """An error with the gRPC status code TF Serving would return."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclasses.dataclass
class Servable:
    name: str
    version: int
    loaded: Any
    signature_defs: Any  # the MetaGraph's map<string, SignatureDef>

    def predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature not in self.signature_defs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'Serving signature name: "{signature}" not found in signature def',
            )
        expected = set(self.signature_defs[signature].inputs)
        if set(inputs) != expected:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input keys {sorted(inputs)} do not match the signature's {sorted(expected)}",
            )
        function = self.loaded.signatures[signature]
        try:
            outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
        except (tf.errors.OpError, ValueError, TypeError) as e:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e)[:500]) from e
        return {k: v.numpy() for k, v in outputs.items()}


def _versions(base: pathlib.Path, policy: Any) -> list[int]:
    found = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return found
    if choice == "specific":
        return [v for v in found if v in set(policy.specific.versions)]
    keep = policy.latest.num_versions if choice == "latest" else 1
    return found[-max(keep, 1) :]


def _signature_defs(version_dir: pathlib.Path) -> Any:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    return proto.meta_graphs[0].signature_def


def warm_up(servable: Servable, version_dir: pathlib.Path) -> int:
    """Replay ``assets.extra/tf_serving_warmup_requests`` as TF Serving does on load."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    if not path.is_file():
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(str(path)).take(1000):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        servable.predict(request.model_spec.signature_name or "serving_default", inputs)
        count += 1
    return count


class Servables:
    """Every version the model config asks for, loaded once at start."""

    def __init__(
        self,
        model_config: str | pathlib.Path,
        delay_s: float = 0.0,
        delay_file: str | pathlib.Path | None = None,
    ) -> None:
        config = model_server_config_pb2.ModelServerConfig()
        text_format.Parse(pathlib.Path(model_config).read_text(), config)
        self.delay_s = delay_s
        self.delay_file = pathlib.Path(delay_file) if delay_file else None
        self.models: dict[str, dict[int, Servable]] = {}
        for entry in config.model_config_list.config:
            base = pathlib.Path(entry.base_path)
            self.models[entry.name] = {}
            for v in _versions(base, entry.model_version_policy):
                path = base / str(v)
                servable = Servable(
                    entry.name, v, tf.saved_model.load(str(path)), _signature_defs(path)
                )
                warm_up(servable, path)
                self.models[entry.name][v] = servable

    def get(self, name: str, version: int | None) -> Servable:
        versions = self.models.get(name)
        if not versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {name}")
        chosen = max(versions) if version is None else version
        if chosen not in versions:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({name}, {version})",
            )
        return versions[chosen]

    def predict(
        self, name: str, version: int | None, signature: str, inputs: dict[str, np.ndarray]
    ) -> tuple[Servable, dict[str, np.ndarray]]:
        delay = self.delay_s
        if self.delay_file is not None and self.delay_file.is_file():
            delay = float(self.delay_file.read_text() or 0)
        if delay:
            time.sleep(delay)
        servable = self.get(name, version)
        return servable, servable.predict(signature or "serving_default", inputs)


def _requested_version(model_spec: Any) -> int | None:
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, servables: Servables) -> None:
        self.servables = servables

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        spec = request.model_spec
        try:
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            servable, outputs = self.servables.predict(
                spec.name, _requested_version(spec), spec.signature_name, inputs
            )
        except ServingError as e:
            context.abort(e.code, e.message)
        wanted = set(request.output_filter) or set(outputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        for name in wanted:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def only")
        try:
            servable = self.servables.get(
                request.model_spec.name, _requested_version(request.model_spec)
            )
        except ServingError as e:
            context.abort(e.code, e.message)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            signatures.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signatures)
        return response


def version_status(servables: Servables, name: str, version: int | None) -> list[Any]:
    """``ModelVersionStatus`` of every loaded version, or of ``version`` only."""
    versions = servables.models.get(name)
    if not versions or (version is not None and version not in versions):
        raise ServingError(
            grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
        )
    chosen = [version] if version is not None else sorted(versions)
    return [get_model_status_pb2.ModelVersionStatus(version=v, state=AVAILABLE) for v in chosen]


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, servables: Servables) -> None:
        self.servables = servables

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        spec = request.model_spec
        try:
            statuses = version_status(self.servables, spec.name, _requested_version(spec))
        except ServingError as e:
            context.abort(e.code, e.message)
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)


def grpc_server(servables: Servables, port: int, host: str = "127.0.0.1") -> grpc.Server:
    """A started gRPC server with both services on ``host:port``."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=16),
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(servables), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(servables), server)
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


# --- REST: /v1/models/<name>[/versions/<v>][/metadata | :predict] ---------------------

_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<action>/metadata|:predict)?$"
)
_HTTP_STATUS = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400}


def _json_ready(array: np.ndarray) -> Any:
    if array.dtype == object:
        return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(
            array
        ).tolist()
    return array.tolist()


def _rest_inputs(body: dict[str, Any], servable: Servable, signature: str) -> dict[str, Any]:
    defs = servable.signature_defs.get(signature)
    if defs is None:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"no signature {signature!r}")
    dtypes = {n: tf.dtypes.as_dtype(i.dtype).as_numpy_dtype for n, i in defs.inputs.items()}
    if "inputs" in body:
        columns = body["inputs"]
        if not isinstance(columns, dict):  # a single-input signature may send a bare value
            columns = {next(iter(dtypes)): columns}
    elif "instances" in body:
        rows = body["instances"]
        columns = {n: [row[n] for row in rows] for n in dtypes}
    else:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")
    return {n: np.asarray(v, dtype=dtypes.get(n)) for n, v in columns.items()}


def rest_app(servables: Servables) -> Any:
    """A Starlette app answering TF Serving's REST routes."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(e: ServingError) -> JSONResponse:
        return JSONResponse({"error": e.message}, _HTTP_STATUS.get(e.code, 500))

    def predict(match: re.Match[str], body: dict[str, Any]) -> JSONResponse:
        version = int(match["version"]) if match["version"] else None
        servable = servables.get(match["name"], version)
        signature = body.get("signature_name") or "serving_default"
        inputs = _rest_inputs(body, servable, signature)
        _, outputs = servables.predict(servable.name, servable.version, signature, inputs)
        if "instances" in body:
            names = list(outputs)
            n = len(next(iter(outputs.values())))
            rows = [
                {k: _json_ready(outputs[k][i : i + 1])[0] for k in names}
                if len(names) > 1
                else _json_ready(outputs[names[0]][i : i + 1])[0]
                for i in range(n)
            ]
            return JSONResponse({"predictions": rows})
        if len(outputs) == 1:
            return JSONResponse({"outputs": _json_ready(next(iter(outputs.values())))})
        return JSONResponse({"outputs": {k: _json_ready(v) for k, v in outputs.items()}})

    def metadata(match: re.Match[str]) -> JSONResponse:
        version = int(match["version"]) if match["version"] else None
        servable = servables.get(match["name"], version)
        defs = {
            key: json_format.MessageToDict(value, preserving_proto_field_name=True)
            for key, value in servable.signature_defs.items()
        }
        return JSONResponse(
            {
                "model_spec": {
                    "name": servable.name,
                    "signature_name": "",
                    "version": str(servable.version),
                },
                "metadata": {"signature_def": {"signature_def": defs}},
            }
        )

    def status(match: re.Match[str]) -> JSONResponse:
        version = int(match["version"]) if match["version"] else None
        statuses = version_status(servables, match["name"], version)
        return JSONResponse(
            {
                "model_version_status": [
                    {
                        "version": str(s.version),
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                    for s in statuses
                ]
            }
        )

    async def models_route(request: Request) -> JSONResponse:
        match = _REST_PATH.match(request.url.path)
        if match is None:
            return JSONResponse({"error": "Malformed request"}, 404)
        action = match["action"]
        try:
            if action == ":predict" and request.method == "POST":
                # On a worker thread, as TF Serving serves requests concurrently: a
                # slow (or delayed) call must not hold up the next one.
                return await run_in_threadpool(predict, match, await request.json())
            if request.method != "GET" or action == ":predict":
                return JSONResponse({"error": "Method not allowed"}, 405)
            return metadata(match) if action == "/metadata" else status(match)
        except ServingError as e:
            return error(e)
        except ValueError as e:  # bad JSON or values of the wrong shape
            return JSONResponse({"error": str(e)[:500]}, 400)

    return Starlette(
        routes=[Route("/v1/models/{rest:path}", models_route, methods=["GET", "POST"])]
    )
