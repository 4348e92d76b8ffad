"""score_lines ≡ ParseEvents + ComputeRewards, line by line, on dirty simulator logs."""

from __future__ import annotations

import pytest

from beam_pipelines.batch_score import score_lines
from beam_pipelines.events import EventValidationError, ValidationConfig, parse_event
from beam_pipelines.rewards import PRESETS
from beam_pipelines.state.columns import ScoredColumns
from beam_pipelines.transforms.rewards import score_event
from rtp.simulator.config import DirtyKind, SimulatorConfig
from rtp.simulator.simulation import simulate


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_scores_and_letters_match_the_per_event_transforms(preset):
    rewards = PRESETS[preset]
    config = SimulatorConfig(n_events=300, seed=5, dirty_fraction=0.3, dirty_kinds=tuple(DirtyKind))
    lines = [record.data for record in simulate(config)]
    validation = ValidationConfig(event_types=rewards.event_types)
    seqs = [1000 + k for k in range(len(lines))]

    want, want_letters = ScoredColumns.empty(), []
    for seq, line in zip(seqs, lines, strict=True):
        try:
            event = parse_event(line, validation)
        except EventValidationError as err:
            want_letters.append((err.reason.value, err.detail, line))
            continue
        want.append(score_event(event, rewards, seq, keep_source=False))

    got, letters = score_lines(seqs, lines, validation, rewards)
    assert got == want
    assert [(x.reason, x.detail, x.payload) for x in letters] == want_letters
