"""Poison events across stores: a handler that raises on one event, an Elasticsearch mapping
conflict and a document larger than the cluster accepts. Under ``park`` the lane records a
dead letter, holds the stream's later events behind it and goes on (``retry`` after the fix
and ``skip`` release the stream); under ``halt`` only that lane stops, exactly before the
event, while the lanes of the other stores reach the head. While a lane is halted and a store
is down, the runner's log stays bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import anyio
import pytest

from core.deadletters import DeadLetter
from core.deadletters_pg import PostgresDeadLetters
from core.errors import StoreUnavailable
from core.events import EventEnvelope, NewEvent
from core.eventstore.postgres import PostgresEventStore
from core.lane import Lane
from core.position import START
from core.projection import Projection
from core.retry import Backoff
from core.runner import Runner
from core.settings import import_object
from core.sink import Sink, Target
from core.strategy import ErrorPolicy, LaneState, Strategy
from projections.orders import OrderCache, OrderSearch, OrderSummary, PostgresCatalog
from sinks.elasticsearch import ElasticsearchSinkSettings
from tests.reliability.stack import (
    Stack,
    append_orders,
    load_all,
    stack_fixture,  # noqa: F401  (the ``stack`` fixture)
    tcp_proxy,
)
from tests.sinks.postgres.support import load_history
from tests.support.orders import expected_orders, order_history

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.reliability,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.elasticsearch,
    pytest.mark.usefixtures("leave_no_trace_async"),
]

BIN = Path(sys.executable).with_name("projectionist")
ROOT = Path(__file__).resolve().parents[2]
POISON_ENV = "POISONED_EVENTS"
"""Comma-separated event ids the poisoned projections raise on (for a runner process)."""


# -- test projections --------------------------------------------------------------------------


class Poisoned(Projection):
    """Raises on the events in ``poison``, like a handler with a bug that one event exposes."""

    poison: ClassVar[frozenset[UUID]] = frozenset(
        UUID(i) for i in os.environ.get(POISON_ENV, "").split(",") if i
    )

    def handler_for(self, event_type: str) -> Callable[..., Any] | None:
        handler = super().handler_for(event_type)
        if handler is None:
            return None

        def guarded(doc: Any, event: Any, ctx: Any) -> Any:
            if ctx.envelope.event_id in type(self).poison:
                raise RuntimeError(f"poisoned on purpose: {ctx.envelope.event_id}")
            return handler(doc, event, ctx)

        return guarded


class PoisonedSummary(Poisoned, OrderSummary):
    """The order summary (Postgres) with a poisoned handler."""


class PoisonedCache(Poisoned, OrderCache):
    """The order cache (Redis) with a poisoned handler."""


class RefusedSearch(OrderSearch):
    """The search model, except that completing a chosen order makes a document the cluster
    refuses: text in ``item_count`` (a long in the mapping) or a body larger than the bound."""

    conflict: ClassVar[frozenset[str]] = frozenset()
    oversize: ClassVar[frozenset[str]] = frozenset()
    pad = ElasticsearchSinkSettings().max_document_bytes + 1024

    def handler_for(self, event_type: str) -> Callable[..., Any] | None:
        handler = super().handler_for(event_type)
        if handler is None or event_type != "OrderCompleted":
            return handler

        def refused(doc: Any, event: Any, ctx: Any) -> Any:
            out = handler(doc, event, ctx)
            if ctx.envelope.stream_id in self.conflict:
                out = {**out, "item_count": "many"}
            if ctx.envelope.stream_id in self.oversize:
                out = {**out, "padding": "x" * self.pad}
            return out

        return refused


# -- helpers -----------------------------------------------------------------------------------


class Lanes:
    """Lanes built by hand on the sinks of a :class:`Stack` (so test projections plug in)."""

    def __init__(self, stack: Stack, store: PostgresEventStore, exits: AsyncExitStack) -> None:
        self.stack = stack
        self.store = store
        self.exits = exits
        self.settings = stack.direct([])
        self.sinks: dict[str, Sink] = {}
        self.dead_letters = PostgresDeadLetters(store.pool, stack.namespace)

    async def lane(self, projection: Projection, sink: str, policy: ErrorPolicy) -> Lane:
        if sink not in self.sinks:
            config = self.settings.sinks[sink]
            factory = import_object(config.factory, "factory")
            self.sinks[sink] = factory(sink, self.settings, dict(config.options))
            await self.exits.enter_async_context(self.sinks[sink])
        options = {"key_prefix": f"{self.stack.namespace}order"} if sink == "redis" else {}
        return Lane(
            projection,
            self.sinks[sink],
            self.store,
            strategy=Strategy.immediate(max_batch=60, catch_up_batch=60),
            policy=policy,
            lookups=PostgresCatalog(self.store.pool, "catalog"),
            dead_letters=self.dead_letters,
            options=options,
            backoff=Backoff(base=0.02, cap=0.5),
        )


async def documents(lane: Lane, keys: list[str]) -> dict[str, dict[str, Any]]:
    stored = await load_all(lane.sink, lane.target, keys)
    return {k: v.document for k, v in stored.items() if v.document is not None}


async def run(lanes: list[Lane], store: PostgresEventStore) -> None:
    with anyio.fail_after(120):
        await Runner(store, lanes).run(until_caught_up=True)


def open_orders(events: list[EventEnvelope], count: int) -> list[str]:
    """Streams with at least four events whose order is still open (more may come)."""
    last: dict[str, EventEnvelope] = {}
    sizes: dict[str, int] = {}
    for e in events:
        last[e.stream_id] = e
        sizes[e.stream_id] = sizes.get(e.stream_id, 0) + 1
    found = [
        s
        for s, e in sorted(last.items())
        if sizes[s] >= 4 and e.event_type not in ("OrderCompleted", "OrderCancelled")
    ]
    assert len(found) >= count
    return found[:count]


def event_of(events: list[EventEnvelope], stream: str, version: int) -> EventEnvelope:
    return next(e for e in events if e.stream_id == stream and e.stream_version == version)


def assert_parked_behind(letters: list[DeadLetter], poison: EventEnvelope, last: int) -> None:
    """The poison's letter carries the error; every later event of its stream is held behind
    it, up to version ``last``."""
    mine = sorted(
        (d for d in letters if d.stream_id == poison.stream_id), key=lambda d: d.stream_version
    )
    assert mine[0].event_id == poison.event_id and mine[0].blocked_by is None
    assert "poisoned on purpose" in mine[0].error
    assert [d.stream_version for d in mine] == list(range(poison.stream_version, last + 1))
    assert all(d.blocked_by == poison.event_id for d in mine[1:])


async def poll(check: Callable[[], Awaitable[Any]], timeout: float) -> None:
    """Until ``check()`` answers something true (it may fail while a store is down)."""
    with anyio.fail_after(timeout):
        while True:
            try:
                if await check():
                    return
            except StoreUnavailable:
                pass
            await anyio.sleep(0.2)


def item_added() -> NewEvent:
    return NewEvent(
        event_type="OrderItemAdded",
        data={"product_id": "p1", "quantity": 1, "unit_price": "2.50"},
    )


async def settled(store: PostgresEventStore) -> list[EventEnvelope]:
    """Every event, once what was appended is readable."""
    await store.settle(30)
    return [e async for e in store.iterate(START)]


async def set_status(letters: PostgresDeadLetters, lane: str, ids: list[UUID], status: str) -> None:
    assert await letters.set_status(lane, ids, status) == len(ids)


# -- handlers that raise -----------------------------------------------------------------------


async def test_park_holds_the_poisoned_stream_per_lane_and_retry_or_skip_releases_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stack.open_store()
    try:
        async with AsyncExitStack() as exits:
            events = await load_history(store, 150, stack.catalog)
            retried, skipped, other = open_orders(events, 3)
            poisons = {s: event_of(events, s, 2) for s in (retried, skipped)}
            last = {s: max(e.stream_version for e in events if e.stream_id == s) for s in poisons}
            monkeypatch.setattr(Poisoned, "poison", frozenset(p.event_id for p in poisons.values()))
            lanes = Lanes(stack, store, exits)
            park = ErrorPolicy.PARK
            poisoned = [
                await lanes.lane(PoisonedSummary(), "postgres", park),
                await lanes.lane(PoisonedCache(), "redis", park),
            ]
            search = await lanes.lane(OrderSearch(), "elasticsearch", park)
            await run([*poisoned, search], store)

            head = await store.head()
            oracle = expected_orders(events, stack.catalog)
            keys = sorted(oracle)
            held = {
                s: expected_orders([e for e in events if e.stream_id == s][:1], stack.catalog)[s]
                for s in poisons
            }
            for lane in [*poisoned, search]:
                assert lane.state is LaneState.IDLE and lane.checkpoint == head
            assert await documents(search, keys) == oracle
            assert await lanes.dead_letters.find(search.name) == []
            parked = 0
            for lane in poisoned:
                assert await documents(lane, keys) == {**oracle, **held}
                letters = await lanes.dead_letters.find(lane.name)
                for stream, poison in poisons.items():
                    assert_parked_behind(letters, poison, last[stream])
                assert lane.stats.parked == len(letters)
                parked = len(letters)

            # After a restart, a new event of a parked stream is held behind the poison;
            # another stream's new event is applied.
            for stream in (retried, other):
                await store.append(stream, [item_added()])
            events = await settled(store)
            restarted = [
                await lanes.lane(PoisonedSummary(), "postgres", park),
                await lanes.lane(PoisonedCache(), "redis", park),
            ]
            await run(restarted, store)
            for lane in restarted:
                letters = await lanes.dead_letters.find(lane.name)
                assert len(letters) == parked + 1
                assert_parked_behind(letters, poisons[retried], last[retried] + 1)
                docs = await documents(lane, [other])
                assert docs[other] == expected_orders(events, stack.catalog)[other]

            # The fix ships: one stream's letters are retried; the other's poison is skipped
            # and the events held behind it retried. The next event of each stream releases it.
            monkeypatch.setattr(Poisoned, "poison", frozenset())
            skip = poisons[skipped].event_id
            for lane in poisoned:
                letters = await lanes.dead_letters.find(lane.name)
                mine = [d.event_id for d in letters if d.event_id != skip]
                await set_status(lanes.dead_letters, lane.name, mine, "retry")
                await set_status(lanes.dead_letters, lane.name, [skip], "skipped")
            for stream in poisons:
                await store.append(stream, [item_added()])
            events = await settled(store)
            restarted = [
                await lanes.lane(PoisonedSummary(), "postgres", park),
                await lanes.lane(PoisonedCache(), "redis", park),
            ]
            search = await lanes.lane(OrderSearch(), "elasticsearch", park)
            await run([*restarted, search], store)

            oracle = expected_orders(events, stack.catalog)
            without = expected_orders([e for e in events if e.event_id != skip], stack.catalog)
            assert await documents(search, keys) == oracle
            for lane in restarted:
                assert await documents(lane, keys) == without
                assert await lanes.dead_letters.find(lane.name) == []
                statuses = [d.status for d in await lanes.dead_letters.find(lane.name, "any")]
                assert sorted(statuses) == ["resolved"] * parked + ["skipped"]
            gaps = sum(lane.stats.gaps_repaired for lane in restarted)
    finally:
        await store.close()
        await stack.drop_schemas()
    print(
        f"\npoison park: {parked} events parked per poisoned lane (2 streams held, "
        f"{len(oracle) - 2} others current) in Postgres and Redis, Elasticsearch untouched; "
        f"a new event of a held stream parked behind after a restart; after the fix, retry "
        f"and skip applied the {parked + 1} parked events in each lane ({gaps} read back "
        "from the log), 0 parked left"
    )


async def test_halt_stops_only_its_lane_exactly_before_the_poison(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stack.open_store()
    try:
        async with AsyncExitStack() as exits:
            events = await load_history(store, 150, stack.catalog)
            middle = len(events) // 2
            index = next(i for i in range(middle, len(events)) if events[i].stream_version > 1)
            poison = events[index]
            monkeypatch.setattr(Poisoned, "poison", frozenset({poison.event_id}))
            lanes = Lanes(stack, store, exits)
            halt = ErrorPolicy.HALT
            summary = await lanes.lane(PoisonedSummary(), "postgres", halt)
            others = [
                await lanes.lane(OrderCache(), "redis", halt),
                await lanes.lane(OrderSearch(), "elasticsearch", halt),
            ]
            await run([summary, *others], store)

            head = await store.head()
            oracle = expected_orders(events, stack.catalog)
            keys = sorted(oracle)
            assert summary.state is LaneState.HALTED and summary.halted_at == poison.position
            assert "poisoned on purpose" in (summary.stats.last_error or "")
            stored = await summary.sink.read_checkpoint(summary.target)
            assert stored == summary.checkpoint == events[index - 1].position
            before = expected_orders(events[:index], stack.catalog)
            assert await documents(summary, keys) == before
            for lane in others:
                assert lane.state is LaneState.IDLE and lane.checkpoint == head
                assert await documents(lane, keys) == oracle

            monkeypatch.setattr(Poisoned, "poison", frozenset())
            resumed = await lanes.lane(PoisonedSummary(), "postgres", halt)
            await run([resumed], store)
            assert resumed.checkpoint == head and resumed.stats.events == len(events) - index
            assert await documents(resumed, keys) == oracle
    finally:
        await store.close()
        await stack.drop_schemas()
    print(
        f"\npoison halt: Postgres lane stopped at event {index + 1} of {len(events)} with its "
        f"checkpoint on the event before; Redis and Elasticsearch lanes at the head; after the "
        f"fix it resumed there ({len(events) - index} events)"
    )


# -- documents the store refuses ---------------------------------------------------------------


def byte_size(text: str) -> int:
    """``100mb`` -> bytes (Elasticsearch's size units)."""
    units = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
    number = text.rstrip("bkmgBKMG")
    return int(float(number) * units[text[len(number) :].lower() or "b"])


async def test_mapping_conflict_and_oversize_document_are_parked_while_other_stores_take_them(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stack.open_store()
    try:
        async with AsyncExitStack() as exits:
            events = await load_history(store, 150, stack.catalog)
            oracle = expected_orders(events, stack.catalog)
            completed = sorted(k for k, d in oracle.items() if d["status"] == "completed")
            conflict, oversize = frozenset(completed[3:5]), frozenset(completed[10:11])
            monkeypatch.setattr(RefusedSearch, "conflict", conflict)
            monkeypatch.setattr(RefusedSearch, "oversize", oversize)
            lanes = Lanes(stack, store, exits)
            search = await lanes.lane(RefusedSearch(), "elasticsearch", ErrorPolicy.PARK)
            others = [
                await lanes.lane(OrderSummary(), "postgres", ErrorPolicy.HALT),
                await lanes.lane(OrderCache(), "redis", ErrorPolicy.HALT),
            ]
            with anyio.fail_after(120):
                await run([search, *others], store)

            head = await store.head()
            keys = sorted(oracle)
            for lane in [search, *others]:
                assert lane.state is LaneState.IDLE and lane.checkpoint == head
            for lane in others:
                assert await documents(lane, keys) == oracle
            assert await search.sink.read_checkpoint(search.target) == head
            stored = await load_all(search.sink, search.target, keys)
            refused = conflict | oversize
            healthy = {k: v.document for k, v in stored.items() if k not in refused}
            assert healthy == {k: d for k, d in oracle.items() if k not in refused}
            letters = await lanes.dead_letters.find(search.name)
            assert {d.stream_id for d in letters} == refused
            for key in refused:
                mine = sorted(
                    (d for d in letters if d.stream_id == key), key=lambda d: d.stream_version
                )
                assert mine[0].blocked_by is None
                assert ("item_count" if key in conflict else "too large") in mine[0].error
                assert all(d.blocked_by == mine[0].event_id for d in mine[1:])
                stream = [e for e in events if e.stream_id == key]
                assert mine[-1].stream_version == len(stream)
                found = stored.get(key)
                version = found.version if found else 0
                assert version == mine[0].stream_version - 1
                if found is not None:
                    prefix = [e for e in stream if e.stream_version <= version]
                    assert found.document == expected_orders(prefix, stack.catalog)[key]
            # the sink's bound is no larger than what the cluster accepts in one request
            cluster = await search.sink.cluster.body(  # type: ignore[attr-defined]
                "reading the HTTP limit",
                lambda c: c.cluster.get_settings(
                    include_defaults=True, filter_path="**.max_content_length"
                ),
            )
            limit = next(
                section["http"]["max_content_length"]
                for section in cluster.values()
                if "http" in section
            )
            assert ElasticsearchSinkSettings().max_document_bytes <= byte_size(limit)
    finally:
        await store.close()
        await stack.drop_schemas()
    print(
        f"\npoison documents: {len(conflict)} mapping conflicts and {len(oversize)} document of "
        f"{RefusedSearch.pad >> 20} MiB (cluster limit {limit}) parked in Elasticsearch with "
        f"{len(letters)} events; {len(healthy)} neighbours indexed; Postgres and Redis took all "
        f"{len(oracle)}"
    )


# -- log volume while stalled ------------------------------------------------------------------

STALL = 20.0
"""Seconds one lane stays halted and another's store unreachable while the runner logs."""


def runner_config(path: Path, stack: Stack, elasticsearch_url: str) -> None:
    """A runner with a poisoned Postgres lane (halt), a Redis lane and an Elasticsearch lane
    reached through ``elasticsearch_url``."""
    ns = stack.namespace
    lines = [
        f'event_store_schema = "{ns}"',
        f'read_model_schema = "{ns}_rm"',
        "[sinks.postgres]",
        'factory = "sinks.factories:postgres"',
        "[sinks.redis]",
        'factory = "sinks.factories:redis"',
        "[sinks.elasticsearch]",
        'factory = "sinks.factories:elasticsearch"',
        f'options = {{ url = "{elasticsearch_url}", index_prefix = "{ns}_" }}',
        "[[lanes]]",
        'projection = "tests.reliability.test_poison:PoisonedSummary"',
        'sink = "postgres"',
        'policy = "halt"',
        "[[lanes]]",
        'projection = "projections.orders:OrderCache"',
        'sink = "redis"',
        f'options = {{ key_prefix = "{ns}order" }}',
        "[[lanes]]",
        'projection = "projections.orders:OrderSearch"',
        'sink = "elasticsearch"',
        'strategy = { kind = "near_real_time", max_delay = 0.2, max_batch = 300 }',
    ]
    path.write_text("\n".join(lines) + "\n")


def log_lines(path: Path) -> list[tuple[datetime, str, str]]:
    """``(time, logger, message)`` per line the runner wrote to stderr (JSON off a terminal;
    a line that is not JSON, such as a traceback, takes the time of the line before)."""
    out: list[tuple[datetime, str, str]] = []
    when = datetime.min.replace(tzinfo=UTC)
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            out.append((when, "?", line))
            continue
        when = datetime.fromisoformat(record["ts"])
        out.append((when, record["logger"], record["message"]))
    return out


async def test_log_volume_stays_bounded_while_a_lane_is_halted_and_a_store_is_down(
    stack: Stack, tmp_path: Path
) -> None:
    steps = order_history(600, stack.catalog, seed=77)
    poison = next(e for _, events in steps[:40] for e in events if e.event_type == "OrderItemAdded")
    config, log = tmp_path / "projectionist.toml", tmp_path / "runner.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")}
    env |= {
        "PROJECTIONIST_CONFIG": str(config),
        "PROJECTIONIST_POSTGRES_DSN": stack.postgres_dsn,
        "PROJECTIONIST_REDIS_URL": stack.redis_url,
        "PROJECTIONIST_ELASTICSEARCH_URL": stack.elasticsearch_url,
        "PYTHONPATH": str(ROOT),
        POISON_ENV: str(poison.event_id),
    }
    store = await stack.open_store()
    search = Target(lane="order_search@elasticsearch", projection="order_search")
    summary = Target(lane="order_summary@postgres", projection="order_summary")
    stop, written = anyio.Event(), anyio.Event()
    try:
        async with AsyncExitStack() as exits, anyio.create_task_group() as group:
            proxy = tcp_proxy(stack.elasticsearch_url, 9200)
            await proxy.start(group)
            runner_config(config, stack, proxy.url)
            sinks = Lanes(stack, store, exits)
            es = await sinks.lane(OrderSearch(), "elasticsearch", ErrorPolicy.HALT)
            pg = await sinks.lane(OrderSummary(), "postgres", ErrorPolicy.HALT)
            with log.open("wb") as stderr:
                runner = await anyio.open_process(
                    [str(BIN), "run"], env=env, stdout=subprocess.DEVNULL, stderr=stderr
                )

            async def writers() -> None:
                await append_orders(store, steps, stop, rate=60.0)
                written.set()

            group.start_soon(writers)
            try:
                await poll(lambda: es.sink.read_checkpoint(search), timeout=60)
                await anyio.sleep(2.0)
                cut = datetime.now(UTC)
                proxy.cut()
                await anyio.sleep(STALL)
                restored = datetime.now(UTC)
                await proxy.start(group)
                head = await store.head()

                async def caught_up() -> bool:
                    found = await es.sink.read_checkpoint(search)
                    return found is not None and head is not None and found >= head

                await poll(caught_up, timeout=60)
                halted_at = await pg.sink.read_checkpoint(summary)
            finally:
                stop.set()
                runner.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    await runner.wait()
            await written.wait()
            assert halted_at is not None and head is not None and halted_at < head
            group.cancel_scope.cancel()
    finally:
        await store.close()
        await stack.drop_schemas()

    lines = log_lines(log)
    stalled = [(t, who, m) for t, who, m in lines if cut <= t <= restored]
    per_minute = len(stalled) * 60 / STALL
    loggers = Counter(who for _, who, _ in stalled)
    print(
        f"\nstalled {STALL:.0f} s: {len(stalled)} log lines ({per_minute:.0f} per minute) with "
        f"one lane halted and one store down; by logger {dict(loggers)}; {len(lines)} lines "
        "in the whole run"
    )
    assert any("halted at" in m for _, _, m in lines)
    # Each lane and the status publisher says its first failure, then at most once a minute
    # (core.retry.LogThrottle); retries are spaced by the capped backoff, drivers stay quiet.
    throttled = 3 + 1
    assert len(stalled) <= throttled * (1 + int(STALL // 60)), stalled
