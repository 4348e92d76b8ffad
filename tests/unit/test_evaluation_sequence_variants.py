"""The new stack's variants with a NumPy stand-in for the sequential model.

Histories handed to the model are the user's events strictly before the event,
in protocol order; ``full`` blends co-engagement with the model's probabilities.
"""

from __future__ import annotations

import json

import numpy as np

from beam_pipelines.rewards import SHORT_VIDEO
from models.blend import blend
from models.evaluation.data import build_log, read_jsonl
from models.evaluation.protocol import apply_training, replay
from models.evaluation.sequence_variants import (
    CoEngagementRolling,
    Full,
    SequentialStatic,
    SequentialStreaming,
    histories,
    top_unseen,
)
from models.evaluation.world import World

T0 = 1_767_225_600_000
# Items A, B, C, E (rows 0..3). Training: u2 and u3 like A then B.
# Stream: u4 likes E; u1 likes A, C, B.
LIKES = [("u2", "A"), ("u2", "B"), ("u3", "A"), ("u3", "B"), ("u4", "E"),
         ("u1", "A"), ("u1", "C"), ("u1", "B")]  # fmt: skip


class LastItemModel:
    """Query = one-hot of the newest history row; table = identity shifted by two:
    the model predicts row (newest + 2) mod 4 (after A: C; after C: A)."""

    max_len = 3

    def __init__(self):
        self.calls: list[np.ndarray] = []

    def item_table(self) -> np.ndarray:
        return np.roll(np.eye(4), 2, axis=0)

    def queries(self, rows, ts_ms, rewards):
        self.calls.append(rows.copy())
        out = np.zeros((len(rows), 4))
        for i, r in enumerate(rows):
            if r[-1] >= 0:
                out[i, r[-1]] = 1.0
        return out


def _log(tmp_path):
    lines = [
        json.dumps({"event_id": f"e{n}", "user_id": u, "item_id": i, "event_type": "like",
                    "timestamp": T0 + 1000 * n})
        for n, (u, i) in enumerate(LIKES)
    ]  # fmt: skip
    path = tmp_path / "likes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return build_log(read_jsonl(path, SHORT_VIDEO), SHORT_VIDEO, "engaged", train_fraction=0.6)


def test_histories_are_strictly_before_the_event(tmp_path) -> None:
    log = _log(tmp_path)
    rows, ts, _ = histories(log, np.array([6, 7]), 3)
    a, c = log.items.index("A"), log.items.index("C")
    assert rows[0].tolist() == [-1, -1, a]  # before (u1, C): only A
    assert rows[1].tolist() == [-1, a, c]
    assert ts[1, -1] == T0 + 6000


def test_coengagement_follows_the_stream(tmp_path) -> None:
    log = _log(tmp_path)
    world = World(log, coengagement=True)
    apply_training(world, show_progress=False)
    result = replay(world, [CoEngagementRolling()], show_progress=False)
    # (u4, E) and (u1, A): no recent items, rolling popularity (A ties with B: rank 1).
    # (u1, C) after A: only B is co-engaged with A; C ties with E at 0 → rank 2.
    # (u1, B) after A, C: B co-engaged with A by u2 and u3 → rank 0.
    assert result.ranks["coengagement_rolling"].tolist() == [3, 1, 2, 0]


def test_streaming_uses_fresh_history_and_static_does_not(tmp_path) -> None:
    log = _log(tmp_path)
    world = World(log, coengagement=True)
    apply_training(world, show_progress=False)
    model = LastItemModel()
    streaming = SequentialStreaming(model)
    result = replay(world, [SequentialStatic(model), streaming], show_progress=False)
    # (u1, C) right after A: the model predicts C from the fresh history → rank 0.
    assert result.ranks["sequential_streaming"].tolist()[2] == 0
    # Static: u1 had no training event, every score is 0 → C ties with B and E.
    assert result.ranks["sequential_static"].tolist()[2] == 2
    assert model.calls and all(r.shape[1] == 3 for r in model.calls)


def test_full_blends_both_sources(tmp_path) -> None:
    log = _log(tmp_path)
    world = World(log, coengagement=True)
    apply_training(world, show_progress=False)
    full = Full(SequentialStreaming(LastItemModel()))
    result = replay(world, [full], show_progress=False)
    # (u1, C): B = cos 1 + 2 p_B (0.175) = 1.35 beats C = 2 p_C (0.475) = 0.95 → rank 1,
    # better than co-engagement alone (2). (u1, B): co-engagement 0.7 / 1.7 + 0.35 → rank 0.
    assert result.ranks["full"].tolist()[2:] == [1, 0]


def test_top_unseen_and_blend_by_hand() -> None:
    seq = np.array([5.0, 4.0, 3.0, 2.0])
    co = np.array([0.0, 0.0, 0.1, 0.5])
    assert top_unseen(seq, np.array([0]), 2).tolist() == [1, 2]
    assert top_unseen(co, np.array([3]), 3, positive=True).tolist() == [2]
    # Union {1, 2, 3}: 1 → 2·0.6 = 1.2; 2 → 0.1 + 2·0.3 = 0.7; 3 → 0.5 (not in seq's rows).
    rows, scores = blend(np.array([1, 2]), np.array([0.6, 0.3]), np.array([3, 2]), co, 2.0)
    assert rows.tolist() == [1, 2, 3]
    np.testing.assert_allclose(scores, [1.2, 0.7, 0.5])


def test_report_slices_by_hand(tmp_path) -> None:
    from models.evaluation.report import slices

    log = _log(tmp_path)
    world = World(log, coengagement=True)
    apply_training(world, show_progress=False)
    result = replay(world, [CoEngagementRolling()], show_progress=False)
    masks = slices(log, result)
    # Targets (u4, E), (u1, A), (u1, C), (u1, B): training interacted with A and B only.
    assert masks["cold_item"].tolist() == [True, False, True, False]
    assert masks["new_user_first_10"].tolist() == [True, True, True, True]


def test_full_and_full_ranker_compute_each_events_candidates_once(tmp_path, monkeypatch) -> None:
    from models.candidate_features import blend_scores
    from models.evaluation.sequence_variants import BlendConfig, FullRanked

    log = _log(tmp_path)
    world = World(log, coengagement=True)
    apply_training(world, show_progress=False)
    streaming = SequentialStreaming(LastItemModel())
    blend_config = BlendConfig()
    full = Full(streaming, blend_config)
    ranked = FullRanked(streaming, lambda x: blend_scores(x, blend_config.weight), blend_config)
    computed: list[int] = []
    compute = Full._candidates

    def counting(self, w, user):
        computed.append(w.applied)
        return compute(self, w, user)

    monkeypatch.setattr(Full, "_candidates", counting)
    result = replay(world, [full, ranked], show_progress=False)
    assert len(computed) == len(result.positions) == len(set(computed))
    # The ranker ordering by the blend's own score gives the blend's ranks.
    assert result.ranks["full_ranker"].tolist() == result.ranks["full"].tolist()
