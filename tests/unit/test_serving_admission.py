"""Admission of recommendation requests (``serving.admission``): run, wait newest
first, or shed. A fake clock: no test depends on how fast the machine is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from serving.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(test: Callable[[Admission, Clock], object], **limits: float) -> None:
    """Runs ``test`` on an event loop (waiters are futures of the running loop)."""
    clock = Clock()
    settings = {"workers": 1, "max_waiting": 2, "max_wait_s": 1.0, **limits}

    async def main() -> None:
        test(Admission(clock=clock, **settings), clock)  # type: ignore[arg-type]

    asyncio.run(main())


def test_runs_up_to_workers_then_sheds_without_a_queue() -> None:
    def test(a: Admission, _: Clock) -> None:
        assert [a.admit(), a.admit(), a.admit()] == [True, True, False]
        assert a.in_flight == 2
        a.release()
        assert a.admit() is True

    run(test, workers=2, max_waiting=0)


def test_a_freed_worker_goes_to_the_newest_waiter() -> None:
    def test(a: Admission, _: Clock) -> None:
        assert a.admit() is True
        older, newer = a.admit(), a.admit()
        assert isinstance(older, asyncio.Future) and isinstance(newer, asyncio.Future)
        assert a.in_flight == 3
        a.release()
        assert newer.result() is True and not older.done()
        a.release()
        assert older.result() is True
        a.release()
        assert a.in_flight == 0 and a.running == 0

    run(test)


def test_a_full_queue_sheds_its_oldest_waiter() -> None:
    def test(a: Admission, _: Clock) -> None:
        a.admit()
        first, second, third = a.admit(), a.admit(), a.admit()
        assert first.result() is False  # type: ignore[union-attr]
        assert not second.done() and not third.done()  # type: ignore[union-attr]
        assert a.in_flight == 3

    run(test)


def test_a_waiter_past_the_longest_wait_is_shed() -> None:
    def test(a: Admission, clock: Clock) -> None:
        a.admit()
        old = a.admit()
        assert a._timer is not None  # sheds it on time even if nothing else happens
        clock.now += 0.6
        young = a.admit()
        clock.now += 0.4  # old has waited 1.0 s, young 0.4 s
        a.expire()
        assert old.result() is False and not young.done()  # type: ignore[union-attr]
        a.release()
        assert young.result() is True  # type: ignore[union-attr]

    run(test)


def test_a_cancelled_waiter_is_skipped() -> None:
    def test(a: Admission, _: Clock) -> None:
        a.admit()
        older, newer = a.admit(), a.admit()
        newer.cancel()  # type: ignore[union-attr]
        a.release()
        assert older.result() is True  # type: ignore[union-attr]
        assert a.running == 1

    run(test)


def test_no_wait_allowed_means_no_queue() -> None:
    def test(a: Admission, _: Clock) -> None:
        assert [a.admit(), a.admit()] == [True, False]

    run(test, max_wait_s=0.0)


@pytest.mark.parametrize(
    "limits", [{"workers": 0}, {"max_waiting": -1}, {"max_wait_s": -0.5}], ids=str
)
def test_bad_limits_are_refused(limits) -> None:
    with pytest.raises(ValueError, match="bad limits"):
        Admission(**{"workers": 1, "max_waiting": 0, "max_wait_s": 0.0, **limits})
