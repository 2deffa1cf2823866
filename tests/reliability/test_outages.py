"""Store outages across the four stores, while writers append: one runner (``core.app.App``,
in process) with the order read models in Postgres, Redis, Elasticsearch and DuckDB. Each
store is reached through a TCP proxy (the event log stays direct), so every fault is a real
network fault on the shared services: Elasticsearch unreachable, Redis connections cut and
refused (a restart as the client sees it), the Postgres read-model backends terminated with
``pg_terminate_backend``, and connections dropped while a flush's commit is in flight (one
that landed, one that did not). For each: the affected lane retries and converges, the other lanes
keep their lag, a stored checkpoint is never ahead of its stored data (sampled during the
fault), and after the run every read model equals the independent oracle."""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from time import monotonic
from typing import Any

import anyio
import asyncpg
import pytest
from anyio.abc import TaskGroup

from core.app import App
from core.events import EventEnvelope
from core.eventstore.postgres import PostgresEventStore
from core.lane import Lane
from core.position import START, Position
from core.settings import Settings
from tests.reliability.stack import (
    LANES,
    Stack,
    append_orders,
    load_all,
    stack_fixture,  # noqa: F401  (the ``stack`` fixture)
    tcp_proxy,
)
from tests.sinks.elasticsearch.proxy import TcpProxy
from tests.sinks.postgres.support import ONE_STATEMENT, CommitFaultProxy
from tests.support.orders import Catalog, expected_orders, order_history

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.reliability,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.elasticsearch,
    pytest.mark.duckdb,
    pytest.mark.usefixtures("leave_no_trace_async"),
]

OUTAGE = 5.0
"""Seconds a store stays unreachable."""
# -- watching the lanes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    events: dict[str, int]
    """Per lane: readable events after its durable checkpoint."""
    seconds: dict[str, float]
    """Per lane: how long the oldest of those has been readable (0 at the head)."""


class Monitor:
    """Tails the log every 0.1 s and samples each lane's lag behind it, in events and in
    seconds. Seconds are counted from when an event became readable, so a burst released by
    another session's long transaction (the fence) is not charged to the lanes."""

    def __init__(self, store: PostgresEventStore, lanes: list[Lane]) -> None:
        self.store = store
        self.lanes = lanes
        self.events: list[EventEnvelope] = []
        self.positions: list[Position] = []
        self.seen: list[float] = []
        self.samples: list[Sample] = []
        self._lock = anyio.Lock()

    async def catch_up(self) -> Position:
        """Read what became readable since the last call; returns the head."""
        async with self._lock:
            while True:
                after = self.positions[-1] if self.positions else START
                found = await self.store.read(after, 2000)
                self.events.extend(found)
                self.positions.extend(e.position for e in found)
                self.seen.extend([monotonic()] * len(found))
                if len(found) < 2000:
                    return self.positions[-1] if self.positions else START

    async def run(self) -> None:
        while True:
            await self.catch_up()
            now = monotonic()
            events: dict[str, int] = {}
            seconds: dict[str, float] = {}
            for lane in self.lanes:
                first = bisect.bisect_right(self.positions, lane.checkpoint or START)
                events[lane.name] = len(self.positions) - first
                seconds[lane.name] = now - self.seen[first] if first < len(self.seen) else 0.0
            self.samples.append(Sample(now, events, seconds))
            await anyio.sleep(0.1)

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at < end]

    def by_stream(self) -> dict[str, list[EventEnvelope]]:
        out: dict[str, list[EventEnvelope]] = {}
        for e in sorted(self.events, key=lambda e: (e.stream_id, e.stream_version)):
            out.setdefault(e.stream_id, []).append(e)
        return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0


async def wait_until(check: Callable[[], bool], timeout: float) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.02)


# -- what the stores hold --------------------------------------------------------------------


async def audit(lane: Lane, monitor: Monitor, catalog: Catalog) -> tuple[int, list[str]]:
    """Read the lane's stored checkpoint, then its stored documents: every event at or before
    the checkpoint must be stored (a document's version is its stream's version), and each
    document must be the oracle's fold of its stream up to its version. Returns the documents
    checked and what is wrong (the checkpoint is read first, so data landing meanwhile cannot
    invent a fault)."""
    checkpoint = await lane.sink.read_checkpoint(lane.target)
    assert checkpoint is not None, f"{lane.name} has no checkpoint yet"
    await monitor.catch_up()
    stored = await load_all(lane.sink, lane.target, sorted(monitor.by_stream()))
    await monitor.catch_up()
    wrong: list[str] = []
    for key, events in monitor.by_stream().items():
        covered = max((e.stream_version for e in events if e.position <= checkpoint), default=0)
        found = stored.get(key)
        version = found.version if found else 0
        if version < covered:
            wrong.append(f"{lane.name} {key}: v{version} stored, checkpoint covers v{covered}")
        elif found is not None and found.document is not None:
            expected = expected_orders(events[:version], catalog)
            if found.document != expected.get(key):
                wrong.append(f"{lane.name} {key}: stored v{version} is not the oracle's fold")
    return len(stored), wrong


async def divergence(settings: Settings, oracle: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Per lane: documents that differ from ``oracle`` (missing, different or extra), read
    through each sink's own ``load`` (the runner must be stopped: DuckDB has one writer)."""
    out: dict[str, int] = {}
    async with App(settings) as app:
        for lane in app.lanes:
            await lane.sink.prepare(lane.target)
            stored = await load_all(lane.sink, lane.target, sorted(oracle))
            docs = {k: v.document for k, v in stored.items() if v.document is not None}
            differ = sum(1 for k, doc in oracle.items() if docs.get(k) != doc)
            out[lane.name] = differ + len(set(docs) - set(oracle))
    return out


# -- the faults ------------------------------------------------------------------------------


@dataclass
class Faults:
    """The proxies in front of the read-model stores, and how to break each for real."""

    group: TaskGroup
    postgres: CommitFaultProxy
    redis: TcpProxy
    elasticsearch: TcpProxy
    stack: Stack

    async def _cut(self, proxy: TcpProxy) -> str:
        proxy.cut()
        await anyio.sleep(OUTAGE)
        await proxy.start(self.group)
        return "connections dropped, then refused"

    async def elasticsearch_unreachable(self) -> str:
        return await self._cut(self.elasticsearch)

    async def redis_restarted(self) -> str:
        return await self._cut(self.redis)

    async def postgres_backends_killed(self) -> str:
        """``pg_terminate_backend`` on every read-model connection of the runner, every 0.2 s."""
        killed = 0
        deadline = monotonic() + OUTAGE
        conn = await asyncpg.connect(self.stack.postgres_dsn)
        try:
            while monotonic() < deadline:
                killed += await conn.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = $1",
                    self.stack.application_name,
                )
                await anyio.sleep(0.2)
        finally:
            await conn.close()
        assert killed > 0, "no read-model backend was there to kill"
        return f"{killed} backends terminated"

    async def postgres_commits_lost(self) -> str:
        """Drop the connection at each commit in turn (the lanes' flushes at the head: the
        sink's one self-committing statement), alternately once it reached the server (it
        landed; two reconnections are refused after) and before (it did not)."""
        deadline = monotonic() + OUTAGE
        landed = lost = 0
        while monotonic() < deadline:
            after = landed == lost
            tripped = self.postgres.tripped
            self.postgres.arm(
                "after" if after else "before", refuse=2 if after else 0, on=ONE_STATEMENT
            )
            await wait_until(lambda: self.postgres.tripped > tripped, timeout=15)
            landed, lost = (landed + 1, lost) if after else (landed, lost + 1)
        return f"{landed + lost} commits lost in flight, {landed} of them landed"


FAULTS: dict[str, tuple[Callable[[Faults], Awaitable[str]], tuple[str, ...]]] = {
    "elasticsearch": (Faults.elasticsearch_unreachable, ("order_search@elasticsearch",)),
    "redis": (Faults.redis_restarted, ("order_cache@redis",)),
    "postgres-killed": (
        Faults.postgres_backends_killed,
        ("order_summary@postgres", "order_detail@postgres"),
    ),
    "postgres-commit": (
        Faults.postgres_commits_lost,
        ("order_summary@postgres", "order_detail@postgres"),
    ),
}
"""Fault name -> (injector, the lanes it affects)."""


# -- the test --------------------------------------------------------------------------------


@dataclass
class Outage:
    """What one run measured (times are ``monotonic()``)."""

    monitor: Monitor
    lanes: dict[str, Lane]
    before: float
    start: float
    end: float
    converged: float
    detail: str
    retries: int
    audited: int
    wrong: list[str]


async def outage(stack: Stack, store: PostgresEventStore, fault: str) -> Outage:
    """Run every lane through the proxies while writers append; break one store mid-run,
    audit its lanes during the fault and after, then stop the writers and let every lane end
    at the head."""
    inject, affected = FAULTS[fault]
    steps = order_history(1_000, stack.catalog, seed=zlib.crc32(fault.encode()) % 1000)
    stop, written, injected = anyio.Event(), anyio.Event(), anyio.Event()
    detail: list[str] = []
    async with AsyncExitStack() as exits, anyio.create_task_group() as group:
        pg = await exits.enter_async_context(CommitFaultProxy(stack.postgres_dsn))
        redis, es = tcp_proxy(stack.redis_url, 6379), tcp_proxy(stack.elasticsearch_url, 9200)
        await redis.start(group)
        await es.start(group)
        via = {"postgres": pg.dsn, "redis": f"redis://127.0.0.1:{redis.port}/0"}
        settings = stack.settings(stack.lanes(), via | {"elasticsearch": es.url})
        app = await exits.enter_async_context(App(settings))
        by_name = {lane.name: lane for lane in app.lanes}
        stores = tuple({name.split("@")[1] for name in affected})
        direct = await exits.enter_async_context(App(stack.direct(stack.lanes(stores))))
        monitor = Monitor(store, app.lanes)

        async def writers() -> None:
            await append_orders(store, steps, stop)
            written.set()

        async def injecting() -> None:
            detail.append(await inject(Faults(group, pg, redis, es, stack)))
            injected.set()

        async def audits() -> tuple[int, list[str]]:
            found = [await audit(lane, monitor, stack.catalog) for lane in direct.lanes]
            return sum(n for n, _ in found), [w for _, wrong in found for w in wrong]

        group.start_soon(app.runner.run)
        group.start_soon(monitor.run)
        group.start_soon(writers)
        await wait_until(lambda: all(lane.checkpoint for lane in app.lanes), timeout=60)
        await anyio.sleep(1.0)
        before = monotonic()
        await anyio.sleep(3.0)
        retries = sum(by_name[n].stats.retries for n in affected)
        start = monotonic()
        group.start_soon(injecting)
        await anyio.sleep(OUTAGE / 2)
        audited, wrong = await audits()
        await injected.wait()
        end = monotonic()
        head = await monitor.catch_up()
        await wait_until(
            lambda: all(head <= (by_name[n].checkpoint or START) for n in affected), 60
        )
        converged = monotonic() - end
        checked, more = await audits()
        await anyio.sleep(1.0)
        stop.set()
        await written.wait()
        await store.settle(30)
        final = await monitor.catch_up()
        await wait_until(lambda: all(lane.checkpoint == final for lane in app.lanes), timeout=60)
        group.cancel_scope.cancel()
    retried = sum(by_name[n].stats.retries for n in affected) - retries
    return Outage(
        monitor,
        by_name,
        before,
        start,
        end,
        converged,
        detail[0],
        retried,
        audited + checked,
        wrong + more,
    )


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_outage_converges_while_other_lanes_keep_their_lag(stack: Stack, fault: str) -> None:
    store = await stack.open_store()
    try:
        run = await outage(stack, store, fault)
        oracle = expected_orders(run.monitor.events, stack.catalog)
        divergent = await divergence(stack.direct(stack.lanes()), oracle)
    finally:
        await store.close()
        await stack.drop_schemas()

    affected = FAULTS[fault][1]
    before = run.monitor.window(run.before, run.start)
    during = run.monitor.window(run.start, run.end)
    lag = {  # p99 lag in seconds and in events, before and during the fault
        name: [
            p99([getattr(s, kind)[name] for s in window])
            for kind in ("seconds", "events")
            for window in (before, during)
        ]
        for name in run.lanes
        if name not in affected
    }
    peak = max(s.seconds[name] for s in during for name in affected)
    each = ", ".join(
        f"{n} {s0:.2f}/{s1:.2f} s {e0:.0f}/{e1:.0f} ev" for n, (s0, s1, e0, e1) in lag.items()
    )
    print(
        f"\noutage {fault} {run.end - run.start:.1f} s ({run.detail}): converged in "
        f"{run.converged:.1f} s; other lanes' lag p99 before/during "
        f"{max(v[0] for v in lag.values()):.2f}/{max(v[1] for v in lag.values()):.2f} s "
        f"({each}); affected lag peak {peak:.1f} s after {run.retries} retries; checkpoints "
        f"ahead of their data {len(run.wrong)} (audited twice, {run.audited} documents); "
        f"divergent documents {sum(divergent.values())} of {len(oracle)} in {len(divergent)} lanes"
    )
    assert run.wrong == [] and run.audited > 0
    assert divergent == dict.fromkeys(divergent, 0) and len(divergent) == len(LANES)
    assert run.retries > 0
    if fault in ("elasticsearch", "redis"):
        assert peak >= OUTAGE / 2, "the affected lane was not held up: no fault"
    for name, (seconds_before, seconds_during, _, _) in lag.items():
        # a lane held back by the fault would fall about OUTAGE seconds behind
        assert seconds_during <= seconds_before + 1.0, (name, seconds_before, seconds_during)
