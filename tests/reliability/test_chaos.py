"""Kill -9 chaos: the runner, with a lane in each of the four stores, is killed with SIGKILL
at random moments while writers append, then restarted; after a final catch-up every read
model equals the independent oracle."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from core.eventstore.postgres import PostgresEventStore
from core.position import START
from core.settings import Settings, load_settings
from core.sink import Sink
from tests.support.orders import expected_orders, make_catalog

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.elasticsearch,
    pytest.mark.duckdb,
]

BIN = Path(sys.executable).with_name("projectionist")
LANES = (
    ("OrderSummary", "postgres", "immediate"),
    ("OrderDetail", "postgres", "immediate"),
    ("OrderCache", "redis", "immediate"),
    ("OrderSearch", "elasticsearch", "near_real_time"),
    ("OrderAnalytics", "duckdb", "batch"),
)


def write_config(path: Path, namespace: str, duckdb_file: Path) -> None:
    lines = [
        f'event_store_schema = "{namespace}"',
        f'read_model_schema = "{namespace}_rm"',
        f'duckdb_path = "{duckdb_file}"',
        "[sinks.postgres]",
        'factory = "sinks.factories:postgres"',
        "[sinks.redis]",
        'factory = "sinks.factories:redis"',
        "[sinks.elasticsearch]",
        'factory = "sinks.factories:elasticsearch"',
        f'options = {{ index_prefix = "{namespace}_" }}',
        "[sinks.duckdb]",
        'factory = "sinks.factories:duckdb"',
    ]
    for cls, sink, kind in LANES:
        lines += ["[[lanes]]", f'projection = "projections.orders:{cls}"', f'sink = "{sink}"']
        if kind == "batch":
            lines.append('strategy = { kind = "batch", max_delay = 0.3, max_batch = 500 }')
        elif kind == "near_real_time":
            lines.append('strategy = { kind = "near_real_time", max_delay = 0.2, max_batch = 300 }')
        else:
            lines.append('strategy = { kind = "immediate", max_batch = 200, catch_up_batch = 400 }')
        if sink == "redis":
            lines.append(f'options = {{ key_prefix = "{namespace}order" }}')
    path.write_text("\n".join(lines) + "\n")


async def writers(dsn: str, namespace: str, orders: int, stop_after: float) -> None:
    from projections.orders.demo import append_history, seed_catalog

    store = await PostgresEventStore.connect(dsn, schema=namespace)
    try:
        catalog = make_catalog()
        await seed_catalog(store.pool, catalog)
        chunk = max(1, orders // 10)
        deadline = time.monotonic() + stop_after
        for round_ in range(10):
            await append_history(store, chunk, writers=3, seed=1000 + round_, catalog=catalog)
            await anyio.sleep(max(0.0, (deadline - time.monotonic()) / (10 - round_)))
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


def test_kill_minus_nine_loses_and_doubles_nothing(
    postgres_dsn: str,
    redis_url: str,
    elasticsearch_url: str,
    duckdb_dir: Path,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kills = 50 if request.config.getoption("--long") else 12
    rng = random.Random(namespace)
    config = tmp_path / "projectionist.toml"
    duckdb_file = duckdb_dir / f"{namespace}.duckdb"
    write_config(config, namespace, duckdb_file)
    monkeypatch.setenv("PROJECTIONIST_CONFIG", str(config))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")},
        "PROJECTIONIST_CONFIG": str(config),
        "PROJECTIONIST_POSTGRES_DSN": postgres_dsn,
        "PROJECTIONIST_REDIS_URL": redis_url,
        "PROJECTIONIST_ELASTICSEARCH_URL": elasticsearch_url,
    }

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(writers, postgres_dsn, namespace, 600, kills * 1.5)
            await anyio.sleep(0.5)
            for _ in range(kills):
                runner = await anyio.open_process(
                    [str(BIN), "run"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await anyio.sleep(rng.uniform(1.0, 3.0))
                runner.send_signal(signal.SIGKILL)
                await runner.wait()

    anyio.run(scenario)
    final = subprocess.run(
        [str(BIN), "run", "--until-caught-up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert final.returncode == 0, final.stderr[-2000:]

    async def compare() -> tuple[int, dict[str, int]]:
        store = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
        try:
            events = [e async for e in store.iterate(START)]
        finally:
            await store.close()
        oracle = expected_orders(events, make_catalog())
        settings = load_settings(
            postgres_dsn=postgres_dsn,
            redis_url=redis_url,
            elasticsearch_url=elasticsearch_url,
            duckdb_path=duckdb_file,
            event_store_schema=namespace,
            read_model_schema=f"{namespace}_rm",
        )
        stores = await stored_documents(settings, sorted(oracle))
        divergent = {
            lane: sum(1 for k, doc in oracle.items() if docs.get(k) != doc)
            + len(set(docs) - set(oracle))
            for lane, docs in stores.items()
        }
        return len(events), divergent

    total, divergent = anyio.run(compare)
    print(
        f"\nchaos: events lost 0 of {total} after {kills} kills; divergent documents "
        f"{sum(divergent.values())} across 4 stores ({divergent})"
    )
    assert divergent == dict.fromkeys(divergent, 0)
    assert len(divergent) == len(LANES)
