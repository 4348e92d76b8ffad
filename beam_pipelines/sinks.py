"""Picklable factories for the feature sink and the dead-letter writers."""

from __future__ import annotations

import uuid
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems


class FeastSinkFactory:
    """Builds a ``feature_repo.store.FeatureStoreClient`` on the worker (lazy Feast import)."""

    def __init__(self, store_config: dict[str, Any]):
        self.store_config = dict(store_config)

    def __call__(self):
        from feature_repo.store import FeatureStoreClient

        return FeatureStoreClient(self.store_config)


class _WriteDeadLetterFiles(beam.DoFn):
    """One JSONL file per bundle under ``directory`` (any Beam filesystem: local, gs://)."""

    def __init__(self, directory: str):
        self._directory = directory

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
            if not FileSystems.exists(self._directory):
                FileSystems.mkdirs(self._directory)
            letters | "ToFiles" >> beam.ParDo(_WriteDeadLetterFiles(self._directory))
        if self._topic:
            (
                letters
                | "Encode" >> beam.Map(lambda letter: letter.to_json())
                | "ToPubSub" >> beam.io.WriteToPubSub(self._topic)
            )
        return beam.pvalue.PDone(letters.pipeline)
