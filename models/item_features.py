"""Item-tower inputs: id vocabulary, hashed title tokens, genre vocabulary, duration.

Encoded once per catalogue in NumPy (the item tower itself only gathers and
embeds integers), so training and the exported table see the same numbers.
Index 0 is padding / out-of-vocabulary everywhere. Title tokens are lowercase
alphanumeric runs hashed with BLAKE2b into ``title_buckets − 1`` buckets: stable
across processes and machines, no vocabulary to ship.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable

import numpy as np

from models.catalog import GENRE_SEPARATOR, Catalog

_TOKEN = re.compile(r"[a-z0-9]+")


@dataclasses.dataclass(frozen=True)
class ItemVocab:
    """Vocabularies of the item tower (ids and genres seen at training, sorted)."""

    item_ids: tuple[str, ...]
    genres: tuple[str, ...]
    title_buckets: int = 4096
    max_title_tokens: int = 12
    max_genres: int = 6

    @classmethod
    def fit(cls, train_item_ids: Iterable[str], catalog: Catalog, **sizes: int) -> ItemVocab:
        """Ids of the training positives' items; every genre of the catalogue.

        Items never engaged with in training share the unknown-id vector: an id
        trained only through pooled histories, never as a candidate, scored
        spuriously high (recall@10 0.053 against 0.061 on MovieLens-small).
        """
        genres = {g for text in catalog.genres for g in split_genres(text)}
        return cls(tuple(sorted(set(train_item_ids))), tuple(sorted(genres)), **sizes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ItemVocab:
        data = json.loads(text)
        data["item_ids"], data["genres"] = tuple(data["item_ids"]), tuple(data["genres"])
        return cls(**data)


def split_genres(text: str) -> list[str]:
    return [g.strip().lower() for g in text.split(GENRE_SEPARATOR) if g.strip()]


def title_tokens(title: str, buckets: int, max_tokens: int) -> list[int]:
    """Hashed token ids in ``[1, buckets)`` of the first ``max_tokens`` words."""
    out = []
    for token in _TOKEN.findall(title.lower())[:max_tokens]:
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        out.append(1 + int.from_bytes(digest, "little") % (buckets - 1))
    return out


def _padded(rows: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row[:width]
    return out


def encode_items(catalog: Catalog, vocab: ItemVocab) -> dict[str, np.ndarray]:
    """Item-tower inputs of every catalogue row.

    ``item_index [N]`` (0 = not in the vocabulary), ``title_tokens [N, T]``,
    ``genres [N, G]`` (0 = padding), ``duration [N, 2]``: log1p(seconds) and a
    known-duration flag.
    """
    ids = {item: i + 1 for i, item in enumerate(vocab.item_ids)}
    genres = {g: i + 1 for i, g in enumerate(vocab.genres)}
    titles = [title_tokens(t, vocab.title_buckets, vocab.max_title_tokens) for t in catalog.titles]
    genre_rows = [[genres[g] for g in split_genres(t) if g in genres] for t in catalog.genres]
    seconds = catalog.duration_ms.astype(np.float64) / 1000.0
    duration = np.stack([np.log1p(seconds), (seconds > 0).astype(np.float64)], axis=1)
    return {
        "item_index": np.array([ids.get(i, 0) for i in catalog.item_ids], dtype=np.int32),
        "title_tokens": _padded(titles, vocab.max_title_tokens),
        "genres": _padded(genre_rows, vocab.max_genres),
        "duration": duration.astype(np.float32),
    }
