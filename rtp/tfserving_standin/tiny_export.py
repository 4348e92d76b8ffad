"""A real export (``models.export.export_all``) with small, untrained models.

The architectures, signatures, table and ``models.config`` are exactly what
``rtp train`` writes (retrieval, ranker and, unless ``sequential=False``, the
sequential retriever); only the weights are random, which is all a protocol or
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
    sequential: bool = True,
    ann_min_items: int | None = None,
) -> int:
    """Write version ``version`` for ``item_ids``; returns the version.

    ``table`` (``[len(item_ids), dim]``) fixes the item embeddings; by default they
    are random unit vectors. ``popular``: training engagement counts per item
    (default none, an empty ``popular.json``). ``full_size`` uses the layer sizes ``rtp train`` uses
    (``models.config.TrainConfig`` and ``models.sequential.SequentialConfig`` defaults),
    for latency measurements. ``sequential=False`` writes the two-model export of a
    version trained without the sequential retriever (the service's two-tower stack).
    ``ann_min_items``: the sequential export's ANN threshold (None: brute force only).
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
        sequential=_sequential_module(item_ids, k, full_size, ann_min_items)
        if sequential
        else None,
    )


def _sequential_module(
    item_ids: Sequence[str], k: int, full_size: bool, ann_min_items: int | None = None
):
    """``export_all``'s ``sequential``: an untrained ``SequentialModule`` built as
    ``models.sequence_training`` builds it, over a catalogue of the ids without content."""
    from models import sequential as sq
    from models.catalog import Catalog
    from models.item_features import ItemVocab, encode_items
    from models.sequential_export import MIN_K, SequentialModule

    config = sq.SequentialConfig() if full_size else sq.SequentialConfig(dim=16, blocks=1)
    n = len(item_ids)
    # In the export's order, not sorted: the model's rows are rows of the item table.
    empty = np.full(n, "", dtype=object)
    catalog = Catalog(np.asarray(list(item_ids), dtype=object), empty, empty, np.zeros(n, np.int64))
    vocab = ItemVocab.fit(catalog.item_ids, catalog)
    encoder = sq.ItemEncoder(
        encode_items(catalog, vocab),
        len(vocab.item_ids),
        len(vocab.genres),
        vocab.title_buckets,
        config.dim,
    )
    model = sq.SequentialRetriever(encoder, config)
    width = config.max_len
    model.query(  # builds every layer before the export traces its signatures
        np.full((1, width), -1, np.int32), np.zeros((1, width), np.int64), np.zeros((1, width))
    )
    ranker = _candidate_ranker()
    return lambda version: SequentialModule(
        model, catalog.item_ids, max(k, MIN_K), version, ranker=ranker, ann_min_items=ann_min_items
    )


def _candidate_ranker():
    """An untrained ``models.candidate_ranker.CandidateRanker``, normalisation adapted
    to random features, built by one call."""
    import tensorflow as tf

    from models.candidate_features import FEATURES
    from models.candidate_ranker import CandidateRanker, CandidateRankerConfig

    ranker = CandidateRanker(CandidateRankerConfig(hidden=(16,), reward_weight=0.5))
    sample = np.random.default_rng(0).normal(size=(64, len(FEATURES))).astype(np.float32)
    ranker.normalize.adapt(sample)
    ranker(tf.constant(sample))
    return ranker
