"""The local servers of the integration tests and benchmarks: the product's own
launcher (``beam_pipelines.local_servers``), re-exported under the test package."""

from beam_pipelines.local_servers import (  # noqa: F401
    BIGTABLE_MISSING,
    HOST,
    PUBSUB_MISSING,
    REDIS_MISSING,
    ComponentMissing,
    Server,
    bigtable_emulator,
    find_cbtemulator,
    free_port,
    http_answers,
    port_answers,
    pubsub_emulator,
    redis_server,
    start_server,
    stop_process_group,
    stop_server,
)
