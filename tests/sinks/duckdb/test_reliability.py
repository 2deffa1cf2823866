"""Real faults against real files: a runner process SIGKILLed during its flushes, and a
dashboard process reading in a loop while the runner flushes every half second."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from core.events import EventEnvelope
from core.eventstore.postgres import PostgresEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.position import Position
from projections.orders import OrderAnalytics
from sinks.duckdb import Layout, open_current
from tests.sinks.duckdb.conftest import SinkFactory
from tests.sinks.duckdb.support import (
    append_history,
    batch_strategy,
    checkpoint_of,
    everything,
    oracle_facts,
    stored_documents,
    stored_facts,
)
from tests.support.orders import Catalog, expected_orders, order_history

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.duckdb,
    pytest.mark.postgres,
    pytest.mark.reliability,
]

ROOT = Path(__file__).resolve().parents[3]
LANE = "order_analytics@duckdb"
KILL_ORDERS = 1_200


def lane_command(dsn: str, schema: str, path: Path, *extra: str) -> list[str]:
    module = "tests.sinks.duckdb.lane_process"
    return [sys.executable, "-m", module, dsn, schema, str(path), "0.05", "100", *extra]


def check_matches_checkpoint(
    con: duckdb.DuckDBPyConnection, events: list[EventEnvelope], catalog: Catalog
) -> Position | None:
    """The file's documents and facts are the oracle of exactly the events up to its checkpoint."""
    checkpoint = checkpoint_of(con, LANE)
    upto = [e for e in events if checkpoint is not None and e.position <= checkpoint]
    expected = expected_orders(upto, catalog)
    stored = stored_documents(con, "order_analytics_g1")
    wrong = sorted(k for k in stored.keys() | expected.keys() if stored.get(k) != expected.get(k))
    assert not wrong, (checkpoint, len(wrong), wrong[:5])
    assert stored_facts(con) == oracle_facts(expected)
    return checkpoint


async def all_visible(store: PostgresEventStore, count: int) -> list[EventEnvelope]:
    """Every event once all ``count`` are behind the visibility fence (another session's open
    transaction on the shared server can hold the newest back for a while)."""
    with anyio.fail_after(60):
        while len(events := await everything(store)) < count:
            await anyio.sleep(0.2)
    return events


async def read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 1 << 16)).decode()


async def test_sigkill_during_flushes_leaves_data_matching_the_checkpoint(
    pg_store: PostgresEventStore,
    postgres_dsn: str,
    namespace: str,
    db_path: Path,
    catalog: Catalog,
) -> None:
    history = order_history(KILL_ORDERS, catalog)
    await append_history(pg_store, history)
    events = await all_visible(pg_store, sum(len(new) for _, new in history))
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    layout = Layout(db_path)
    checkpoints: list[Position | None] = []
    mid_write = 0
    errors = db_path.with_name("lane.stderr")
    for round_ in range(6):
        with errors.open("ab") as stderr:
            proc: Process = await anyio.open_process(
                lane_command(postgres_dsn, namespace, db_path), cwd=ROOT, stderr=stderr
            )
        async with proc:
            assert proc.stdout is not None
            lines = BufferedByteReceiveStream(proc.stdout)
            try:
                with anyio.fail_after(60):
                    first = await read_line(lines)
                    assert first == "ready", errors.read_text()[-3000:]
                    # the first round dies in its first write; later ones commit some first
                    for _ in range(1 if round_ == 0 else rng.randint(2, 6)):
                        while await read_line(lines) != "write-begin":
                            pass
                    await anyio.sleep(rng.uniform(0.0, 0.03))
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            rest = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
                while True:
                    rest += await lines.receive()
            if b"write-end" not in rest:
                mid_write += 1  # killed before the sink's write returned
        assert proc.returncode == -signal.SIGKILL
        con = duckdb.connect(str(db_path), read_only=True)
        try:
            checkpoints.append(check_matches_checkpoint(con, events, catalog))
        finally:
            con.close()
        snapshot = open_current(db_path)
        try:
            published = check_matches_checkpoint(snapshot, events, catalog)
            assert (published or Position(0, 0)) <= (checkpoints[-1] or Position(0, 0))
        finally:
            snapshot.close()
    progress = [c or Position(0, 0) for c in checkpoints]
    assert all(a < b for a, b in itertools.pairwise(progress)), (seed, checkpoints)
    assert mid_write >= 2, f"seed={seed}: only {mid_write} of 6 kills landed inside a write"
    assert checkpoints[-1] is not None and checkpoints[-1] < events[-1].position, seed

    done = await anyio.run_process(
        lane_command(postgres_dsn, namespace, db_path, "--until-caught-up"), cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert layout.leftovers() == []
    con = open_current(db_path)
    try:
        assert check_matches_checkpoint(con, events, catalog) == events[-1].position
        assert len(stored_documents(con, "order_analytics_g1")) == KILL_ORDERS
    finally:
        con.close()
    print(f"seed={seed} kills inside a write: {mid_write}/6")


async def append_while(store: PostgresEventStore, catalog: Catalog, stop: anyio.Event) -> int:
    """Append new orders (about 300 events a second) until ``stop``; returns events appended."""
    history = order_history(20_000, catalog, seed=23)
    done = 0
    while not stop.is_set() and done < len(history):
        await append_history(store, history[done : done + 30], per_transaction=30)
        done += 30
        await anyio.sleep(0.1)
    return done


@pytest.mark.parametrize(
    "seconds", [pytest.param(20, id="20s"), pytest.param(60, id="60s", marks=pytest.mark.slow)]
)
async def test_dashboard_reads_whole_flushes_while_the_runner_flushes(
    pg_store: PostgresEventStore,
    make_sink: SinkFactory,
    db_path: Path,
    catalog: Catalog,
    seconds: int,
) -> None:
    await append_history(pg_store, order_history(500, catalog))
    sink = make_sink()
    lane = Lane(
        OrderAnalytics(),
        sink,
        pg_store,
        lookups=StaticLookups(catalog.lookups()),
        strategy=batch_strategy(0.5, 5_000),
        idle_poll=0.1,
    )
    stop = anyio.Event()
    summary: dict[str, Any] = {}

    async def dashboard() -> None:
        with anyio.fail_after(30):
            while lane.checkpoint is None:
                await anyio.sleep(0.05)
        command = [sys.executable, "-m", "tests.sinks.duckdb.dashboard_process"]
        result = await anyio.run_process([*command, str(db_path), str(seconds), LANE], cwd=ROOT)
        summary.update(json.loads(result.stdout))
        stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.run)
        tg.start_soon(dashboard)
        appended = await append_while(pg_store, catalog, stop)
        tg.cancel_scope.cancel()

    events = await everything(pg_store)
    reads, order = summary["reads"], summary["checkpoint_order"]
    print(
        f"{seconds}s: {reads} reads, {len(order)} distinct flushes seen, "
        f"{lane.stats.batches} flushes, {appended} events appended, read latency "
        f"median {summary['median_seconds']:.4f}s p99 {summary['p99_seconds']:.4f}s "
        f"max {summary['max_seconds']:.4f}s; publish max {sink.publishing.max_seconds:.4f}s; "
        f"flush seconds (last 100) max {max(lane.stats.batch_seconds):.3f}s"
    )
    assert summary["failure_count"] == 0, summary["failures"]
    assert summary["broken"] == []
    assert reads >= seconds * 5
    assert len(order) >= seconds // 4, "the reader should have seen many flushes"
    positions = [Position(*c) for c in order if c is not None]
    assert positions == sorted(positions), "a reader never goes back to an older flush"
    assert summary["max_seconds"] < 2.0
    for key, seen in summary["by_checkpoint"].items():
        checkpoint = Position.parse(key)
        expected = expected_orders([e for e in events if e.position <= checkpoint], catalog)
        assert seen["orders"] == len(expected), key
        facts = oracle_facts(expected)
        assert Decimal(seen["total"]) == sum(row[5] for row in facts.orders.values()), key
