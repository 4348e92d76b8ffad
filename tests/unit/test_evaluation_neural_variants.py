"""The model-based variants with NumPy stand-ins for the trained models.

Item vectors: A = (1, 0), B = (0, 1), C = (0, 1), D = (0.5, -1); the stand-in
query tower returns ``user_emb_short`` (the pipeline's pooled embedding).
User 1 likes A in training, then B and C in the test stream.

- Static query: A = (1, 0). Event (u1, B): candidates B 0, C 0, D 0.5, rank 2.
  Event (u1, C): A, B seen; C 0 < D 0.5, rank 1.
- Streaming query before (u1, C): pooled A and B ≈ (0.5, 0.5): C 0.5 > D −0.25, rank 0.
"""

from __future__ import annotations

import json

import numpy as np

from beam_pipelines.embeddings import TableEmbeddings
from beam_pipelines.rewards import SHORT_VIDEO
from models.evaluation.data import build_log, read_jsonl
from models.evaluation.neural_variants import Full, TwoTowerStatic, TwoTowerStreaming
from models.evaluation.protocol import apply_training, replay
from models.evaluation.world import World

T0 = 1_767_225_600_000
VECTORS = {"A": [1.0, 0.0], "B": [0.0, 1.0], "C": [0.0, 1.0], "D": [0.5, -1.0]}
LIKES = [("u2", "A"), ("u2", "B"), ("u3", "A"), ("u3", "C"), ("u4", "D"), ("u4", "B"),
         ("u5", "C"), ("u1", "A"), ("u1", "B"), ("u1", "C")]  # fmt: skip


class StandIn:
    def __init__(self, table: TableEmbeddings):
        self.table = table
        self.seen_features: list[dict] = []

    def item_vectors(self, item_ids):
        return np.stack([self.table.get(i) for i in item_ids])

    def query_vectors(self, user_features):
        return np.array([f["user_emb_short"] for f in user_features])

    input_names = ("user_event_count", "item_event_count", "item_embedding")

    def score(self, inputs):
        self.seen_features.append(inputs)
        return -inputs["item_embedding"][:, 1]  # prefers D (-1) over C (1)


def _replay(tmp_path, variants_of):
    lines = [
        json.dumps({"event_id": f"e{n}", "user_id": u, "item_id": i, "event_type": "like",
                    "timestamp": T0 + 1000 * n})
        for n, (u, i) in enumerate(LIKES)
    ]  # fmt: skip
    path = tmp_path / "likes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    log = build_log(read_jsonl(path, SHORT_VIDEO), SHORT_VIDEO, "engaged")
    table = TableEmbeddings({k: np.array(v) for k, v in VECTORS.items()}, "7")
    model = StandIn(table)
    world = World(log, embeddings=table)
    apply_training(world, show_progress=False)
    return replay(world, variants_of(model), show_progress=False), model


def test_static_query_is_frozen_and_streaming_follows_the_user(tmp_path):
    result, _ = _replay(tmp_path, lambda m: [TwoTowerStatic(m), TwoTowerStreaming(m)])
    assert result.ranks["two_tower_static"].tolist() == [2, 1]
    assert result.ranks["two_tower_streaming"].tolist() == [2, 0]


def test_full_reranks_only_the_top_candidates(tmp_path):
    result, model = _replay(tmp_path, lambda m: [Full(m, m, candidates=2)])
    # Event (u1, C): top-2 unseen by retrieval are C and D; the ranker prefers D.
    assert result.ranks["two_tower_full"].tolist()[1] == 1
    inputs = model.seen_features[-1]  # one batch; its last two rows are (u1, C)'s candidates
    assert inputs["user_event_count"][-2:].tolist() == [2, 2]
    dims = inputs["item_embedding"][-2:, 1].tolist()
    by_item = dict(zip(dims, inputs["item_event_count"][-2:].tolist(), strict=True))
    assert by_item == {1.0: 2, -1.0: 1}  # C has 2 events, D 1
    result, _ = _replay(tmp_path, lambda m: [Full(m, m, candidates=1)])
    assert result.ranks["two_tower_full"].tolist()[1] == 0  # only C is re-ranked: it stays on top


def test_full_can_mix_in_the_retrieval_score(tmp_path):
    class Probability(StandIn):
        def score(self, inputs):  # D 0.6, C 0.4: the ranker alone prefers D
            return np.where(inputs["item_embedding"][:, 1] < 0, 0.6, 0.4)

    alone, _ = _replay(tmp_path, lambda m: [Full(Probability(m.table), Probability(m.table))])
    assert alone.ranks["two_tower_full"].tolist()[1] == 1
    # log 0.4 + 2 · 0.5 > log 0.6 + 2 · (−0.25): retrieval's preference for C wins.
    mixed, _ = _replay(
        tmp_path,
        lambda m: [Full(Probability(m.table), Probability(m.table), retrieval_weight=2.0)],
    )
    assert mixed.ranks["two_tower_full"].tolist()[1] == 0


def test_replica_is_independent(tmp_path):
    _, model = _replay(tmp_path, lambda m: [])
    lines = (tmp_path / "likes.jsonl").read_text()
    assert lines  # the log of _replay
    log = build_log(read_jsonl(tmp_path / "likes.jsonl", SHORT_VIDEO), SHORT_VIDEO, "engaged")
    world = World(log, embeddings=model.table)
    apply_training(world, show_progress=False)
    twin = world.replica()
    twin.apply(world.applied)
    assert twin.applied == world.applied + 1
    assert world.user_states["u1"].count == 1 and twin.user_states["u1"].count == 2
    assert world.counts.sum() == twin.counts.sum() - 1
    assert len(world.seen[log.users.index("u1")]) == 1
