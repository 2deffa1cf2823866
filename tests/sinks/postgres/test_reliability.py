"""Real faults against the Postgres sink: a backend killed inside the batch's transaction or
its one statement, two runners on one lane, and connections lost while the commit is in flight
(landed or not), on both write paths: one statement (up to ``chunk_rows`` rows) and a
transaction of several statements (more rows)."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import anyio
import asyncpg
import pytest

from core.errors import AmbiguousCommit, StoreUnavailable
from core.lane import Lane
from core.operations import Batch, PutDocument
from core.position import Position
from core.retry import Backoff
from core.runner import Runner
from core.sink import Target
from core.strategy import LaneState, Strategy
from projections.orders import OrderSummary, PostgresCatalog
from projections.orders.demo import seed_catalog
from sinks.postgres import PostgresSink
from sinks.postgres.encode import Rows
from tests.sinks.postgres.conftest import PgEnv
from tests.sinks.postgres.support import (
    ONE_STATEMENT,
    CommitFaultProxy,
    load_history,
    snapshot,
    view_rows,
)
from tests.support.orders import expected_orders, make_catalog

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.reliability]

FAST = Backoff(base=0.01, cap=0.05)


PATHS = {"statement": {}, "transaction": {"chunk_rows": 1}}
"""Sink settings that send a batch of two or more rows down each write path."""


class KillsItsBackend(PostgresSink):
    """On the scheduled transactional writes (give it ``chunk_rows=1``), terminates its own
    backend after the data statements and before COMMIT: the process 'crashes' between write
    and checkpoint commit."""

    def __init__(self, *args: Any, crash_on: set[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_on = crash_on
        self.calls = 0

    async def _write_rows(self, conn: asyncpg.Connection, stm: Any, rows: Rows) -> None:
        self.calls += 1
        await super()._write_rows(conn, stm, rows)
        if self.calls in self.crash_on:
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")


class MeetsAtStart(PostgresSink):
    """Two of these read the checkpoint, then wait for each other: both start from it."""

    arrived = 0
    both: anyio.Event | None = None

    async def read_checkpoint(self, target: Target) -> Position | None:
        found = await super().read_checkpoint(target)
        cls = type(self)
        cls.arrived += 1
        assert cls.both is not None
        if cls.arrived == 2:
            cls.both.set()
        with anyio.fail_after(10):
            await cls.both.wait()
        return found


async def history(pg: PgEnv, orders: int) -> tuple[list[Any], dict[str, Any], PostgresCatalog]:
    catalog = make_catalog()
    await seed_catalog(pg.store.pool, catalog, pg.schema)
    events = await load_history(pg.store, orders, catalog)
    return events, expected_orders(events, catalog), PostgresCatalog(pg.store.pool, pg.schema)


def summary_lane(pg: PgEnv, sink: PostgresSink, lookups: PostgresCatalog, batch: int) -> Lane:
    lane = Lane(
        OrderSummary(),
        sink,
        pg.store,
        lookups=lookups,
        strategy=Strategy.immediate(max_batch=batch, catch_up_batch=batch),
        backoff=FAST,
    )
    return lane


async def assert_converged(pg: PgEnv, sink: PostgresSink, lane: Lane, expected: Any) -> None:
    assert lane.checkpoint == await pg.store.head()
    assert await sink.read_checkpoint(lane.target) == lane.checkpoint
    rows = await view_rows(sink.pool, pg.schema, "order_summary")
    assert {k: r["document"] for k, r in rows.items()} == expected


def _order(key: str, status: str = "pending") -> dict[str, Any]:
    return {
        "id": key,
        "customer_id": "c1",
        "status": status,
        "total_amount": "1.00",
        "item_count": 1,
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:00:00+00:00",
    }


TARGET = Target(lane="l", projection="order_summary", schema=OrderSummary.schema)
FIRST = Batch("l", (PutDocument("o1", 1, _order("o1")),), None, Position(1, 1))
SECOND = Batch(
    "l",
    (PutDocument("o1", 2, _order("o1", "paid")), PutDocument("o2", 1, _order("o2"))),
    Position(1, 1),
    Position(2, 1),
)
"""A lane's first batch, and the next one: two rows, one of them an update."""
SECOND_STORED = {"o1": (2, "paid"), "o2": (1, "pending")}


async def stored(sink: PostgresSink) -> dict[str, tuple[int, Any]]:
    found = await sink.load(TARGET, ["o1", "o2"])
    return {k: (v.version, v.document and v.document["status"]) for k, v in found.items()}


async def test_backend_killed_inside_the_transaction_writes_nothing(pg: PgEnv) -> None:
    settings = pg.settings.model_copy(update={"chunk_rows": 1})
    async with KillsItsBackend(settings, crash_on={1}) as sink:  # the first write is 1 row
        await sink.prepare(TARGET)
        await sink.write(TARGET, FIRST)
        before = await snapshot(sink.pool, pg.schema, "order_summary_g1")
        with pytest.raises(StoreUnavailable, match="terminating connection"):
            await sink.write(TARGET, SECOND)
        assert await snapshot(sink.pool, pg.schema, "order_summary_g1") == before
        assert await sink.read_checkpoint(TARGET) == Position(1, 1)
        await sink.write(TARGET, SECOND)  # the retry lands once
        assert await stored(sink) == SECOND_STORED


async def test_lane_converges_after_crashes_inside_transactions(pg: PgEnv) -> None:
    _, expected, lookups = await history(pg, 300)
    settings = pg.settings.model_copy(update={"chunk_rows": 1})
    async with KillsItsBackend(settings, crash_on={2, 3, 7}) as sink:
        lane = summary_lane(pg, sink, lookups, batch=100)
        with anyio.fail_after(60):
            await lane.run(until_caught_up=True)
        assert lane.stats.retries == 3
        await assert_converged(pg, sink, lane, expected)


async def test_two_runners_on_one_lane_exactly_one_advances(pg: PgEnv) -> None:
    _, expected, lookups = await history(pg, 300)
    MeetsAtStart.arrived, MeetsAtStart.both = 0, anyio.Event()
    async with MeetsAtStart(pg.settings) as one, MeetsAtStart(pg.settings) as two:
        lanes = [summary_lane(pg, s, lookups, batch=50) for s in (one, two)]
        assert lanes[0].name == lanes[1].name  # the same lane, twice
        runners = [Runner(pg.store, [lane]) for lane in lanes]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for runner in runners:
                    group.start_soon(partial(runner.run, until_caught_up=True))
        states = sorted(lane.state for lane in lanes)
        assert states == sorted([LaneState.HALTED, LaneState.IDLE])
        halted = next(lane for lane in lanes if lane.state is LaneState.HALTED)
        winner = next(lane for lane in lanes if lane.state is LaneState.IDLE)
        assert "another runner owns this lane" in (halted.stats.last_error or "")
        assert halted.stats.batches == 0  # it never advanced
        await assert_converged(pg, winner.sink, winner, expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("lost", ["before", "after"])
async def test_connection_lost_during_commit_is_resolved_by_the_checkpoint(
    pg: PgEnv, lost: Literal["before", "after"], path: str
) -> None:
    _, expected, lookups = await history(pg, 200)
    async with CommitFaultProxy(pg.dsn) as proxy, pg.sink(dsn=proxy.dsn, **PATHS[path]) as sink:
        lane = summary_lane(pg, sink, lookups, batch=150)
        if path == "statement":
            proxy.arm(lost, on=ONE_STATEMENT)
        else:
            proxy.arm(lost, skip=1)  # the first COMMIT is the lane's prepare: spare it
        with anyio.fail_after(60):
            await lane.run(until_caught_up=True)
        assert proxy.tripped == 1
        # Landed: the re-read checkpoint says so, nothing is retried. Lost: one retry.
        assert lane.stats.retries == (0 if lost == "after" else 1)
        await assert_converged(pg, sink, lane, expected)


@pytest.mark.parametrize("path", PATHS)
async def test_landed_commit_whose_answer_and_reread_are_lost_is_not_a_conflict(
    pg: PgEnv, path: str
) -> None:
    """The commit lands, its answer is lost, and the database refuses the lane's re-read: the
    lane retries the batch, and the sink recognises its own landed commit (not another
    runner's) instead of halting the lane with a checkpoint conflict."""
    _, expected, lookups = await history(pg, 200)
    async with CommitFaultProxy(pg.dsn) as proxy, pg.sink(dsn=proxy.dsn, **PATHS[path]) as sink:
        lane = summary_lane(pg, sink, lookups, batch=150)
        if path == "statement":
            proxy.arm("after", refuse=2, on=ONE_STATEMENT)
        else:
            proxy.arm("after", skip=1, refuse=2)
        with anyio.fail_after(60):
            await lane.run(until_caught_up=True)
        assert proxy.tripped == 1 and proxy.refused == 2
        assert lane.state is not LaneState.HALTED
        await assert_converged(pg, sink, lane, expected)


@pytest.mark.parametrize("path", PATHS)
async def test_lost_commit_answer_surfaces_as_ambiguous_commit(pg: PgEnv, path: str) -> None:
    async with CommitFaultProxy(pg.dsn) as proxy, pg.sink(dsn=proxy.dsn, **PATHS[path]) as sink:
        await sink.prepare(TARGET)
        for lost, landed in (("after", Position(2, 1)), ("before", Position(1, 1))):
            await sink.reset(TARGET)
            await sink.write(TARGET, FIRST)
            if path == "statement":
                proxy.arm(lost, on=ONE_STATEMENT)  # type: ignore[arg-type]
            else:
                proxy.arm(lost)  # type: ignore[arg-type]
            with pytest.raises(AmbiguousCommit, match="writing 2 documents"):
                await sink.write(TARGET, SECOND)
            assert proxy.tripped
            proxy.tripped = 0
            assert await sink.read_checkpoint(TARGET) == landed
            assert await stored(sink) == (
                SECOND_STORED if lost == "after" else {"o1": (1, "pending")}
            )
            await sink.write(TARGET, SECOND)  # the retry: a no-op if it landed, else lands
            assert await sink.read_checkpoint(TARGET) == Position(2, 1)


async def test_backend_killed_inside_the_one_statement_leaves_nothing(pg: PgEnv) -> None:
    """The one statement's compare-and-set has run and its upsert waits on a row another
    session holds: terminating its backend then keeps nothing of it (not even the moved
    checkpoint), the lane is told the commit is in doubt, and the retry lands once."""
    table = f'"{pg.schema}"."order_summary_g1"'
    async with pg.sink() as sink:
        await sink.prepare(TARGET)
        await sink.write(TARGET, FIRST)
        before = await snapshot(sink.pool, pg.schema, "order_summary_g1")
        holder = await asyncpg.connect(pg.dsn)
        try:
            async with holder.transaction():
                await holder.execute(f"SELECT 1 FROM {table} WHERE key = 'o1' FOR UPDATE")
                async with anyio.create_task_group() as group:

                    async def terminate_the_waiter() -> None:
                        with anyio.fail_after(10):
                            while not await holder.fetchval(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE wait_event_type = 'Lock' AND query LIKE 'WITH cas AS%'"
                            ):
                                await anyio.sleep(0.02)

                    group.start_soon(terminate_the_waiter)
                    with pytest.raises(AmbiguousCommit, match="terminating connection"):
                        await sink.write(TARGET, SECOND)
        finally:
            await holder.close()
        assert await snapshot(sink.pool, pg.schema, "order_summary_g1") == before
        assert await sink.read_checkpoint(TARGET) == Position(1, 1)
        await sink.write(TARGET, SECOND)  # the retry lands once
        assert await sink.read_checkpoint(TARGET) == Position(2, 1)
        assert await stored(sink) == SECOND_STORED
