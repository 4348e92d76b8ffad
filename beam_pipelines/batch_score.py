"""Lines of a bounded log → scored event columns and dead letters, a batch at a time.

What ``ParseEvents`` and ``ComputeRewards`` do per message, for a list of lines,
with the same functions: ``events.parse_event`` and ``transforms.rewards.score_event``.
"""

from __future__ import annotations

import time

from beam_pipelines.events import EventValidationError, ValidationConfig, parse_event
from beam_pipelines.rewards import RewardConfig
from beam_pipelines.state.columns import ScoredColumns
from beam_pipelines.transforms.dead_letters import DeadLetter
from beam_pipelines.transforms.parse import invalid_letter
from beam_pipelines.transforms.rewards import score_event


def score_lines(
    seqs: list[int], lines: list[bytes], validation: ValidationConfig, rewards: RewardConfig
) -> tuple[ScoredColumns, list[DeadLetter]]:
    """Valid lines as scored columns, the others as dead letters (as ParseEvents and
    ComputeRewards make them)."""
    now = int(time.time() * 1000)  # one clock reading bounds the batch's future times
    scored, letters = [], []
    for seq, line in zip(seqs, lines, strict=True):
        try:
            event = parse_event(line, validation, now)
        except EventValidationError as err:
            letters.append(invalid_letter(err, line))
            continue
        scored.append(score_event(event, rewards, seq, keep_source=False))
    return ScoredColumns.from_events(scored), letters
