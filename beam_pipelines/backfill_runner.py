"""The backfill's runners: Beam's FnApiRunner in this process, or its DaskRunner.

``FnApiRunner`` (the default) is named explicitly (see ARCHITECTURE.md). The
``DaskRunner`` is Beam's own (``apache_beam.runners.dask``), reached by its full
path as Beam 2.77 requires, on the ``dask.distributed`` scheduler at
``dask_address`` or, when none is given, on a ``LocalCluster`` of
``dask_workers`` worker processes started here and stopped after the job.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

RUNNERS = ("FnApiRunner", "DaskRunner")
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DASK_INSTALL = "pip install 'rtp-personalization[dask]' (dask.distributed)"


def _distributed():
    try:
        import distributed
    except ImportError as err:
        raise ImportError(f"the DaskRunner needs dask.distributed: {DASK_INSTALL}") from err
    return distributed


@contextlib.contextmanager
def dask_scheduler(address: str | None, workers: int) -> Iterator[str]:
    """The scheduler address: ``address``, or a LocalCluster's of ``workers``
    single-threaded worker processes (Beam's DoFns hold the GIL)."""
    distributed = _distributed()
    if address:
        yield address
        return
    if workers < 1:
        raise ValueError(f"dask_workers must be >= 1, got {workers}")
    with distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def remote_worker_hosts(address: str) -> set[str]:
    """Hosts of the workers of the scheduler at ``address`` that are not this
    machine (not a loopback address, nor one of this host name's addresses)."""
    distributed = _distributed()
    with distributed.Client(address, timeout=30) as client:
        hosts = {worker["host"] for worker in client.scheduler_info()["workers"].values()}
    try:
        own = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:  # a host name that does not resolve: loopback only
        own = set()
    return {host for host in hosts if host not in own and not _is_loopback(host)}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return False


@contextlib.contextmanager
def backfill_pipeline(
    runner: str, partitions: int, dask_address: str | None = None, dask_workers: int = 2
) -> Iterator[beam.Pipeline]:
    """A pipeline on ``runner``; on Dask the input is cut into ``partitions`` bags
    (the bag partitions are the tasks of every later stage)."""
    if runner == "FnApiRunner":
        yield beam.Pipeline(runner=FnApiRunner())
        return
    if runner != "DaskRunner":
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    with dask_scheduler(dask_address, dask_workers) as address:
        options = PipelineOptions(
            ["--dask_client_address", address, "--dask_npartitions", str(partitions)]
        )
        yield beam.Pipeline(runner=DASK_RUNNER, options=options)


def run_to_completion(pipeline: beam.Pipeline):
    """Run and wait; the DaskRunner's client is closed before its cluster is."""
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)  # DaskRunnerResult's public field
        if client is not None:
            client.close()
    return result


def has_metrics(runner: str) -> bool:
    """Whether the runner's result reports metrics (the DaskRunner's does not)."""
    return runner != "DaskRunner"
