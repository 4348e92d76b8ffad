"""``rtp serve --workers N``: every worker process listens on its own socket and the
kernel spreads connections over them; SIGTERM stops them all, a worker that cannot
start stops the service. Linux (``/proc``); a real export with untrained weights."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from rtp import local_servers as servers
from rtp.tfserving_standin.tiny_export import export_tiny
from serving import workers

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"),
        reason="needs Linux /proc and SO_REUSEPORT",
    ),
]
LISTEN, ESTABLISHED = "0A", "01"


def socket_inodes(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 TCP sockets on local ``port`` in ``state``."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            found.add(fields[9])
    return found


def owned_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def children(pid: int) -> list[int]:
    """Worker processes of ``pid`` (multiprocessing's resource tracker excluded)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                found.append(int(child))
    return found


def serve_args(base: Path, port: int, tmp: Path, n: int) -> list[str]:
    store = tmp / "store.yaml"
    store.write_text(
        f"type: sqlite\npath: {tmp / 'online.db'}\nregistry_path: {tmp / 'registry.db'}\n"
        f"offline_dir: {tmp / 'offline'}\n"
    )
    return [
        sys.executable,
        "-m",
        "serving.app",
        "--models",
        str(base),
        "--store-config",
        str(store),
        "--port",
        str(port),
        "--workers",
        str(n),
        "--log-level",
        "warning",
    ]


def test_connections_are_spread_over_the_workers(tmp_path: Path) -> None:
    base = tmp_path / "models"
    export_tiny(base, [f"i{i:03d}" for i in range(50)], k=20)
    port = servers.free_port()
    server = servers.start_server(
        serve_args(base, port, tmp_path, 2),
        port,
        ready=lambda: servers.http_answers(f"http://{servers.HOST}:{port}/readyz"),
        timeout_s=300,
    )
    try:
        pids = children(server.process.pid)
        assert len(pids) == 2
        # Until both have loaded the models and listen (or the module's pytest timeout).
        while not all(owned_inodes(p) & socket_inodes(port, LISTEN) for p in pids):
            time.sleep(0.2)

        connections = [socket.create_connection((servers.HOST, port)) for _ in range(16)]
        for connection in connections:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            assert connection.recv(12) == b"HTTP/1.1 200"
        established = socket_inodes(port, ESTABLISHED)
        per_worker = [len(owned_inodes(p) & established) for p in pids]
        # Kernel hashing: all 16 on one socket has a chance of 2 in 65536.
        assert sum(per_worker) == 16 and min(per_worker) > 0, per_worker
        for connection in connections:
            connection.close()

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{p}").exists() for p in pids)
    finally:
        servers.stop_server(server)


def test_a_worker_that_cannot_start_stops_the_service(tmp_path: Path) -> None:
    base = tmp_path / "models"
    export_tiny(base, [f"i{i:03d}" for i in range(50)], k=20)
    for saved_model in base.glob("ranker/*/saved_model.pb"):
        saved_model.write_bytes(b"not a SavedModel")  # the in-process models fail to load
    port = servers.free_port()
    server = servers.start_server(serve_args(base, port, tmp_path, 2), port, ready=lambda: True)
    try:
        assert server.process.wait(timeout=300) == 1
    finally:
        servers.stop_server(server)


def test_a_port_in_use_is_reported_at_once() -> None:
    for reuse_port in (False, True):  # also not shared with another SO_REUSEPORT service
        with workers.bind(servers.HOST, 0, reuse_port=reuse_port) as taken:
            taken.listen()
            port = taken.getsockname()[1]
            assert workers.run("serving.app:app_from_env", servers.HOST, port, 2, {}) == 1
