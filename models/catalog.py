"""The item catalogue: every item of the event log plus optional metadata.

Metadata files: MovieLens ``movies.csv`` (``movieId,title,genres`` with genres
separated by ``|``) or the simulator's ``items.jsonl`` (``item_id,topic,
duration_ms,title``). Topics and genres share one multi-valued ``genres`` field;
``duration_ms`` is milliseconds, 0 when unknown.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

GENRE_SEPARATOR = "|"
_NO_GENRES = "(no genres listed)"


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Items in a fixed order (sorted by id); row ``i`` describes ``item_ids[i]``."""

    item_ids: np.ndarray  # object array of str
    titles: np.ndarray  # object array of str, "" when unknown
    genres: np.ndarray  # object array of "|"-joined str, "" when unknown
    duration_ms: np.ndarray  # int64, 0 when unknown

    def __post_init__(self) -> None:
        sizes = {len(self.item_ids), len(self.titles), len(self.genres), len(self.duration_ms)}
        if len(sizes) != 1:
            raise ValueError(f"catalog columns differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    def indices(self, item_ids: Iterable[str]) -> np.ndarray:
        """Row of each id (KeyError for an id not in the catalogue)."""
        index = self.index
        return np.fromiter((index[i] for i in item_ids), dtype=np.int64)


def _read_metadata(path: str | pathlib.Path) -> pd.DataFrame:
    """``item_id, title, genres, duration_ms`` from a MovieLens CSV or an items JSONL."""
    path = pathlib.Path(path)
    if path.suffix == ".csv":
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "movieId" not in raw.columns:
            raise ValueError(f"{path}: a CSV needs movieId,title,genres, has {list(raw.columns)}")
        genres = raw.get("genres", pd.Series([""] * len(raw))).replace(_NO_GENRES, "")
        return pd.DataFrame(
            {
                "item_id": raw["movieId"],
                "title": raw.get("title", ""),
                "genres": genres,
                "duration_ms": 0,
            }
        )
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records or "item_id" not in records[0]:
        raise ValueError(f"{path}: expected JSON lines with item_id,topic,duration_ms,title")
    return pd.DataFrame(
        {
            "item_id": [str(r["item_id"]) for r in records],
            "title": [str(r.get("title") or "") for r in records],
            "genres": [str(r.get("topic") or r.get("genres") or "") for r in records],
            "duration_ms": [int(r.get("duration_ms") or 0) for r in records],
        }
    )


def build_catalog(event_item_ids: Iterable[str], items_path: str | None = None) -> Catalog:
    """Union of the event log's items and the metadata file's items, sorted by id."""
    frame = pd.DataFrame({"item_id": sorted(set(event_item_ids))})
    if items_path:
        meta = _read_metadata(items_path).drop_duplicates("item_id", keep="last")
        frame = frame.merge(meta, on="item_id", how="outer")
    for column, empty in (("title", ""), ("genres", ""), ("duration_ms", 0)):
        if column not in frame:
            frame[column] = empty
        frame[column] = frame[column].fillna(empty)
    frame = frame.sort_values("item_id", kind="stable").reset_index(drop=True)
    return Catalog(
        item_ids=frame["item_id"].astype(str).to_numpy(dtype=object),
        titles=frame["title"].astype(str).to_numpy(dtype=object),
        genres=frame["genres"].astype(str).to_numpy(dtype=object),
        duration_ms=frame["duration_ms"].astype(np.int64).to_numpy(),
    )
