"""Coders for the backfill's large elements: batches of scored events, Arrow tables.

A runner samples element sizes for its metrics, and for a type it has no coder
for it measures by pickling the whole element: with a few elements of tens of
thousands of events each, nearly every element got pickled again only to be
measured. These coders estimate the size without encoding.
"""

from __future__ import annotations

import array
import pickle

import apache_beam as beam
import pyarrow as pa

from beam_pipelines.state.columns import ScoredColumns

_BYTES_PER_EVENT = 80  # a pickled event of the simulator's logs is 60-80 bytes
# Per ScoredColumns field: "s" strings, an array typecode, or "?" booleans.
_KINDS = ("s", "s", "s", "s", "q", "d", "?", "?", "q", "?")
_SEP = "\x00"


def _pack(column: list, kind: str):
    if kind == "s":
        joined = _SEP.join(column)
        return joined if joined.count(_SEP) == len(column) - 1 else column
    if kind == "?":
        return bytes(column)
    return array.array(kind, column).tobytes()


def _unpack(packed, kind: str, size: int) -> list:
    if kind == "s":
        if not isinstance(packed, str):
            return packed
        return packed.split(_SEP) if size else []
    if kind == "?":
        return [b == 1 for b in packed]
    return array.array(kind, packed).tolist()


class ScoredColumnsCoder(beam.coders.Coder):
    """Each column as one value: strings joined by NUL (a character no valid id
    has; a column where one does stays a list), numbers as raw arrays."""

    def encode(self, value: ScoredColumns) -> bytes:
        return pickle.dumps(
            (
                value.size,
                *(_pack(column, kind) for column, kind in zip(value, _KINDS, strict=True)),
            ),
            pickle.HIGHEST_PROTOCOL,
        )

    def decode(self, encoded: bytes) -> ScoredColumns:
        size, *columns = pickle.loads(encoded)
        return ScoredColumns(
            *(_unpack(c, kind, size) for c, kind in zip(columns, _KINDS, strict=True))
        )

    def estimate_size(self, value: ScoredColumns) -> int:
        return _BYTES_PER_EVENT * value.size

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return ScoredColumns


class ArrowTableCoder(beam.coders.Coder):
    """An Arrow table as its IPC stream."""

    def encode(self, value: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as writer:
            writer.write_table(value)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.Table:
        return pa.ipc.open_stream(encoded).read_all()

    def estimate_size(self, value: pa.Table) -> int:
        return value.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return pa.Table


beam.coders.registry.register_coder(ScoredColumns, ScoredColumnsCoder)
beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)
