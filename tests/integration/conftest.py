"""Session-scoped real servers for the integration tests (see ``servers.py``).

A server whose binary is missing skips the tests that need it, with a message
saying how to install it; under CI (``CI=true``) it fails instead, because CI
must run every integration test (``tests.helpers.components``, which every test
uses for anything missing).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rtp import local_servers as servers
from tests.helpers.components import component
from tests.helpers.item_job import running_item_job


def _serve(
    start: Callable[[], contextlib.AbstractContextManager[servers.Server]],
) -> Iterator[servers.Server]:
    with contextlib.ExitStack() as stack:
        with component():
            server = stack.enter_context(start())
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[servers.Server]:
    """A ``redis-server`` on a free 127.0.0.1 port, without persistence."""
    yield from _serve(servers.redis_server)


@pytest.fixture(scope="session")
def bigtable_emulator() -> Iterator[servers.Server]:
    """A ``cbtemulator`` on a free 127.0.0.1 port."""
    yield from _serve(servers.bigtable_emulator)


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[servers.Server]:
    """The gcloud Pub/Sub emulator (project ``test-project``) on a free port.

    Clients find it through ``PUBSUB_EMULATOR_HOST=<server.address>``; the fixture
    does not set it so that tests choose their own scope for the variable.
    """
    yield from _serve(servers.pubsub_emulator)


@pytest.fixture
def item_job(pubsub_emulator: servers.Server, tmp_path: Path) -> Iterator[argparse.Namespace]:
    """The streaming item job on a fresh topic of the emulator
    (``tests.helpers.item_job.running_item_job``)."""
    with running_item_job(pubsub_emulator, tmp_path) as job:
        yield job
