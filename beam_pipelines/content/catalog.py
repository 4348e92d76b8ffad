"""Item text and whole-catalogue encoding: what the models call.

``item_text`` is the one definition of the text an item's content embedding is
made from, used by the item pipeline and by ``encode_catalog`` alike, so a
model trained on ``encode_catalog`` vectors sees the same vectors the pipeline
writes to the ``item_content`` view.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from beam_pipelines.content.encoder import DEFAULT_TEXT_ENCODER, ContentEncoder, load_encoder

GENRE_SEPARATOR = "|"
_NO_GENRES = "(no genres listed)"


def _tags(tags: str | Iterable[str] | None) -> list[str]:
    if tags is None:
        return []
    parts = tags.split(GENRE_SEPARATOR) if isinstance(tags, str) else list(tags)
    return [t.strip() for t in parts if t.strip() and t.strip() != _NO_GENRES]


def item_text(title: str, genres: str | Iterable[str] | None = None, description: str = "") -> str:
    """``"<title>. <genre>, <genre>. <description>"``, empty parts left out.

    ``genres``: MovieLens ``|``-joined genres, or any tags/topics as a list
    (``"(no genres listed)"`` is dropped). E.g. ``item_text("Heat (1995)",
    "Action|Crime")`` is ``"Heat (1995). Action, Crime"``.
    """
    parts = [title.strip(), ", ".join(_tags(genres)), description.strip()]
    return ". ".join(p for p in parts if p)


@functools.cache
def shared_encoder(name: str = DEFAULT_TEXT_ENCODER) -> ContentEncoder:
    """One loaded encoder per name and process (weights are read once)."""
    return load_encoder(name)


def encode_catalog(
    titles: Sequence[str],
    genres: Sequence[str | Sequence[str]],
    descriptions: Sequence[str] | None = None,
    *,
    encoder: ContentEncoder | None = None,
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Content embeddings of a catalogue: float32 ``[N, encoder.dim]`` (384 for the
    default all-MiniLM-L6-v2), unit rows, row i from ``item_text(titles[i],
    genres[i], descriptions[i])``. Their version is ``encoder.name``
    (``shared_encoder().name`` for the default, ``all-MiniLM-L6-v2@gt-0.1.0``).

    ``cache_dir``: vectors are kept on disk by (encoder name, text hash), so a
    second call on the same titles reads instead of encoding.
    """
    if len(titles) != len(genres) or (
        descriptions is not None and len(descriptions) != len(titles)
    ):
        raise ValueError("titles, genres (and descriptions) must have one entry per item")
    encoder = encoder or shared_encoder()
    described = descriptions if descriptions is not None else [""] * len(titles)
    texts = [item_text(t, g, d) for t, g, d in zip(titles, genres, described, strict=True)]
    if cache_dir is None:
        return encoder.encode(texts, batch_size=batch_size)
    return _cached_encode(texts, encoder, batch_size, Path(cache_dir))


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _cached_encode(
    texts: list[str], encoder: ContentEncoder, batch_size: int, cache_dir: Path
) -> np.ndarray:
    """One ``.npz`` per encoder name: ``keys`` (text hashes) and ``vectors``."""
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in encoder.name)
    path = cache_dir / f"{safe}.npz"
    known: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as cached:
            known = dict(zip(cached["keys"].tolist(), cached["vectors"], strict=True))
    keys = [_text_key(t) for t in texts]
    todo = list(dict.fromkeys(k for k in keys if k not in known))
    if todo:
        first = {k: t for k, t in zip(keys, texts, strict=True) if k in set(todo)}
        vectors = encoder.encode([first[k] for k in todo], batch_size=batch_size)
        known.update(zip(todo, vectors, strict=True))
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp.npz")
        np.savez(partial, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
        os.replace(partial, path)  # readers never see a half-written file
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    for row, key in enumerate(keys):
        out[row] = known[key]
    return out
