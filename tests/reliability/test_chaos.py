"""Kill -9 chaos: the runner, with a lane in each of the four stores plus a canary in each, is
killed with SIGKILL while writers append, then restarted. Half the runs are killed at a random
moment; the other half arm one kill point of :mod:`tests.reliability.faults` (mid-bulk, between
a write and its checkpoint, with the Redis script sent, inside a DuckDB flush, inside the
Postgres transaction or its one statement) and the runner kills itself there. After a final
catch-up every read model equals the independent oracle and every canary is exact."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from core.eventstore.postgres import PostgresEventStore
from core.position import START
from core.settings import Settings, SinkSettings, load_settings
from core.sink import Sink
from tests.reliability.canary import canary_divergence, events_missing
from tests.reliability.runs import projectionist
from tests.support.orders import expected_orders, make_catalog, order_history

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.elasticsearch,
    pytest.mark.duckdb,
]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).with_name("projectionist")
CANARY = "tests.reliability.canary:Canary"
STRATEGIES = {
    "postgres": 'strategy = { kind = "immediate", max_batch = 200, catch_up_batch = 400 }',
    "redis": 'strategy = { kind = "immediate", max_batch = 200, catch_up_batch = 400 }',
    "elasticsearch": 'strategy = { kind = "near_real_time", max_delay = 0.2, max_batch = 300 }',
    "duckdb": 'strategy = { kind = "batch", max_delay = 0.3, max_batch = 500 }',
}
LANES = (
    ("projections.orders:OrderSummary", "postgres"),
    ("projections.orders:OrderDetail", "postgres"),
    ("projections.orders:OrderCache", "redis"),
    ("projections.orders:OrderSearch", "elasticsearch"),
    ("projections.orders:OrderAnalytics", "duckdb"),
    (CANARY, "postgres"),
    (CANARY, "redis"),
    (CANARY, "elasticsearch"),
    (CANARY, "duckdb"),
)
TARGETED = (
    "elasticsearch.mid_bulk",
    "postgres.statement_sent",
    "postgres.before_commit",
    "redis.script_sent",
    "duckdb.mid_flush",
    "elasticsearch.before_checkpoint",
    "postgres.after_checkpoint",
    "duckdb.before_publish",
    "redis.after_write",
)
"""The kill point armed in each targeted run, in turn."""


def sink_options(namespace: str) -> dict[str, dict[str, Any]]:
    """Small Elasticsearch requests and DuckDB chunks, so one write spans several of them and
    a kill can land between two; Postgres batches of up to 50 rows are one statement, larger
    ones (catching up after a restart) a transaction of several."""
    return {
        "postgres": {"chunk_rows": 50},
        "redis": {},
        "elasticsearch": {"index_prefix": f"{namespace}_", "bulk_max_docs": 25},
        "duckdb": {"chunk_rows": 40},
    }


def _toml(value: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in value.items()) + " }"


def write_config(path: Path, namespace: str, duckdb_file: Path) -> None:
    lines = [
        f'event_store_schema = "{namespace}"',
        f'read_model_schema = "{namespace}_rm"',
        f'duckdb_path = "{duckdb_file}"',
    ]
    for sink, options in sink_options(namespace).items():
        lines += [f"[sinks.{sink}]", f'factory = "tests.reliability.faults:killing_{sink}"']
        if options:
            lines.append(f"options = {_toml(options)}")
    for projection, sink in LANES:
        lines += ["[[lanes]]", f'projection = "{projection}"', f'sink = "{sink}"', STRATEGIES[sink]]
        if sink == "redis":
            prefix = "canary" if projection == CANARY else "order"
            lines.append(f'options = {{ key_prefix = "{namespace}{prefix}" }}')
    path.write_text("\n".join(lines) + "\n")


async def writers(dsn: str, namespace: str, stop: anyio.Event, per_second: float) -> None:
    """Append order histories (200 orders each, long-lived streams) in slices, three writers
    at a time, until ``stop``; per-stream order is kept, transactions interleave."""
    from projections.orders.demo import seed_catalog

    store = await PostgresEventStore.connect(dsn, schema=namespace)
    catalog = make_catalog()
    await seed_catalog(store.pool, catalog)

    async def append(share: list[tuple[str, list[Any]]]) -> None:
        for stream, events in share:
            await store.append(stream, events)

    try:
        seed = 1000
        pending = order_history(200, catalog, seed=seed)
        step = max(1, round(per_second / 4))
        while not stop.is_set():
            if not pending:
                seed += 1
                pending = order_history(200, catalog, seed=seed)
            chunk, pending = pending[:step], pending[step:]
            async with anyio.create_task_group() as group:
                for w in range(3):
                    group.start_soon(
                        append, [a for a in chunk if zlib.crc32(a[0].encode()) % 3 == w]
                    )
            with anyio.move_on_after(0.25):
                await stop.wait()
    finally:
        await store.close()


async def stored_documents(settings: Settings, keys: list[str]) -> dict[str, dict[str, Any]]:
    """What each lane's store holds for ``keys``, read through the sink's own load."""
    from core.app import App

    out: dict[str, dict[str, Any]] = {}
    async with App(settings) as app:
        for lane in app.lanes:
            sink: Sink = lane.sink
            await sink.prepare(lane.target)
            found: dict[str, Any] = {}
            for i in range(0, len(keys), 500):
                loaded = await sink.load(lane.target, keys[i : i + 500])
                found.update({k: v.document for k, v in loaded.items() if v.document is not None})
            out[lane.name] = found
    return out


def runner_env(
    postgres_dsn: str, redis_url: str, elasticsearch_url: str, config: Path
) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PROJECTIONIST_", "CHAOS_"))},
        "PYTHONPATH": str(ROOT),
        "PROJECTIONIST_CONFIG": str(config),
        "PROJECTIONIST_POSTGRES_DSN": postgres_dsn,
        "PROJECTIONIST_REDIS_URL": redis_url,
        "PROJECTIONIST_ELASTICSEARCH_URL": elasticsearch_url,
    }


def test_kill_minus_nine_loses_and_doubles_nothing(
    postgres_dsn: str,
    redis_url: str,
    elasticsearch_url: str,
    duckdb_dir: Path,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    leave_no_trace: None,
) -> None:
    kills = 50 if request.config.getoption("--long") else 20
    rng = random.Random(namespace)
    config = tmp_path / "projectionist.toml"
    duckdb_file = duckdb_dir / f"{namespace}.duckdb"
    marks = tmp_path / "kills.txt"
    write_config(config, namespace, duckdb_file)
    monkeypatch.setenv("PROJECTIONIST_CONFIG", str(config))
    env = runner_env(postgres_dsn, redis_url, elasticsearch_url, config)
    logs = tmp_path / "runs"
    logs.mkdir()

    async def one_run(i: int) -> None:
        point = TARGETED[(i // 2) % len(TARGETED)] if i % 2 else None
        armed = {"CHAOS_KILL_AT": point or "", "CHAOS_KILL_P": "0.4", "CHAOS_MARKS": str(marks)}
        with (logs / f"{i:02d}.log").open("wb") as log:
            runner = await anyio.open_process(
                [str(BIN), "run"],
                env={**env, **armed} if point else env,
                cwd=tmp_path,
                stdout=log,
                stderr=log,
            )
            with anyio.move_on_after(8.0 if point else rng.uniform(1.0, 3.5)):
                await runner.wait()
            if runner.returncode is None:
                runner.send_signal(signal.SIGKILL)
            await runner.wait()
        assert runner.returncode == -signal.SIGKILL, (i, (logs / f"{i:02d}.log").read_text())

    async def scenario() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(writers, postgres_dsn, namespace, stop, 60.0)
            await anyio.sleep(0.5)
            for i in range(kills):
                await one_run(i)
            stop.set()

    begun = time.monotonic()
    anyio.run(scenario)
    chaos_seconds = time.monotonic() - begun
    final = projectionist(env, "run", "--until-caught-up", timeout=600, cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-2000:]
    targeted = Counter(marks.read_text().split()) if marks.exists() else Counter()

    async def compare() -> tuple[int, int, dict[str, int], dict[str, int]]:
        store = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
        try:
            events = [e async for e in store.iterate(START)]
        finally:
            await store.close()
        oracle = expected_orders(events, make_catalog())
        real = {
            name: SinkSettings(factory=f"sinks.factories:{name}", options=options)
            for name, options in sink_options(namespace).items()
        }
        settings = load_settings(
            postgres_dsn=postgres_dsn,
            redis_url=redis_url,
            elasticsearch_url=elasticsearch_url,
            duckdb_path=duckdb_file,
            event_store_schema=namespace,
            read_model_schema=f"{namespace}_rm",
            sinks=real,
        )
        stores = await stored_documents(settings, sorted(oracle))
        divergent: dict[str, int] = {}
        canaries: dict[str, int] = {}
        lost: set[str] = set()
        for lane, docs in stores.items():
            if lane.startswith("canary@"):
                canaries[lane] = canary_divergence(events, docs)
                lost |= events_missing(events, docs)
            else:
                divergent[lane] = sum(1 for k, doc in oracle.items() if docs.get(k) != doc) + len(
                    set(docs) - set(oracle)
                )
        orders = sum(1 for e in events if e.stream_id.startswith("order-"))
        return orders, len(lost), divergent, canaries

    total, lost, divergent, canaries = anyio.run(compare)
    exact = sum(1 for v in canaries.values() if v == 0)
    aimed = sum(targeted.values())
    print(
        f"\nchaos: events lost {lost} of {total} after {kills} kills ({aimed} targeted); "
        f"divergent documents {sum(divergent.values())} across 4 stores; "
        f"canaries exact in {exact} stores"
        f"\n  targeted kills: {dict(sorted(targeted.items()))}"
        f"\n  {chaos_seconds:.0f} s of chaos; the runner logs are in {logs}"
    )
    assert len(divergent) == 5 and len(canaries) == 4
    assert divergent == dict.fromkeys(divergent, 0)
    assert canaries == dict.fromkeys(canaries, 0)
    assert lost == 0
    assert aimed >= kills // 4, f"too few kills landed on their point: {targeted}"
