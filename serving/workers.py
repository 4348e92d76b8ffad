"""``rtp serve --workers N``: N server processes, each with a listening socket of its own.

uvicorn's ``--workers`` shares one listening socket between its processes:
whichever process wakes first accepts every pending connection, so a client that
holds a few keep-alive connections (a proxy, a load balancer, the benchmark) can
land entirely on one worker while the others idle. Here each worker binds its own
socket to the same address with ``SO_REUSEPORT`` and the (Linux) kernel spreads new
connections over the sockets that listen. uvicorn calls ``listen`` only after the
app's start-up (models loaded), so no connection is routed to a worker still
loading. Elsewhere (or with port 0) uvicorn's own workers are used.

The parent only supervises: a worker that dies is restarted, one that fails its
start-up stops the whole service (exit status 1); SIGINT/SIGTERM stop the workers
gracefully (uvicorn drains requests in flight).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
from typing import Any

from uvicorn.config import STARTUP_FAILURE  # a worker's exit status when start-up fails

LOG = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0


def reuse_port_available(port: int) -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT") and port != 0


def bind(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A bound, not yet listening TCP socket on ``host:port``."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _worker(app: str, host: str, port: int, options: dict[str, Any]) -> None:
    """One server process: ``app`` is a ``module:factory`` import string."""
    import uvicorn

    try:
        sock = bind(host, port)
    except OSError as e:
        LOG.error("cannot listen on %s:%s: %s", host, port, e)
        raise SystemExit(STARTUP_FAILURE) from e
    config = uvicorn.Config(app, factory=True, host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[sock])


def run(app: str, host: str, port: int, workers: int, options: dict[str, Any]) -> int:
    """Serve ``app`` (``module:factory``) from ``workers`` processes until SIGINT or
    SIGTERM; the exit status (0, or 1 when a worker's start-up failed)."""
    try:
        # Without SO_REUSEPORT: fails if anything listens there, even another service
        # whose workers would otherwise share the port (and the traffic) with ours.
        bind(host, port, reuse_port=False).close()
    except OSError as e:
        LOG.error("cannot listen on %s:%s: %s", host, port, e)
        return 1
    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive a fork

    def start() -> Any:
        process = context.Process(
            target=_worker, args=(app, host, port, options), name="rtp-serve-worker"
        )
        process.start()
        return process

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    processes = [start() for _ in range(workers)]
    LOG.info("serving on %s:%s from %d worker processes, a socket each", host, port, workers)
    status = 0
    try:
        while not stop.wait(0.5):
            for i, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    LOG.error("worker %s failed to start; stopping", process.pid)
                    status = 1
                    stop.set()
                    break
                LOG.warning("worker %s exited (%s); restarting it", process.pid, process.exitcode)
                processes[i] = start()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process in processes:
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
