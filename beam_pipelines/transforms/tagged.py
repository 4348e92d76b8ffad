"""TaggedParDo: a multi-output ParDo whose outputs every runner keeps apart.

Beam's DaskRunner (2.77) hands every consumer of a ``with_outputs`` ParDo the
outputs of all its tags mixed together (its bag translation has one bag per
transform, not per output). So the DoFn's outputs travel as ``(tag, value)``
pairs in one PCollection and each tag is selected by a plain ``FlatMap``: the same
result on every runner, and on a fusing runner (FnApiRunner, Dataflow) the
selectors fuse with the ParDo, so nothing is encoded in between.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam import typehints


class _Pairs(beam.DoFn):
    """Runs ``fn`` and turns its ``TaggedOutput(tag, v)`` into ``(tag, v)``, the rest
    into ``(main, v)``. Only ``process`` may yield outputs (not ``finish_bundle``:
    the DaskRunner drops those)."""

    def __init__(self, fn: beam.DoFn, main: str):
        self._fn = fn
        self._main = main

    def setup(self):
        self._fn.setup()

    def start_bundle(self):
        self._fn.start_bundle()

    def process(self, element):
        for out in self._fn.process(element) or ():
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield out.tag, out.value
            else:
                yield self._main, out

    def finish_bundle(self):
        self._fn.finish_bundle()

    def teardown(self):
        self._fn.teardown()


def _select(pair: tuple[str, Any], tag: str):
    if pair[0] == tag:
        yield pair[1]


class TaggedParDo(beam.PTransform):
    """``ParDo(fn).with_outputs(*tags, main=main)`` as a dict ``{tag: PCollection}``
    (``main`` included), each output typed by ``types`` (default ``Any``)."""

    def __init__(self, fn: beam.DoFn, *tags: str, main: str, types: dict | None = None):
        super().__init__()
        self._fn = fn
        self._tags = (main, *tags)
        self._main = main
        self._types = types or {}

    def expand(self, pcoll):
        pairs = pcoll | "Run" >> beam.ParDo(_Pairs(self._fn, self._main)).with_output_types(
            typehints.Tuple[str, typehints.Any]
        )
        return {
            tag: pairs
            | f"Select_{tag}"
            >> beam.FlatMap(_select, tag).with_output_types(self._types.get(tag, typehints.Any))
            for tag in self._tags
        }
