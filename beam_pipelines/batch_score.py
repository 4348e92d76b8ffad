"""Lines of a bounded log → scored event columns and dead letters, a batch at a time.

What ``ParseEvents`` and ``ComputeRewards`` do per message, for a list of lines:
``batch_parse.parse_lines`` decides validity, and rewards are looked up per event
type (constant rules) or computed by ``rewards.compute_reward``.
"""

from __future__ import annotations

from operator import itemgetter

from beam_pipelines.batch_parse import EventFields, parse_lines
from beam_pipelines.events import ValidationConfig
from beam_pipelines.rewards import ConstantRule, RewardConfig, compute_reward
from beam_pipelines.state.columns import ScoredColumns
from beam_pipelines.transforms.dead_letters import DeadLetter


def score_lines(
    seqs: list[int], lines: list[bytes], validation: ValidationConfig, rewards: RewardConfig
) -> tuple[ScoredColumns, list[DeadLetter]]:
    """Valid lines as scored columns, the others as dead letters (as ParseEvents and
    ComputeRewards make them)."""
    valid, kept, letters = [], [], []
    for s, line, event in zip(seqs, lines, parse_lines(lines, validation), strict=True):
        if type(event) is EventFields:
            valid.append(event)
            kept.append(s)
            continue
        payload = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else bytes(line)
        letters.append(DeadLetter.now(event.reason.value, event.detail, payload))
    if not valid:
        return ScoredColumns.empty(), letters
    ids, users, items, kinds, times = (list(map(itemgetter(k), valid)) for k in range(5))
    scores = _Scores(rewards)
    reward, engaged = scores.rewards(valid)
    return ScoredColumns(
        ids,
        users,
        items,
        kinds,
        times,
        reward,
        engaged,
        [scores.exposure[k] for k in kinds],
        kept,
        [e and scores.converts[k] for e, k in zip(engaged, kinds, strict=True)],
    ), letters


class _Scores:
    """``RewardConfig``'s answers per event type, looked up once per batch."""

    def __init__(self, config: RewardConfig):
        self._rules = config.rules
        self._constant = {
            kind: (rule.reward, rule.engaged)
            for kind, rule in config.rules.items()
            if isinstance(rule, ConstantRule)
        }
        self.exposure = {kind: config.is_exposure(kind) for kind in config.rules}
        self.converts = {kind: config.is_conversion(kind, True) for kind in config.rules}

    def rewards(self, events: list[EventFields]) -> tuple[list[float], list[bool]]:
        constant, rules = self._constant, self._rules
        pairs = [
            constant.get(e.event_type) or compute_reward(rules[e.event_type], e) for e in events
        ]
        reward, engaged = zip(*pairs, strict=True)
        return list(reward), list(engaged)
