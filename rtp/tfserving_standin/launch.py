"""Run the stand-in as a subprocess of a test or benchmark (stopped by process group)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
from collections.abc import Iterator

from rtp import local_servers as servers

REPO = pathlib.Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def standin(
    model_base: str | os.PathLike[str],
    *,
    delay_s: float = 0.0,
    delay_file: str | os.PathLike[str] | None = None,
    rest: bool = True,
) -> Iterator[tuple[servers.Server, int | None]]:
    """(gRPC server, REST port or None) serving ``<model_base>/models.config``.

    ``delay_file``: while it exists, every Predict first sleeps the seconds it holds.
    """
    grpc_port = servers.free_port()
    rest_port = servers.free_port() if rest else None
    args = [sys.executable, "-m", "rtp.tfserving_standin"]
    args += ["--model-config", str(pathlib.Path(model_base) / "models.config")]
    args += ["--grpc-port", str(grpc_port), "--delay-s", str(delay_s)]
    if rest_port:
        args += ["--rest-port", str(rest_port)]
    if delay_file:
        args += ["--delay-file", str(delay_file)]

    def ready() -> bool:
        ports = [grpc_port] + ([rest_port] if rest_port else [])
        return all(servers.port_answers(servers.HOST, p) for p in ports)

    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    server = servers.start_server(args, grpc_port, ready=ready, timeout_s=120, env=env)
    try:
        yield server, rest_port
    finally:
        servers.stop_server(server)
