"""Settings shared by the streaming and the backfill job."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from beam_pipelines.embedding_source import EmbeddingSource


def store_config(store_config_path: str | None, sqlite_path: str) -> dict[str, Any]:
    """The online store config: a YAML file, or the embedded SQLite default."""
    if store_config_path:
        return yaml.safe_load(pathlib.Path(store_config_path).read_text())
    root = pathlib.Path(sqlite_path).resolve().parent
    return {
        "type": "sqlite",
        "path": str(pathlib.Path(sqlite_path).resolve()),
        "registry_path": str(root / "registry.db"),
        "offline_dir": str(root / "offline"),
    }


def embedding_source(model_base: str | None, refresh_s: float = 60.0) -> EmbeddingSource:
    return EmbeddingSource(model_base=model_base, refresh_s=refresh_s)
