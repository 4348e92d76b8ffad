"""Process-wide set-up shared by unit and integration tests.

``prometheus_client`` is imported before anything can import ``feast.metrics``:
that Feast module (imported lazily by online reads and materialization) sets
``PROMETHEUS_MULTIPROCESS_DIR`` and ``PROMETHEUS_MULTIPROC_DIR`` in
``os.environ``, and a ``prometheus_client`` imported after that keeps every
metric value in per-process mmap files keyed by metric name, shared by all
registries. The service's per-app ``ServingMetrics`` registries would then add up
across tests (``rtp serve`` imports ``prometheus_client`` at start, before any
Feast read, so the service itself is not affected).
"""

import prometheus_client  # noqa: F401  (before feast.metrics; see above)
