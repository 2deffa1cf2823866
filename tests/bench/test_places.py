"""The benchmark's one-run-at-a-time lock, on the real Postgres."""

from __future__ import annotations

import pytest

from bench.places import AnotherRun, one_run_at_a_time

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_a_second_run_is_refused_while_the_first_holds_the_services(
    postgres_dsn: str,
) -> None:
    """Two runs write under the same fixed names (``bench_all``, ``bench_log``), so the second
    one stops at once, naming the holder; once the first ends, a run may start again."""
    async with one_run_at_a_time(postgres_dsn):
        with pytest.raises(AnotherRun, match=r"the Postgres backend of pid \d+ holds"):
            async with one_run_at_a_time(postgres_dsn):
                pytest.fail("the second run got the lock")
    async with one_run_at_a_time(postgres_dsn):
        pass
