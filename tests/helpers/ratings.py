"""Tiny generated data for the model tests: rating events, items, and their
point-in-time history written with the pure-Python state code (no Beam), in the
backfill's layout (``<offline_dir>/<view>/*.parquet``).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.embeddings import HashedEmbeddings
from beam_pipelines.history import arrow_schema
from beam_pipelines.state import StateConfig
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.updaters import update_item, update_user
from feature_repo import features as f

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi")
START_MS = 1_600_000_000_000


def rating_events(
    n_users: int = 30,
    n_items: int = 60,
    n_events: int = 900,
    seed: int = 0,
    step_ms: int = 60_000,
    same_second: float = 0.3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens-like ratings (1..5) where users prefer one genre.

    Users come in sessions; a share ``same_second`` of events repeats the previous
    event's timestamp (seconds, as MovieLens), the others advance 1..``step_ms``.

    Returns ``(ratings, movies)``: ``userId,movieId,rating,timestamp`` (seconds) and
    ``movieId,title,genres``. No user rates an item twice.
    """
    rng = np.random.default_rng(seed)
    item_genre = rng.integers(0, len(GENRES), n_items)
    user_genre = rng.integers(0, len(GENRES), n_users)
    rows, seen = [], set()
    t_s = START_MS // 1000
    user = 0
    while len(rows) < n_events:
        if rng.random() < 0.6:  # sessions: the same user again, often in the same second
            user = int(rng.integers(n_users))
        liked = rng.random() < 0.6
        pool = np.flatnonzero((item_genre == user_genre[user]) == liked)
        item = int(rng.choice(pool)) if len(pool) else int(rng.integers(n_items))
        if (user, item) in seen:
            continue
        seen.add((user, item))
        rating = float(
            np.clip(rng.normal(4.2 if item_genre[item] == user_genre[user] else 2.2), 1, 5).round()
        )
        if rng.random() >= same_second:
            t_s += int(rng.integers(1, step_ms // 1000 + 1))
        rows.append((user + 1, item + 1, rating, t_s))
    ratings = pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])
    movies = pd.DataFrame(
        {
            "movieId": np.arange(1, n_items + 1),
            "title": [
                f"{GENRES[g]} story number {i} ({1990 + i % 30})" for i, g in enumerate(item_genre)
            ],
            "genres": [GENRES[g].capitalize() for g in item_genre],
        }
    )
    return ratings, movies


def write_movielens(directory: str | pathlib.Path, **kwargs) -> tuple[pathlib.Path, pathlib.Path]:
    """``ratings.csv`` and ``movies.csv`` of ``rating_events(**kwargs)`` in ``directory``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ratings, movies = rating_events(**kwargs)
    ratings.to_csv(directory / "ratings.csv", index=False)
    movies.to_csv(directory / "movies.csv", index=False)
    return directory / "ratings.csv", directory / "movies.csv"


def write_history(
    events: pd.DataFrame,
    offline_dir: str | pathlib.Path,
    config: StateConfig | None = None,
    dim: int = f.EMBEDDING_DIM,
) -> pathlib.Path:
    """Point-in-time history of ``events`` (``training_log.EVENT_COLUMNS``) in event-time
    order, one row per applied event, as the backfill writes it."""
    config = config or StateConfig()
    embeddings = HashedEmbeddings(dim)
    users: dict = {}
    items: dict = {}
    rows: dict[str, list[dict]] = {f.USER_REALTIME: [], f.ITEM_REALTIME: []}
    ordered = events.sort_values(["timestamp_ms", "user_id", "item_id"], kind="stable")
    for seq, e in enumerate(ordered.itertuples(index=False)):
        event = ScoredEvent(
            e.event_id,
            e.user_id,
            e.item_id,
            e.event_type,
            int(e.timestamp_ms),
            float(e.reward),
            bool(e.engaged),
            bool(e.exposure),
            seq,
        )
        users[e.user_id] = update_user(users.get(e.user_id), event, embeddings, config)
        items[e.item_id] = update_item(items.get(e.item_id), event, config)
        user, item = users[e.user_id], items[e.item_id]
        # The rows of beam_pipelines.transforms.state.user_row / item_row (without Beam).
        rows[f.USER_REALTIME].append(
            {f.USER_KEY: e.user_id, f.EVENT_TIMESTAMP: user.last_event_ms, **user.features()}
        )
        rows[f.ITEM_REALTIME].append(
            {f.ITEM_KEY: e.item_id, f.EVENT_TIMESTAMP: item.sums.t_ref_ms, **item.features(config)}
        )
    offline = pathlib.Path(offline_dir)
    for view, view_rows in rows.items():
        directory = pathlib.Path(f.offline_view_dir(str(offline), view))
        directory.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(view_rows, schema=arrow_schema(view))
        pq.write_table(table, directory / "part-00000.parquet")
    return offline


def write_items_jsonl(path: str | pathlib.Path, movies: pd.DataFrame) -> pathlib.Path:
    """The simulator's item sidecar layout (item_id, topic, duration_ms, title)."""
    path = pathlib.Path(path)
    with open(path, "w") as handle:
        for row in movies.itertuples(index=False):
            record = {
                "item_id": str(row.movieId),
                "topic": row.genres,
                "duration_ms": 15_000 + 1000 * int(row.movieId),
                "title": row.title,
            }
            handle.write(json.dumps(record) + "\n")
    return path
