"""The item pipeline's stages: parse item metadata, encode content with
``RunInference``, and shape the results as ``item_content`` rows and item-table
records.

``ContentModelHandler`` is a Beam ``ModelHandler`` over any ``ContentEncoder``:
``RunInference`` batches items (``min_batch_size``..``max_batch_size``), loads the
encoder once per process (Beam shares it) and calls ``encode`` per batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from beam_pipelines.content.encoder import DEFAULT_TEXT_ENCODER, ContentEncoder, load_encoder
from beam_pipelines.items import ItemRecord, ItemValidationError, parse_item
from beam_pipelines.transforms.dead_letters import DEAD_LETTER, DeadLetter
from feature_repo.features import (
    EVENT_TIMESTAMP,
    ITEM_CONTENT_EMBEDDING,
    ITEM_CONTENT_VERSION,
    ITEM_KEY,
)

ITEMS = "items"
ENCODE_FAILED = "encode_failed"


class _ParseItemFn(beam.DoFn):
    def __init__(self):
        self._valid = Metrics.counter("rtp", "items_valid")
        self._invalid = Metrics.counter("rtp", "items_invalid")

    def process(self, data):
        try:
            item = parse_item(data)
        except ItemValidationError as err:
            self._invalid.inc()
            payload = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter.now(err.reason.value, err.detail, bytes(payload))
            )
            return
        self._valid.inc()
        yield item


class ParseItems(beam.PTransform):
    """``bytes`` (JSON item metadata) → ``items`` (``ItemRecord``) and ``dead_letter``."""

    def expand(self, messages):
        return messages | "Validate" >> beam.ParDo(_ParseItemFn()).with_outputs(
            DEAD_LETTER, main=ITEMS
        )


def item_input(item: ItemRecord) -> str:
    """What a text encoder reads of an item (``ItemRecord.text``)."""
    return item.text


class ContentModelHandler(ModelHandler[ItemRecord, PredictionResult, ContentEncoder]):
    """Items in, ``PredictionResult(example=item, inference=vector, model_id=name)`` out.

    ``encoder``: a registered encoder name or ``"module:Factory"`` class path
    (``beam_pipelines.content.encoder``). ``input_of`` maps an item to what the
    encoder reads: its text for a text encoder; an image encoder gets a function
    returning the item's image bytes (the plug-in point for other modalities).
    """

    def __init__(
        self,
        encoder: str = DEFAULT_TEXT_ENCODER,
        input_of: Callable[[ItemRecord], Any] = item_input,
        min_batch_size: int = 1,
        max_batch_size: int = 64,
    ):
        if not encoder:
            raise ValueError("encoder must name a content encoder")
        if not 1 <= min_batch_size <= max_batch_size:
            raise ValueError(
                "need 1 <= min_batch_size <= max_batch_size, "
                f"got {min_batch_size}, {max_batch_size}"
            )
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._encoder = encoder
        self._input_of = input_of
        self._max_batch_size = max_batch_size

    def load_model(self) -> ContentEncoder:
        return load_encoder(self._encoder)

    def run_inference(
        self,
        batch: Sequence[ItemRecord],
        model: ContentEncoder,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        vectors = model.encode([self._input_of(item) for item in batch], self._max_batch_size)
        if vectors.shape != (len(batch), model.dim):
            raise ValueError(f"{model.name} returned {vectors.shape} for {len(batch)} items")
        return [
            PredictionResult(item, vector, model.name)
            for item, vector in zip(batch, vectors, strict=True)
        ]

    def get_metrics_namespace(self) -> str:
        return "rtp_content"


def _failed_batch_letters(failed: tuple[Sequence[ItemRecord], BaseException]):
    batch, error = failed
    for item in batch:
        payload = json.dumps(dataclasses.asdict(item), separators=(",", ":")).encode()
        yield DeadLetter.now(ENCODE_FAILED, f"{type(error).__name__}: {error}"[:500], payload)


EMBEDDED = "embedded"


class EmbedItems(beam.PTransform):
    """``ItemRecord`` → ``embedded`` (``PredictionResult``) and ``dead_letter`` (the
    items of a batch whose encoding raised, reason ``encode_failed``)."""

    def __init__(self, handler: ContentModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, items):
        results, failures = (
            items | "RunInference" >> RunInference(self._handler).with_exception_handling()
        )
        letters = failures.failed_inferences | "FailedBatches" >> beam.FlatMap(
            _failed_batch_letters
        )
        return {EMBEDDED: results, DEAD_LETTER: letters}


def content_row(result: PredictionResult, now_ms: int | None = None) -> dict[str, Any]:
    """An ``item_content`` feature row. Its event time is the upload time, or the
    time of encoding (epoch ms) for an item without one (a static catalogue)."""
    item: ItemRecord = result.example
    stamp = item.upload_ms if item.upload_ms else (now_ms or int(time.time() * 1000))
    return {
        ITEM_KEY: item.item_id,
        ITEM_CONTENT_EMBEDDING: np.asarray(result.inference, dtype=np.float32).tolist(),
        ITEM_CONTENT_VERSION: result.model_id,
        EVENT_TIMESTAMP: stamp,
    }


def item_table_record(result: PredictionResult, now_ms: int | None = None) -> dict[str, Any]:
    """One row of the item table: the metadata, the content vector and its version."""
    item: ItemRecord = result.example
    return {
        **dataclasses.asdict(item),
        "tags": list(item.tags),
        "content_embedding": np.asarray(result.inference, dtype=np.float32).tolist(),
        "content_version": result.model_id,
        "encoded_at_ms": now_ms or int(time.time() * 1000),
    }


def item_table_schema():
    """Arrow schema of the item table (Parquet)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("item_id", pa.string()),
            ("title", pa.string()),
            ("description", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("topic", pa.string()),
            ("creator", pa.string()),
            ("duration_ms", pa.int64()),
            ("upload_ms", pa.int64()),
            ("content_embedding", pa.list_(pa.float32())),
            ("content_version", pa.string()),
            ("encoded_at_ms", pa.int64()),
        ]
    )


class _WriteItemFiles(beam.DoFn):
    """One Parquet file per bundle under ``directory`` (any Beam filesystem), so
    the same step serves a bounded catalogue and an unbounded stream of uploads."""

    def __init__(self, directory: str):
        self._directory = directory

    def setup(self):
        with contextlib.suppress(OSError):  # another worker made it first
            FileSystems.mkdirs(self._directory)

    def start_bundle(self):
        self._rows: list[dict[str, Any]] = []

    def process(self, row):
        self._rows.append(row)

    def finish_bundle(self):
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._rows, schema=item_table_schema())
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        path = FileSystems.join(self._directory, f"items-{uuid.uuid4().hex}.parquet")
        with FileSystems.create(path) as handle:
            handle.write(buffer.getvalue())
        self._rows = []


class WriteItemTable(beam.PTransform):
    """Item-table records to ``<directory>/items-*.parquet`` (read the directory whole)."""

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def expand(self, rows):
        rows | "ToParquet" >> beam.ParDo(_WriteItemFiles(self._directory))
        return beam.pvalue.PDone(rows.pipeline)
