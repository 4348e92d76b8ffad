"""Beam coders of the per-key state, with a cache of the objects just encoded.

A stateful DoFn reads its key's state, changes it and writes it back, and the
runner keeps it encoded, so consecutive events of one key decode the bytes the
previous event has just encoded. The coder remembers the last objects it
encoded by their bytes: reading those bytes back returns the object without
decoding. An entry is handed out once (popped), so no two readers share an
object, and any other read (another worker, a retried bundle) decodes as usual;
an object is only ever returned for bytes that encode exactly its content.
This is the role of the SDK harness's state cache, for the DirectRunner too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from apache_beam.coders import Coder

from beam_pipelines.state.keyed import decode_item_key, decode_user, encode_item_key, encode_user


class CachingStateCoder(Coder):
    """``encode``/``decode`` functions plus an LRU of ``cache_size`` recent encodings."""

    def __init__(
        self,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
        cache_size: int = 8192,
    ):
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._encode_fn = encode
        self._decode_fn = decode
        self._cache_size = cache_size
        self._fresh()

    def _fresh(self) -> None:
        self._cache: dict[bytes, Any] = {}
        self._lock = threading.Lock()

    def encode(self, value: Any) -> bytes:
        data = self._encode_fn(value)
        if self._cache_size:
            with self._lock:
                self._cache[data] = value
                if len(self._cache) > self._cache_size:
                    del self._cache[next(iter(self._cache))]  # oldest first
        return data

    def decode(self, encoded: bytes) -> Any:
        with self._lock:
            value = self._cache.pop(encoded, None)
        return value if value is not None else self._decode_fn(encoded)

    def is_deterministic(self) -> bool:
        return False  # state values are never keys

    # The cache is per process: not pickled with the pipeline, not compared.
    def __getstate__(self):
        return (self._encode_fn, self._decode_fn, self._cache_size)

    def __setstate__(self, state) -> None:
        self._encode_fn, self._decode_fn, self._cache_size = state
        self._fresh()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__getstate__() == self.__getstate__()

    def __hash__(self) -> int:
        return hash(self.__getstate__())


# The stateful DoFns run without the cache. They change a state object in place and
# keep it until their bundle ends (``NewestRows``), and on stock Beam every write
# encodes at once: when two keys' states encode to the same bytes, the second
# key's read would pop the first key's object, still held and changed by it (two
# new items with the same first event did). The cache was safe only while a
# patched DirectRunner deferred encoding to the bundle's commit (issue #15 removed it).


def user_state_coder() -> CachingStateCoder:
    return CachingStateCoder(encode_user, decode_user, cache_size=0)


def item_state_coder() -> CachingStateCoder:
    return CachingStateCoder(encode_item_key, decode_item_key, cache_size=0)
