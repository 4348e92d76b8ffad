"""Model inputs by feature name: specs of the serving signatures and row → array conversion.

Names are user_realtime / item_realtime feature names (``feature_repo.features``);
dtypes follow the Feast types (INT → int64, FLOAT → float32, FLOAT_LIST →
float32 vector). Every input has a leading batch dimension. A missing feature
(new user or item, or ``None`` from the store) becomes 0 / a zero vector, as in
training, where an entity without earlier history has no feature row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from feature_repo import features as f
from models.towers import QUERY_EMBEDDINGS, QUERY_INPUTS

ITEM_EMBEDDING = f.ITEM_EMBEDDING_VECTOR  # the feature of the item_embedding view
RANKER_ITEM_SCALARS = (
    f.ITEM_EVENT_COUNT,
    f.ITEM_IMPRESSIONS_SHORT,
    f.ITEM_IMPRESSIONS_LONG,
    f.ITEM_ENGAGEMENTS_SHORT,
    f.ITEM_ENGAGEMENTS_LONG,
    f.ITEM_REWARD_SUM_SHORT,
    f.ITEM_REWARD_SUM_LONG,
    f.ITEM_BETA_ALPHA,
    f.ITEM_BETA_BETA,
    f.ITEM_TRENDING,
)
RANKER_INPUTS = (*QUERY_INPUTS, ITEM_EMBEDDING, *RANKER_ITEM_SCALARS)
_KINDS = {**f.USER_FEATURES, **f.ITEM_FEATURES, **f.ITEM_EMBEDDING_FEATURES}
_unknown = sorted(set(RANKER_INPUTS) - set(_KINDS))
if _unknown:  # a renamed feature in feature_repo.features must fail here, not at serving
    raise ImportError(f"model inputs {_unknown} are not in feature_repo.features")


def _kind(name: str) -> str:
    return _KINDS[name]


def input_specs(
    names: Sequence[str], dim: int
) -> dict[str, tuple[np.dtype, tuple[int | None, ...]]]:
    """``name → (dtype, shape)`` with ``None`` for the batch dimension."""
    specs = {}
    for name in names:
        kind = _kind(name)
        if kind == f.FLOAT_LIST:
            specs[name] = (np.dtype(np.float32), (None, dim))
        elif kind == f.INT:
            specs[name] = (np.dtype(np.int64), (None,))
        elif kind == f.FLOAT:
            specs[name] = (np.dtype(np.float32), (None,))
        else:
            raise ValueError(f"{name} ({kind}) is not a model input")
    return specs


def _vectors(values: Sequence[Any], dim: int, name: str) -> np.ndarray:
    out = np.zeros((len(values), dim), dtype=np.float32)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or len(v) == 0:
            continue
        if len(v) != dim:
            raise ValueError(f"{name} has {len(v)} values, the model expects {dim}")
        out[i] = v
    return out


def _scalars(values: Sequence[Any], dtype: np.dtype) -> np.ndarray:
    try:  # fast path: numbers and None (→ NaN → 0)
        floats = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):  # strings or other objects: coerce one by one
        floats = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy()
    return np.nan_to_num(floats, nan=0.0, posinf=0.0, neginf=0.0).astype(dtype)


def columns_to_inputs(
    columns: Mapping[str, Sequence[Any]], names: Sequence[str], dim: int
) -> dict[str, np.ndarray]:
    """Arrays for ``names`` from column sequences (lists, NumPy or pandas)."""
    out = {}
    for name, (dtype, shape) in input_specs(names, dim).items():
        values = columns[name] if name in columns else [None] * len(next(iter(columns.values())))
        values = list(values)
        out[name] = _vectors(values, dim, name) if len(shape) == 2 else _scalars(values, dtype)
    return out


def rows_to_inputs(
    rows: Sequence[Mapping[str, Any] | None], names: Sequence[str], dim: int
) -> dict[str, np.ndarray]:
    """Arrays for ``names`` from feature rows (``None`` or absent keys → defaults)."""
    columns = {name: [(row or {}).get(name) for row in rows] for name in names}
    return columns_to_inputs(columns, names, dim)


def user_inputs(rows: Sequence[Mapping[str, Any] | None], dim: int) -> dict[str, np.ndarray]:
    """Query-tower inputs from user_realtime rows."""
    return rows_to_inputs(rows, QUERY_INPUTS, dim)


def with_pooled(inputs: Mapping[str, np.ndarray], pooled: np.ndarray) -> dict[str, np.ndarray]:
    """``inputs`` with the short/long embeddings replaced by ``pooled [B, 2, D]``."""
    out = dict(inputs)
    for h, name in enumerate(QUERY_EMBEDDINGS):
        out[name] = np.ascontiguousarray(pooled[:, h, :], dtype=np.float32)
    return out
