"""TF Serving over REST: ``POST /v1/models/<name>/versions/<v>:predict`` (columnar
``inputs``), ``GET .../metadata`` for the signature, ``GET /v1/models/<name>/versions/<v>``
for readiness."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.backends import ModelUnavailableError, Signature, model_names
from serving.backends.tensors import readable_signatures, signature_from_json
from serving.config import RestModelsConfig

_OPEN_TIMEOUT_S = 5.0


def _json_value(array: np.ndarray) -> Any:
    if array.dtype == object:
        return [str(v) for v in array.ravel()] if array.ndim == 1 else array.tolist()
    return array.tolist()


class RestBackend:
    """One ``httpx.Client`` to TF Serving's REST port; every call names ``version``."""

    def __init__(self, config: RestModelsConfig, model_base: str, version: int) -> None:
        self.config = config
        self.version = version
        self._client: Any = None
        self._signatures: dict[str, dict[str, Signature]] = {}  # model → name → signature

    def open(self) -> None:
        import httpx

        self._client = httpx.Client(base_url=self.config.url.rstrip("/"))
        for name in model_names(self.config):
            body = self._request("GET", f"{self._path(name)}/metadata", name, _OPEN_TIMEOUT_S)
            defs = body.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
            if self.config.signature not in defs:
                raise ModelUnavailableError(
                    f"{name} v{self.version} has no signature {self.config.signature!r}"
                )
            self._signatures[name] = readable_signatures(
                defs, signature_from_json, self.config.signature
            )

    def _path(self, name: str) -> str:
        return f"/v1/models/{name}/versions/{self.version}"

    def _request(
        self, method: str, path: str, name: str, timeout_s: float | None, json: Any = None
    ) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, json=json, timeout=timeout_s)
        except httpx.HTTPError as e:
            raise ModelUnavailableError(f"{name} v{self.version}: {type(e).__name__}") from e
        if response.status_code != 200:
            raise ModelUnavailableError(
                f"{name} v{self.version}: HTTP {response.status_code} {response.text[:200]}"
            )
        return response.json()

    def signature(self, model: str, name: str | None = None) -> Signature:
        return self._signatures[model][name or self.config.signature]

    def predict(
        self, model: str, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        signature = signature or self.config.signature
        body = {
            "signature_name": signature,
            "inputs": {k: _json_value(np.asarray(v)) for k, v in inputs.items()},
        }
        path = f"{self._path(model)}:predict"
        answer = self._request("POST", path, model, self.config.timeout_s, json=body)
        outputs = answer.get("outputs")
        specs = self._signatures[model][signature].outputs
        if not isinstance(outputs, dict):  # a single-output signature answers a bare value
            outputs = {next(iter(specs)): outputs}
        result = {}
        for name, value in outputs.items():
            dtype = specs[name].dtype if name in specs else None
            result[name] = np.asarray(value, dtype=dtype)
        return result

    def check(self) -> None:
        for name in model_names(self.config):
            body = self._request("GET", self._path(name), name, _OPEN_TIMEOUT_S)
            states = {int(s["version"]): s["state"] for s in body.get("model_version_status", [])}
            if states.get(self.version) != "AVAILABLE":
                raise ModelUnavailableError(f"{name} v{self.version} is not AVAILABLE: {states}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
