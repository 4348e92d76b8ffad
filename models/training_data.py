"""Examples with point-in-time features → the NumPy arrays both models train on."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from feature_repo.features import USER_RECENT_ITEMS, USER_RECENT_REWARDS, USER_RECENT_TS_MS
from models.catalog import Catalog
from models.inputs import ITEM_EMBEDDING, RANKER_ITEM_SCALARS, columns_to_inputs
from models.pooling import history_arrays
from models.ranker import ENGAGED, REWARD
from models.retrieval import HISTORY_COEF, HISTORY_INDEX, POSITIVE, pooled_inputs
from models.towers import QUERY_SCALARS


@dataclasses.dataclass(frozen=True)
class ExampleArrays:
    """Row-aligned arrays of labelled examples (see ``dataset.label_examples``)."""

    user_ids: np.ndarray
    timestamps_ms: np.ndarray
    item_rows: np.ndarray  # catalogue row of the example's item
    history_index: np.ndarray  # [B, L] catalogue rows of the last-N events
    history_coef: np.ndarray  # [B, 2, L] pooling coefficients (short, long)
    user: dict[str, np.ndarray]  # QUERY_SCALARS
    item: dict[str, np.ndarray]  # RANKER_ITEM_SCALARS
    engaged: np.ndarray
    reward: np.ndarray

    def __len__(self) -> int:
        return len(self.item_rows)

    def subset(self, mask: np.ndarray) -> ExampleArrays:
        def pick(value):
            if isinstance(value, dict):
                return {k: v[mask] for k, v in value.items()}
            return value[mask]

        return ExampleArrays(
            **{field.name: pick(getattr(self, field.name)) for field in dataclasses.fields(self)}
        )

    def retrieval_arrays(self) -> dict[str, np.ndarray]:
        """Training inputs of ``TwoTowerModel`` (use on engaged examples)."""
        return {
            POSITIVE: self.item_rows.astype(np.int32),
            HISTORY_INDEX: self.history_index,
            HISTORY_COEF: self.history_coef,
            **self.user,
        }

    def query_inputs(self, table: np.ndarray) -> dict[str, np.ndarray]:
        """Query-tower inputs pooled over a fixed item table (as online)."""
        return pooled_inputs(self.user, self.history_index, self.history_coef, table)

    def ranker_inputs(self, table: np.ndarray) -> dict[str, np.ndarray]:
        return {
            **self.query_inputs(table),
            ITEM_EMBEDDING: table[self.item_rows],
            **self.item,
        }

    def ranker_arrays(self, table: np.ndarray) -> dict[str, np.ndarray]:
        return {
            **self.ranker_inputs(table),
            ENGAGED: self.engaged.astype(np.float32),
            REWARD: self.reward.astype(np.float32),
        }


def build_arrays(
    frame: pd.DataFrame,
    catalog: Catalog,
    dim: int,
    max_history: int = 50,
    half_lives: tuple[float, float] | None = None,
) -> ExampleArrays:
    """``frame``: ``dataset.point_in_time_features`` output."""
    index = catalog.index
    history_index, history_coef = history_arrays(
        frame[USER_RECENT_ITEMS].tolist(),
        frame[USER_RECENT_TS_MS].tolist(),
        frame[USER_RECENT_REWARDS].tolist(),
        index,
        max_history,
        half_lives,
    )
    columns: Mapping = {
        name: frame[name].tolist() for name in (*QUERY_SCALARS, *RANKER_ITEM_SCALARS)
    }
    return ExampleArrays(
        user_ids=frame["user_id"].to_numpy(dtype=object),
        timestamps_ms=frame["timestamp_ms"].to_numpy(dtype=np.int64),
        item_rows=np.fromiter(
            (index[i] for i in frame["item_id"]), dtype=np.int64, count=len(frame)
        ),
        history_index=history_index,
        history_coef=history_coef,
        user=columns_to_inputs(columns, QUERY_SCALARS, dim),
        item=columns_to_inputs(columns, RANKER_ITEM_SCALARS, dim),
        engaged=frame["engaged"].to_numpy(dtype=bool),
        reward=frame["reward"].to_numpy(dtype=np.float32),
    )


def before(frame: pd.DataFrame, boundary: tuple[int, str, str]) -> np.ndarray:
    """Rows whose ``(timestamp_ms, user_id, item_id)`` sorts before ``boundary``."""
    ts, user, item = boundary
    t, u, i = (
        frame["timestamp_ms"].to_numpy(),
        frame["user_id"].to_numpy(),
        frame["item_id"].to_numpy(),
    )
    return (t < ts) | ((t == ts) & ((u < user) | ((u == user) & (i < item))))
