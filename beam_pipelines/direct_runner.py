"""Process settings for the streaming job when it runs locally on the DirectRunner.

Beam's DirectRunner runs as it ships: no patched internals (issue #15). It reads
Pub/Sub 10 messages per bundle and every bundle crosses every stage of the graph,
so the local job applies a few hundred events per second (see the README); the
production runners (Dataflow, Flink) have their own sources and executors.

The local job runs in one process with everything it imported, and every element
allocates short-lived tuples and dicts, so CPython's cyclic garbage collector
keeps running full collections over a heap of a few hundred thousand long-lived
objects (modules, the pipeline graph): a quarter of the streaming job's CPU in a
profile of the benchmark. ``freeze_startup_heap``, called just before the pipeline
runs, collects once, moves the survivors out of the collector's sight
(``gc.freeze``) and lets the young generation grow larger before a collection.
Plain CPython: nothing of Beam is touched.
"""

from __future__ import annotations

import gc


def freeze_startup_heap(young_threshold: int = 10_000) -> None:
    """Collect once, freeze what is alive now and collect the young generation every
    ``young_threshold`` allocations (never less often than CPython's default)."""
    if young_threshold < 1:
        raise ValueError(f"young_threshold must be >= 1, got {young_threshold}")
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, young_threshold), middle, old)
