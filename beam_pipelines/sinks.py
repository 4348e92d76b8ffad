"""Picklable factories for the feature sink and the dead-letter writers."""

from __future__ import annotations

import atexit
import contextlib
import json
import threading
import uuid
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems


class _SharedSink:
    """One open store client per process and config, writes serialized by a lock.

    The BundleBasedDirectRunner runs ``DoFn.setup`` for every bundle; opening a
    Feast store there (and applying its definitions) cost more than the writes.
    """

    _lock = threading.Lock()
    _open: dict[str, _SharedSink] = {}

    def __init__(self, client):
        self._client = client
        self._write_lock = threading.Lock()

    @classmethod
    def get(cls, store_config: dict[str, Any]) -> _SharedSink:
        key = json.dumps(store_config, sort_keys=True)
        with cls._lock:
            sink = cls._open.get(key)
            if sink is None:
                from feature_repo.store import FeatureStoreClient

                sink = cls._open[key] = cls(FeatureStoreClient(store_config).open())
                atexit.register(sink._client.close)
        return sink

    def open(self) -> None:
        """Already open; the sink outlives the DoFns that share it."""

    def write_rows(self, view: str, rows: list[dict]) -> int:
        with self._write_lock:
            return self._client.write_rows(view, rows)

    def read_bytes(self, view: str, feature: str, ids: list[str]) -> dict[str, bytes]:
        """Stored bytes of ``ids`` (restart-safe state: ``transforms.restore``)."""
        with self._write_lock:
            return self._client.read_bytes(view, feature, ids)

    def close(self) -> None:
        """Closed at process exit, not by one of its users."""


class FeastSinkFactory:
    """The process's shared ``feature_repo.store.FeatureStoreClient`` for a config
    (Feast imported lazily, on the worker)."""

    def __init__(self, store_config: dict[str, Any]):
        self.store_config = dict(store_config)

    def __call__(self) -> _SharedSink:
        return _SharedSink.get(self.store_config)

    def applied_once(self) -> FeastSinkFactory:
        """Apply the definitions here, now, and return a factory whose sinks only
        open the store (``apply_on_open`` off; a config with it off is not applied).

        For a job of several worker processes (the DaskRunner's): each applying on
        open rewrites Feast's file registry, in place, while the others read it."""
        from feature_repo.store import FeatureStoreClient

        with FeatureStoreClient(self.store_config):
            pass
        return FeastSinkFactory({**self.store_config, "apply_on_open": False})


class _WriteDeadLetterFiles(beam.DoFn):
    """One JSONL file per bundle under ``directory`` (any Beam filesystem: local, gs://)."""

    def __init__(self, directory: str):
        self._directory = directory

    def setup(self):
        # On the worker, not while the graph is built (no credentials needed there).
        # Another bundle or worker may create it first: that is fine.
        with contextlib.suppress(OSError):
            FileSystems.mkdirs(self._directory)

    def start_bundle(self):
        self._lines: list[bytes] = []

    def process(self, letter):
        self._lines.append(letter.to_json())

    def finish_bundle(self):
        if not self._lines:
            return
        path = FileSystems.join(self._directory, f"dead-letters-{uuid.uuid4().hex}.jsonl")
        with FileSystems.create(path) as handle:
            handle.write(b"\n".join(self._lines) + b"\n")
        self._lines = []


class WriteDeadLetterFiles(beam.PTransform):
    """Dead letters → JSONL files under ``directory``, one per bundle. The output is
    empty: a later step can depend on it (a runner that computes only what the
    last step needs, the DaskRunner, then still writes the files)."""

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def expand(self, letters):
        return letters | "Write" >> beam.ParDo(_WriteDeadLetterFiles(self._directory))


class WriteDeadLetters(beam.PTransform):
    """Dead letters to JSONL files under a directory and/or a Pub/Sub topic."""

    def __init__(self, directory: str | None = None, topic: str | None = None):
        super().__init__()
        if not directory and not topic:
            raise ValueError("WriteDeadLetters needs a directory or a topic")
        self._directory = directory
        self._topic = topic

    def expand(self, letters):
        if self._directory:
            letters | "ToFiles" >> WriteDeadLetterFiles(self._directory)
        if self._topic:
            (
                letters
                | "Encode" >> beam.Map(lambda letter: letter.to_json())
                | "ToPubSub" >> beam.io.WriteToPubSub(self._topic)
            )
        return beam.pvalue.PDone(letters.pipeline)
