"""Freshness under a steady append load: the time from an append's commit to the new document
version being visible in each read model, while one runner (``projectionist run``, every
lane at its default strategy) follows the head.

Writers append new orders at a fixed schedule (``rate`` events/s, each event due at its own
time, spread over 16 concurrent writers that own a share of the streams each): one event per
transaction while the server keeps up, the events already due together when it does not (the
JSON gives events per transaction); the commit time is taken when the commit returns.
Pollers read each store directly every ``POLL`` seconds for the
versions still awaited, and an event counts as visible at the moment the poll that first saw
its version (or a later one) was sent:

* order_summary, order_detail: the version column of the lane's Postgres table;
* order_cache: the version hash the sink's script updates with each document (Redis);
* order_search: a search on the read alias (``version=True``): searchable, i.e. refreshed.

order_analytics (DuckDB) uses the batch strategy: it flushes hourly by design, so it has no
freshness to measure in a minute.

A first, quiet phase (``beside`` events/s, 5 by default) runs beside unrelated write
transactions in the same cluster (:func:`_unrelated_writes`: the application's other tables).
Each holds the event log's fence while it is open, and its end sends no NOTIFY: the phase
shows how soon the runner reads a commit that such a transaction hid (decision 0002's
amendment), which the busy phases hide behind their own stream of notifications.
"""

from __future__ import annotations

import resource
import statistics
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError
from redis.asyncio import Redis

from bench import cpu
from bench.history import BenchLog, orders_for
from bench.places import Services, Where
from bench.runner import children, start, stop
from core.events import NewEvent
from core.eventstore.postgres import PostgresEventStore
from projections.orders.history import make_catalog, order_history
from sinks.redis.keys import KeyLayout

__all__ = ("WATCHED", "measure")

POLL = 0.01
WRITERS = 16
GROUP = 10
UNRELATED_EVERY = 0.05
"""Seconds between the starts of two unrelated write transactions (20 per second)..."""
UNRELATED_HELD = 0.02
"""...and how long each stays open after its first write."""
WATCHED = ("order_summary", "order_detail", "order_cache", "order_search")
Fetch = Callable[[list[str]], Awaitable[dict[str, int]]]


@dataclass
class Watch:
    """Versions awaited per key in one read model, and the latencies seen so far."""

    lane: str
    fetch: Fetch
    pending: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def appended(self, key: str, version: int, committed: float) -> None:
        self.pending.setdefault(key, []).append((version, committed))

    def seen(self, key: str, version: int, at: float) -> None:
        waiting = self.pending.get(key)
        while waiting and waiting[0][0] <= version:
            self.latencies.append(at - waiting.pop(0)[1])
        if not waiting:
            self.pending.pop(key, None)

    async def poll(self, stop: anyio.Event) -> None:
        while not (stop.is_set() and not self.pending):
            keys = list(self.pending)
            for first in range(0, len(keys), 2_000):
                sent = time.perf_counter()
                for key, version in (await self.fetch(keys[first : first + 2_000])).items():
                    self.seen(key, version, sent)
            await anyio.sleep(POLL)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        missing = sum(len(v) for v in self.pending.values())
        if len(lat) < 2:
            return {"events": len(lat), "missing": missing}
        # inclusive: within the samples' range (the default extrapolates past the largest
        # sample when there are few, e.g. a p99 above the max in a --quick run)
        q = statistics.quantiles(lat, n=100, method="inclusive")
        return {
            "events": len(lat),
            "missing": missing,
            "p50_ms": round(q[49] * 1000, 1),
            "p95_ms": round(q[94] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1),
            "mean_ms": round(statistics.fmean(lat) * 1000, 1),
        }


class Readers:
    """One open client per store and a version fetch per watched lane."""

    async def open(self, services: Services, where: Where) -> None:
        self.pg = await asyncpg.create_pool(services.dsn, min_size=2, max_size=4)
        self.redis = Redis.from_url(services.redis_url)
        self.es = AsyncElasticsearch(services.elasticsearch_url, request_timeout=30)
        self.schema = where.read_models
        self.versions = KeyLayout(where.key_prefix("order_cache")).versions
        self.alias = f"{where.index_prefix}order_search"

    async def close(self) -> None:
        await self.pg.close()
        await self.redis.aclose()
        await self.es.close()

    def postgres(self, projection: str) -> Fetch:
        query = f'SELECT key, version FROM "{self.schema}"."{projection}_g1" WHERE key = ANY($1)'

        async def fetch(keys: list[str]) -> dict[str, int]:
            try:
                return {r[0]: r[1] for r in await self.pg.fetch(query, keys)}
            except asyncpg.UndefinedTableError:
                return {}  # the runner has not prepared it yet

        return fetch

    async def cache(self, keys: list[str]) -> dict[str, int]:
        found = await self.redis.hmget(self.versions, keys)
        return {k: int(v) for k, v in zip(keys, found, strict=True) if v is not None}

    async def search(self, keys: list[str]) -> dict[str, int]:
        try:
            answer = await self.es.search(
                index=self.alias, query={"ids": {"values": keys}}, size=len(keys), version=True,
                source=False,
            )  # fmt: skip
        except NotFoundError:
            return {}  # the runner has not prepared it yet
        except ApiError as exc:
            if exc.meta.status != 503:
                raise
            return {}  # its shard is not allocated yet
        return {h["_id"]: h["_version"] for h in answer["hits"]["hits"]}

    def watches(self, lanes: list[str]) -> list[Watch]:
        fetches: dict[str, Fetch] = {
            "order_summary": self.postgres("order_summary"),
            "order_detail": self.postgres("order_detail"),
            "order_cache": self.cache,
            "order_search": self.search,
        }
        return [Watch(lane, fetch) for lane, fetch in fetches.items() if lane in lanes]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of ``pid`` and of its children (the runners of a
    ``run --processes N`` supervisor); 0 for a process that has gone."""
    return sum(cpu.process_cpu_s(one) or 0.0 for one in (pid, *children(pid)))


async def _write(store: PostgresEventStore, watches: list[Watch], rate: float, seconds: float,
                 seed: int) -> dict[str, Any]:  # fmt: skip
    """Append ``rate * seconds`` single-event steps of new orders, each at its due time.

    ``WRITERS`` concurrent writers own a share of the streams each; a writer commits in one
    transaction every step of its share that is due when it gets to it (at most ``GROUP``), so
    the schedule holds when the server commits fewer transactions per second than the rate asks.
    A single step is appended with ``store.append`` (one statement that commits itself), as a
    command handler would; a group with ``store.transaction()``.
    """
    total = int(rate * seconds)
    steps = order_history(orders_for(total) + 50, make_catalog(), seed=seed)[:total]
    shares: list[list[tuple[float, str, list[NewEvent]]]] = [[] for _ in range(WRITERS)]
    t0 = time.perf_counter() + 0.2
    for n, (stream, new) in enumerate(steps):
        shares[zlib.crc32(stream.encode()) % WRITERS].append((t0 + n / rate, stream, new))
    commits: list[float] = []
    transactions = 0

    async def writer(share: list[tuple[float, str, list[NewEvent]]]) -> None:
        nonlocal transactions
        i = 0
        while i < len(share):
            await anyio.sleep(max(0.0, share[i][0] - time.perf_counter()))
            now = time.perf_counter()
            group = [share[i]]
            i += 1
            while i < len(share) and len(group) < GROUP and share[i][0] <= now:
                group.append(share[i])
                i += 1
            if len(group) == 1:  # one statement that commits itself: the usual append
                results = [await store.append(group[0][1], group[0][2])]
            else:
                async with store.transaction() as tx:
                    results = [await tx.append(stream, new) for _, stream, new in group]
            committed = time.perf_counter()
            transactions += 1
            for result in results:
                commits.append(committed)
                for watch in watches:
                    watch.appended(result.stream_id, result.next_expected_version, committed)

    async with anyio.create_task_group() as group:
        for share in shares:
            group.start_soon(writer, share)
    span = max(commits) - t0
    return {
        "target_rate": rate,
        "seconds": seconds,
        "events": len(commits),
        "writers": WRITERS,
        "transactions": transactions,
        "events_per_transaction": round(len(commits) / max(1, transactions), 2),
        "achieved_rate": round(len(commits) / span),
    }


async def _unrelated_writes(dsn: str, schema: str, done: list[int]) -> None:
    """Until cancelled: every :data:`UNRELATED_EVERY` seconds, a transaction that inserts a row
    into a table of its own and commits :data:`UNRELATED_HELD` seconds later (it has an id, so
    it holds the fence meanwhile, like any write to the application's own tables)."""
    conn = await asyncpg.connect(dsn)
    table = f'"{schema}".unrelated_writes'
    try:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (at timestamptz NOT NULL)")
        await conn.execute(f"TRUNCATE {table}")
        while True:
            due = time.perf_counter() + UNRELATED_EVERY
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (clock_timestamp())")
                await anyio.sleep(UNRELATED_HELD)
            done[0] += 1
            await anyio.sleep(max(0.0, due - time.perf_counter()))
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()


async def _phase(
    store: PostgresEventStore,
    watches: list[Watch],
    rate: float,
    seconds: float,
    runner: int,
    unrelated_writes_on: str | None = None,
) -> dict[str, Any]:
    """One load phase at ``rate``; with ``unrelated_writes_on`` (a DSN), beside
    :func:`_unrelated_writes` in that cluster."""
    stop_polling = anyio.Event()
    cpu_runner, usage = _cpu_seconds(runner), resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    fences: list[float] = []

    async def fence() -> None:
        while True:
            fences.append(await store.fence_age())
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as group:
        for watch in watches:
            group.start_soon(watch.poll, stop_polling)
        group.start_soon(fence)
        unrelated = [0]
        if unrelated_writes_on is not None:
            group.start_soon(_unrelated_writes, unrelated_writes_on, store.schema, unrelated)
        load = await _write(store, watches, rate, seconds, seed=900_000 + int(rate))
        if unrelated_writes_on is not None:
            load["unrelated_writes"] = {
                "transactions": unrelated[0],
                "every_ms": UNRELATED_EVERY * 1000,
                "held_ms": UNRELATED_HELD * 1000,
            }
        fences.sort()
        load["fence_age_ms"] = {
            "p50": round(fences[len(fences) // 2] * 1000, 1),
            "p99": round(fences[int(len(fences) * 0.99)] * 1000, 1),
            "max": round(fences[-1] * 1000, 1),
        }
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        load["runner_cpu_share"] = round((_cpu_seconds(runner) - cpu_runner) / wall, 2)
        harness = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
        load["harness_cpu_share"] = round(harness / wall, 2)
        with anyio.move_on_after(30):
            while any(w.pending for w in watches):  # noqa: ASYNC110 - waits on pollers
                await anyio.sleep(0.1)
        group.cancel_scope.cancel()
    return {**load, "lanes": {w.lane: w.summary() for w in watches}}


async def _ready(store: PostgresEventStore, watches: list[Watch], timeout: float) -> None:
    """Wait until a probe order appended now is visible in every watched read model."""
    stream = f"order-probe-{time.time_ns()}"
    new = NewEvent(event_type="OrderCreated", data={"customer_id": "c0"})
    result = await store.append(stream, [new])
    for watch in watches:
        watch.appended(stream, result.next_expected_version, time.perf_counter())
    stop_polling = anyio.Event()
    stop_polling.set()
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as group:
            for watch in watches:
                group.start_soon(watch.poll, stop_polling)


async def measure(
    log: BenchLog,
    services: Services,
    where: Where,
    env: dict[str, str],
    rates: list[float],
    seconds: float,
    lanes: list[str],
    processes: int = 1,
    beside: float = 5.0,
) -> dict[str, Any]:
    """Start a runner of ``lanes`` (``run --processes N`` when ``processes`` > 1), wait until
    it is at the head, then the quiet phase at ``beside`` events/s beside unrelated writes
    (none when 0) and one load phase per rate, watching the lanes of :data:`WATCHED` among
    them."""
    store = await PostgresEventStore.connect(log.dsn, schema=log.schema, pool_size=20)
    readers = Readers()
    await readers.open(services, where)
    stderr = where.log_file("freshness")
    proc = await start(
        env, ["run", *(["--processes", str(processes)] if processes > 1 else [])], stderr
    )
    phases: list[dict[str, Any]] = []

    async def alive() -> None:
        while proc.launcher.poll() is None:  # noqa: ASYNC110 - a child process, not an event
            await anyio.sleep(0.5)
        code = proc.launcher.returncode
        raise RuntimeError(f"the runner exited with {code}: see {stderr}")

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(alive)
            await _ready(store, readers.watches(lanes), timeout=1_800)
            await anyio.sleep(1.0)
            if beside > 0:
                phases.append(
                    await _phase(store, readers.watches(lanes), beside, seconds, proc.pid, log.dsn)
                )
            for rate in rates:
                phases.append(await _phase(store, readers.watches(lanes), rate, seconds, proc.pid))
            group.cancel_scope.cancel()
    finally:
        code = await stop(proc)
        await readers.close()
        await store.close()
    return {
        "poll_interval_ms": POLL * 1000,
        "processes": processes,
        "runner_exit": code,
        "not_measured": {"order_analytics": "batch lane: flushes hourly by design"},
        "phases": phases,
    }
