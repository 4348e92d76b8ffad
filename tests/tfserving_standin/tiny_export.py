"""A real export (``models.export.export_all``) with small, untrained models.

The architectures, signatures, table and ``models.config`` are exactly what
``rtp train`` writes; only the weights are random, which is all a protocol or
latency test needs. Runs in a few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def export_tiny(
    model_base: str | os.PathLike[str],
    item_ids: Sequence[str],
    *,
    dim: int = 8,
    k: int = 50,
    version: int = 1,
    seed: int = 0,
    table: np.ndarray | None = None,
    full_size: bool = False,
    popular: dict[str, float] | None = None,
) -> int:
    """Write version ``version`` for ``item_ids``; returns the version.

    ``table`` (``[len(item_ids), dim]``) fixes the item embeddings; by default they
    are random unit vectors. ``popular``: training engagement counts per item
    (default none, an empty ``popular.json``). ``full_size`` uses the layer sizes ``rtp train`` uses
    (``models.config.TrainConfig`` defaults), for latency measurements.
    """
    import tensorflow as tf

    from models.export import export_all
    from models.inputs import RANKER_INPUTS, input_specs
    from models.ranker import RankerModel
    from models.towers import QUERY_INPUTS, QueryTower

    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    if table is None:
        table = rng.standard_normal((len(item_ids), dim)).astype(np.float32)
        table /= np.linalg.norm(table, axis=1, keepdims=True)
    if full_size:
        from models.config import TrainConfig

        train = TrainConfig()
        ranker = RankerModel(train.cross_layers, reward_weight=train.reward_weight)
        query_tower = QueryTower(dim, train.tower_hidden)
    else:
        ranker = RankerModel(cross_layers=1, projection_dim=8, hidden=(16,))
        query_tower = QueryTower(dim, hidden=16)
    sample = {
        name: (rng.random((64, *shape[1:])) * 3).astype(dtype)
        for name, (dtype, shape) in input_specs(RANKER_INPUTS, dim).items()
    }
    ranker.adapt(sample)
    user = {name: sample[name][:1] for name in QUERY_INPUTS}
    ranker_batch = {name: np.resize(v, (500, *v.shape[1:])) for name, v in sample.items()}
    return export_all(
        model_base,
        query_tower=query_tower,
        ranker=ranker,
        table=np.asarray(table, dtype=np.float32),
        item_ids=np.asarray(list(item_ids), dtype=object),
        retrieval_warmup=[user],
        ranker_warmup=[ranker_batch],
        k=k,
        version=version,
        popular=popular,
    )
