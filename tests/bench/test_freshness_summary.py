"""bench.freshness.Watch: latencies summarised within the samples seen."""

from __future__ import annotations

from bench.freshness import Watch


async def _nothing(keys: list[str]) -> dict[str, int]:
    return {}


def test_percentiles_of_a_small_sample_stay_within_it() -> None:
    """25 events (a --quick phase at 5 events/s): the default quantile method extrapolated the
    p99 past the largest latency seen."""
    watch = Watch("order_summary", _nothing)
    for n in range(25):
        watch.appended(f"k{n}", 1, committed=0.0)
        watch.seen(f"k{n}", 1, at=0.010 + n * n / 1000)
    got = watch.summary()
    assert got["events"] == 25 and got["missing"] == 0
    assert got["p50_ms"] <= got["p95_ms"] <= got["p99_ms"] <= got["max_ms"] == 586.0


def test_versions_seen_settle_every_earlier_append_of_the_key() -> None:
    watch = Watch("order_cache", _nothing)
    watch.appended("a", 1, committed=1.0)
    watch.appended("a", 2, committed=1.5)
    watch.appended("b", 1, committed=1.0)
    watch.seen("a", 2, at=2.0)
    assert sorted(watch.latencies) == [0.5, 1.0]
    assert watch.summary()["missing"] == 1
