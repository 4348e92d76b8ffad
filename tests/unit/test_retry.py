"""RetryPolicy: at least ``max_retries`` retries, then on until the budget is
spent, with delays doubling up to the cap (a fake clock: no real waiting)."""

from __future__ import annotations

import pytest

from beam_pipelines.transforms.retry import RetryPolicy


class _Clock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _failing(times: int):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= times:
            raise ConnectionError("down")
        return "ok"

    return call, calls


def test_an_outage_shorter_than_the_budget_is_ridden_out():
    clock = _Clock()
    call, calls = _failing(12)  # 0.2+0.4+0.8+1.6+3.2 then 5 s each: ~46 s of outage
    policy = RetryPolicy(max_retries=3, backoff_s=0.2, budget_s=60.0, max_backoff_s=5.0)
    assert policy.call(call, sleep=clock.sleep, clock=lambda: clock.now) == "ok"
    assert len(calls) == 13
    assert clock.sleeps[:6] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0])
    assert max(clock.sleeps) == 5.0


def test_past_the_budget_the_last_error_is_raised():
    clock = _Clock()
    call, calls = _failing(1000)
    policy = RetryPolicy(max_retries=2, backoff_s=1.0, budget_s=10.0, max_backoff_s=2.0)
    with pytest.raises(ConnectionError):
        policy.call(call, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.now >= 10.0 and len(calls) == len(clock.sleeps) + 1


def test_without_a_budget_max_retries_bounds_the_attempts():
    clock = _Clock()
    call, calls = _failing(1000)
    with pytest.raises(ConnectionError):
        RetryPolicy(max_retries=2, backoff_s=0.0).call(call, sleep=clock.sleep, clock=lambda: 0)
    assert len(calls) == 3


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="max_backoff_s"):
        RetryPolicy(backoff_s=10.0, max_backoff_s=1.0)
    with pytest.raises(ValueError, match="budget_s"):
        RetryPolicy(budget_s=-1)
