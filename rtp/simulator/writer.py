"""The stream on disk: ``<out>`` (JSONL) and its sidecars ``<out>.labels.jsonl``,
``<out>.items.jsonl`` and ``<out>.truth.json``."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any, Self

from rtp.simulator.encoding import dumps
from rtp.simulator.records import SimRecord
from rtp.simulator.simulation import Simulation


def sidecar_paths(out: pathlib.Path) -> dict[str, pathlib.Path]:
    """``<out>.labels.jsonl``, ``<out>.items.jsonl`` and ``<out>.truth.json``."""
    return {
        name: out.with_name(out.name + suffix)
        for name, suffix in (
            ("labels", ".labels.jsonl"),
            ("items", ".items.jsonl"),
            ("truth", ".truth.json"),
        )
    }


class StreamWriter:
    """Writes the JSONL stream to ``out`` and its sidecars next to it."""

    def __init__(self, out: pathlib.Path | str):
        self.out = pathlib.Path(out)
        self._paths = sidecar_paths(self.out)
        self._stream: Any = None
        self._labels: Any = None

    def __enter__(self) -> Self:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.out, "wb")
        self._labels = open(self._paths["labels"], "wb")
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in (self._stream, self._labels):
            if handle is not None:
                handle.close()

    def write(self, record: SimRecord) -> None:
        self._stream.write(record.data + b"\n")
        if not record.is_clean:
            self._labels.write(dumps(record.label()) + b"\n")

    def tee(self, records: Iterable[SimRecord]) -> Iterator[SimRecord]:
        """Write each record as it passes through."""
        for record in records:
            self.write(record)
            yield record

    def finish(self, sim: Simulation) -> None:
        """Write the items and truth sidecars (after the stream is exhausted)."""
        with open(self._paths["items"], "wb") as items:
            items.writelines(dumps(item.to_dict()) + b"\n" for item in sim.items)
        self._paths["truth"].write_bytes(json.dumps(sim.truth(), indent=1).encode() + b"\n")
