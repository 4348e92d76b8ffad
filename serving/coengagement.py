"""The co-engagement candidate source as the service reads it from the online store.

Per request: the user's pair window (``user_coengagement``) and the neighbour rows
(``item_coengagement``) of its newest ``RECENT_ITEMS`` items, two reads of the
online store; the cosine (``beam_pipelines.state.coengagement.cosine_scores``)
normalises by each item's accepted event count from the item snapshot. Rows the
catalogue does not know (items newer than the model version) add nothing.
"""

from __future__ import annotations

import numpy as np

from beam_pipelines.state.coengagement import RECENT_ITEMS, cosine_scores
from feature_repo import features as f
from serving.catalog import ItemCatalog
from serving.features import ItemSnapshot, LazyStore

EVENT_COUNT = "item_event_count"


def interacted_items(store: LazyStore, user_id: str) -> list[str]:
    """The user's pair window, newest first (empty for a user the stage has not seen)."""
    row = store.read(f.USER_COENGAGEMENT, [user_id]).get(user_id)
    return list((row or {}).get("user_interacted_items") or [])


def coengagement_scores(
    store: LazyStore,
    catalog: ItemCatalog,
    items: ItemSnapshot,
    recent_newest_first: list[str],
    n_recent: int = RECENT_ITEMS,
) -> np.ndarray:
    """``[catalogue]`` cosine co-engagement of every row with the user's recent items."""
    recent = list(reversed(recent_newest_first[:n_recent]))  # oldest first
    scores = np.zeros(len(catalog))
    if not recent:
        return scores
    rows = store.read(f.ITEM_COENGAGEMENT, recent)
    counts = items.column(EVENT_COUNT)
    pairs = np.zeros((len(recent), len(catalog)))
    recent_counts = np.ones(len(recent))
    for r, item_id in enumerate(recent):
        own = catalog.index.get(item_id)
        if own is not None:
            recent_counts[r] = counts[own]
        row = rows.get(item_id)
        if not row:
            continue
        cols = catalog.rows(list(row.get("item_neighbors") or []))
        values = np.asarray(row.get("item_neighbor_pairs") or [], dtype=np.float64)
        known = cols >= 0
        pairs[r, cols[known]] = values[known]
    return cosine_scores(pairs, recent_counts, counts)
