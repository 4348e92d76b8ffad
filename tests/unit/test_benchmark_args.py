"""The pure helpers of the cost-curve and serving benchmarks: sizes, percentiles,
slopes, concurrency levels (no timing here; the benchmarks are never run by tests)."""

from __future__ import annotations

import pytest

from benchmarks.bench_serving import concurrency_levels, requests_at
from benchmarks.cost_curves import loglog_slope, parse_size, parse_sizes, percentile


@pytest.mark.parametrize(
    ("text", "size"),
    [("200k", 200_000), ("1M", 1_000_000), ("5m", 5_000_000), ("1_000", 1000), ("1.5M", 1_500_000)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "0", "-1M", "1.5", "abc"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_sizes_keeps_order():
    assert parse_sizes("1M, 200k,") == [1_000_000, 200_000]


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7


def test_loglog_slope():
    assert loglog_slope([1e5, 1e6], [10, 100]) == pytest.approx(1.0)
    assert loglog_slope([1, 2, 4], [3, 3, 3]) == pytest.approx(0.0)
    assert loglog_slope([1e6], [5]) is None


def test_concurrency_levels():
    assert concurrency_levels("1,4,16") == [1, 4, 16]
    with pytest.raises(ValueError):
        concurrency_levels("0,4")


def test_requests_at_keeps_the_old_pair():
    # concurrency 1 and 16 get what they got before the --concurrency option
    assert requests_at(1, 1000) == 250
    assert requests_at(16, 1000) == 1000
    assert requests_at(1, 200) == 100
    assert requests_at(8, 1000) == 500
    assert requests_at(64, 1000) == 1000
