"""Settings shared by the streaming and the backfill job."""

from __future__ import annotations

import argparse
from typing import Any

from beam_pipelines.embedding_source import EmbeddingSource
from beam_pipelines.event_logs import expand_paths
from beam_pipelines.rewards import load_reward_config
from feature_repo.store import (
    DEFAULT_SQLITE_PATH,
    load_store_config,
    read_store_settings,
    sqlite_settings,
)


def store_config(store_config_path: str | None, sqlite_path: str) -> dict[str, Any]:
    """The online store config: a YAML file (any Beam filesystem, ``${VAR}`` expanded
    from the environment), or the embedded SQLite default at ``sqlite_path``."""
    if store_config_path:
        config = read_store_settings(store_config_path)
        load_store_config(config)  # fail here, naming the bad key, not on a worker
        return config
    return sqlite_settings(sqlite_path)


def add_store_arguments(parser: argparse.ArgumentParser, others: str) -> None:
    """``--store_config`` and ``--store_path`` (read by ``store_config``); ``others``
    names the commands sharing the default store, for the help text."""
    parser.add_argument(
        "--store_config", help="Online store YAML (default: SQLite at --store_path)."
    )
    parser.add_argument(
        "--store_path",
        default=DEFAULT_SQLITE_PATH,
        help=f"SQLite online store when --store_config is not given (default: "
        f"{DEFAULT_SQLITE_PATH}, as {others}).",
    )


def embedding_source(model_base: str | None, refresh_s: float = 60.0) -> EmbeddingSource:
    return EmbeddingSource(model_base=model_base, refresh_s=refresh_s)


def check_log_inputs(parser: argparse.ArgumentParser, events: str, reward: str) -> None:
    """A usage error (the usage line, exit 2) unless ``events`` matches a file and
    ``reward`` is a preset or a valid reward YAML: before a job starts, not as a
    traceback from inside it."""
    try:
        expand_paths(events)
        load_reward_config(reward)
    except (OSError, ValueError) as err:
        parser.error(str(err))
