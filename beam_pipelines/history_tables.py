"""Replayed state columns → the Parquet history table and the final online rows.

Builds the Arrow columns of ``history.arrow_schema`` directly from NumPy (list
columns from offsets), the table ``pa.Table.from_pylist`` makes from the rows of
``transforms.state.user_row``/``item_row``, without a dict per row. The final
rows are those dicts, for the last row of each entity only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from beam_pipelines.history import arrow_schema
from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.item_fold import ItemHistory
from beam_pipelines.state.user_fold import UserHistory
from beam_pipelines.state.user_state import scalar_features
from feature_repo import features as f

_TIMESTAMP = pa.timestamp("ms", tz="UTC")


def user_columns(history: UserHistory) -> dict[str, np.ndarray]:
    """Scalar feature columns of ``UserState.features`` (float64, int64)."""
    return {
        f.USER_EVENT_COUNT: history.count,
        **scalar_features(history.sums[:, 0].T, history.sums[:, 1].T),
        f.USER_LAST_EVENT_MS: history.newest_ms,
    }


def _lists(lengths: np.ndarray, values: pa.Array) -> pa.ListArray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def user_table(history: UserHistory) -> pa.Table:
    schema = arrow_schema(f.USER_REALTIME)
    items = pa.array(history.event_items, pa.string())
    ts, rewards = history.event_ts, history.event_reward
    take, lengths = history.recent_rows, history.recent_lengths
    arrays = {
        f.USER_KEY: pa.array(history.users, pa.string()).take(pa.array(history.user_of_row)),
        f.EVENT_TIMESTAMP: pa.array(history.newest_ms, _TIMESTAMP),
        f.USER_EMB_SHORT: _lists(history.emb_dims, pa.array(history.emb_short)),
        f.USER_EMB_LONG: _lists(history.emb_dims, pa.array(history.emb_long)),
        f.USER_EMBEDDING_VERSION: pa.array(history.versions, pa.string()).take(
            pa.array(history.version_of_row)
        ),
        f.USER_RECENT_ITEMS: _lists(lengths, items.take(pa.array(take))),
        f.USER_RECENT_TS_MS: _lists(lengths, pa.array(ts[take])),
        f.USER_RECENT_REWARDS: _lists(lengths, pa.array(rewards[take].astype(np.float32))),
    }
    for name, values in user_columns(history).items():
        arrays[name] = pa.array(values.astype(schema.field(name).type.to_pandas_dtype()))
    return pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)


def user_finals(history: UserHistory) -> list[dict]:
    """The last row of each user, as ``transforms.state.user_row`` makes it."""
    last = np.flatnonzero(np.diff(history.user_of_row, append=-1))
    scalars = {name: values[last].tolist() for name, values in user_columns(history).items()}
    emb_ends = np.cumsum(history.emb_dims)
    recent_ends = np.cumsum(history.recent_lengths)
    rows = []
    for n, row in enumerate(last.tolist()):
        dim, end = int(history.emb_dims[row]), int(emb_ends[row])
        stop = int(recent_ends[row])
        recent = history.recent_rows[stop - int(history.recent_lengths[row]) : stop]
        features = {
            f.USER_EMB_SHORT: history.emb_short[end - dim : end].tolist(),
            f.USER_EMB_LONG: history.emb_long[end - dim : end].tolist(),
            f.USER_EMBEDDING_VERSION: history.versions[int(history.version_of_row[row])],
            **{name: values[n] for name, values in scalars.items()},
            f.USER_RECENT_ITEMS: [history.event_items[j] for j in recent.tolist()],
            f.USER_RECENT_TS_MS: history.event_ts[recent].tolist(),
            f.USER_RECENT_REWARDS: history.event_reward[recent].tolist(),
        }
        user = history.users[int(history.user_of_row[row])]
        stamp = features[f.USER_LAST_EVENT_MS]
        rows.append({f.USER_KEY: user, f.EVENT_TIMESTAMP: stamp, **features})
    return rows


def item_table(history: ItemHistory, config: StateConfig) -> pa.Table:
    schema = arrow_schema(f.ITEM_REALTIME)
    arrays = {
        f.ITEM_KEY: pa.array(history.items, pa.string()).take(pa.array(history.item_of_row)),
        f.EVENT_TIMESTAMP: pa.array(history.newest_ms, _TIMESTAMP),
    }
    for name, values in history.features(config).items():
        arrays[name] = pa.array(values.astype(schema.field(name).type.to_pandas_dtype()))
    return pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)


def item_finals(history: ItemHistory, config: StateConfig) -> list[dict]:
    """The last row of each item, as ``transforms.state.item_row`` makes it."""
    last = np.flatnonzero(np.diff(history.item_of_row, append=-1))
    columns = {name: values[last].tolist() for name, values in history.features(config).items()}
    return [
        {
            f.ITEM_KEY: item,
            f.EVENT_TIMESTAMP: columns[f.ITEM_LAST_EVENT_MS][n],
            **{name: values[n] for name, values in columns.items()},
        }
        for n, item in enumerate(history.items)
    ]
