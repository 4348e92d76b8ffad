"""Start and stop the real local servers: Pub/Sub emulator, Redis, Bigtable emulator.

Used by ``rtp demo``, the integration tests and the benchmarks. Each server runs
in its own process group on a free 127.0.0.1 port and is stopped by process-group
id (``gcloud`` starts Java children that must go too). A missing binary raises
``ComponentMissing`` whose message says how to install it; tests turn it into a
skip, the demo into its fallback. Times are in seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REDIS_MISSING = "redis-server not found: apt-get install redis-server"
BIGTABLE_MISSING = (
    "cbtemulator not found: install the Google Cloud SDK component bigtable "
    "(gcloud components install bigtable or "
    "apt-get install google-cloud-cli-bigtable-emulator)"
)
PUBSUB_MISSING = (
    "Pub/Sub emulator not found: install the Google Cloud SDK with its pubsub "
    "emulator (apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator, "
    "needs Java)"
)


class ComponentMissing(RuntimeError):
    """A server binary is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Server:
    """A running server: where it listens and the process (group leader) behind it."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        """``host:port``, as the ``*_EMULATOR_HOST`` variables expect."""
        return f"{self.host}:{self.port}"


def free_port(host: str = HOST) -> int:
    """A TCP port that is free now (another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_answers(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout_s``."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def http_answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether ``GET url`` returns HTTP 200 within ``timeout_s``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(
    args: list[str],
    port: int,
    *,
    ready: Callable[[], bool] | None = None,
    timeout_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> Server:
    """Start ``args`` in a new process group and wait until it is ready.

    Ready means ``ready()`` is true, by default that ``HOST:port`` accepts
    connections. Raises ``RuntimeError`` with the log tail if the process exits
    or is not ready within ``timeout_s``.
    """
    fd, log_name = tempfile.mkstemp(prefix="server-", suffix=".log")
    with os.fdopen(fd, "wb") as log:  # the child keeps its own copy of the fd
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    server = Server(HOST, port, process, Path(log_name))
    check = ready or (lambda: port_answers(HOST, port))
    deadline = time.monotonic() + timeout_s
    while not check():
        exited = process.poll() is not None
        if exited or time.monotonic() > deadline:
            state = f"exited with {process.returncode}" if exited else "not ready"
            stop_server(server)
            raise RuntimeError(f"{args[0]} {state}; log:\n{_tail(server.log_path)}")
        time.sleep(0.05)
    return server


def stop_process_group(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop a process started with ``start_new_session=True`` and its whole group:
    SIGTERM, then SIGKILL after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # A group member (e.g. java under gcloud) may outlive the leader.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def stop_server(server: Server, timeout_s: float = 10.0) -> None:
    """Stop the server's process group and remove its log."""
    stop_process_group(server.process, timeout_s)
    server.log_path.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _sdk_root() -> Path | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    return Path(os.path.realpath(gcloud)).parent.parent


def find_cbtemulator() -> str:
    """Path of the Bigtable emulator binary, or ``ComponentMissing``."""
    found = shutil.which("cbtemulator")
    candidates = [Path(found)] if found else []
    sdk = _sdk_root()
    if sdk is not None:
        candidates.append(sdk / "platform" / "bigtable-emulator" / "cbtemulator")
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise ComponentMissing(BIGTABLE_MISSING)


@contextlib.contextmanager
def redis_server() -> Iterator[Server]:
    """A throwaway ``redis-server`` without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ComponentMissing(REDIS_MISSING)
    port = free_port()
    args = [binary, "--port", str(port), "--bind", HOST]
    server = start_server([*args, "--save", "", "--appendonly", "no"], port)
    try:
        yield server
    finally:
        stop_server(server)


@contextlib.contextmanager
def bigtable_emulator() -> Iterator[Server]:
    """A ``cbtemulator`` (in-memory Bigtable, any project and instance)."""
    binary = find_cbtemulator()
    port = free_port()
    server = start_server([binary, "-host", HOST, "-port", str(port)], port)
    try:
        yield server
    finally:
        stop_server(server)


@contextlib.contextmanager
def pubsub_emulator(project: str = "test-project") -> Iterator[Server]:
    """The gcloud Pub/Sub emulator (Java); clients use ``PUBSUB_EMULATOR_HOST``."""
    gcloud, sdk = shutil.which("gcloud"), _sdk_root()
    if gcloud is None or sdk is None or not (sdk / "platform/pubsub-emulator").is_dir():
        raise ComponentMissing(PUBSUB_MISSING)
    if shutil.which("java") is None:
        raise ComponentMissing(PUBSUB_MISSING)
    port = free_port()
    args = [gcloud, "beta", "emulators", "pubsub", "start"]
    args += [f"--host-port={HOST}:{port}", f"--project={project}"]
    # The emulator accepts connections before it serves; its HTTP root says "Ok".
    server = start_server(
        args, port, ready=lambda: http_answers(f"http://{HOST}:{port}/"), timeout_s=60
    )
    try:
        yield server
    finally:
        stop_server(server)
