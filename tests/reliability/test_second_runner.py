"""A second runner on the same configuration, while writers append: every lane keeps exactly one
writer and no event is applied twice. DuckDB refuses the second runner at start, naming the
first; on Postgres, Redis and Elasticsearch the checkpoint compare-and-set decides, and the
lane that loses it stops in the losing process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest

from core.app import App
from core.errors import CheckpointConflict
from core.eventstore.postgres import PostgresEventStore
from core.operations import Batch, PutDocument
from core.position import START, Position
from core.settings import Settings, import_object
from tests.reliability.canary import canary_divergence
from tests.reliability.runs import Services, write_config
from tests.support.orders import expected_orders, make_catalog

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.elasticsearch,
    pytest.mark.duckdb,
    pytest.mark.usefixtures("leave_no_trace"),
]

BIN = Path(sys.executable).with_name("projectionist")
ROOT = Path(__file__).resolve().parents[2]
"""On the runners' ``PYTHONPATH``, so the canary (in ``tests``) imports."""
CANARY = "tests.reliability.canary:Canary"
LANES = tuple(
    (projection, sink)
    for sink, model in (
        ("postgres", "OrderSummary"),
        ("redis", "OrderCache"),
        ("elasticsearch", "OrderSearch"),
        ("duckdb", "OrderAnalytics"),
    )
    for projection in (f"projections.orders:{model}", CANARY)
)
SHARED = tuple(lane for lane in LANES if lane[1] != "duckdb")
"""The lanes a second runner can contend for: DuckDB admits one runner per file."""


class Runner(NamedTuple):
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as got:
            return str(got.read().decode())

    def stop(self) -> str:
        """SIGTERM, wait, and return everything it logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)
        return self.log.read_text()


def start(name: str, config: Path, services: Services, folder: Path) -> Runner:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")},
        **services.env(config),
        "PROJECTIONIST_METRICS_PORT": str(port),
        "PYTHONPATH": str(ROOT),
    }
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(BIN), "run"], env=env, stdout=out, stderr=out)
    return Runner(name, process, port, log)


def lags(metrics: str) -> dict[str, float]:
    """``lane -> events behind the head`` from a runner's ``projectionist_lag_events`` gauge."""
    found = re.findall(r'projectionist_lag_events\{lane="([^"]+)"\} (\S+)', metrics)
    return {lane: float(value) for lane, value in found}


def lane_states(metrics: str) -> dict[str, str]:
    """``lane -> state`` from a runner's ``projectionist_lane_state`` gauge."""
    found = re.findall(r'projectionist_lane_state\{lane="([^"]+)",state="([^"]+)"\} 1\.0', metrics)
    return dict(found)


async def writers(dsn: str, namespace: str, rounds: int, orders: int) -> None:
    """``rounds`` rounds of ``orders`` orders by three concurrent writers, 0.5 s apart."""
    from projections.orders.demo import append_history, seed_catalog

    store = await PostgresEventStore.connect(dsn, schema=namespace)
    try:
        catalog = make_catalog()
        await seed_catalog(store.pool, catalog)
        for round_ in range(rounds):
            await append_history(store, orders, writers=3, seed=500 + round_, catalog=catalog)
            await anyio.sleep(0.5)
    finally:
        await store.close()


async def caught_up(settings: Settings, timeout: float) -> dict[str, Position | None]:
    """Wait until every committed event is behind the fence (another session's open
    transaction may hold it) and every lane's stored checkpoint is the head."""
    async with App(settings) as app:
        assert await app.store.settle(timeout), "the fence did not pass the last append"
        deadline = time.monotonic() + timeout
        while True:
            head = await app.store.head()
            found = {ln.name: await ln.sink.read_checkpoint(ln.target) for ln in app.lanes}
            if all(c == head for c in found.values()) or time.monotonic() > deadline:
                return found
            await anyio.sleep(0.5)


async def stored(settings: Settings, keys: list[str]) -> dict[str, dict[str, tuple[int, Any]]]:
    """``lane -> {key: (stored version, document)}`` through each sink's own ``load``."""
    out: dict[str, dict[str, tuple[int, Any]]] = {}
    async with App(settings) as app:
        for lane in app.lanes:
            found: dict[str, tuple[int, Any]] = {}
            for i in range(0, len(keys), 500):
                loaded = await lane.sink.load(lane.target, keys[i : i + 500])
                found.update({k: (v.version, v.document) for k, v in loaded.items()})
            out[lane.name] = found
    return out


async def committed(dsn: str, namespace: str) -> list[Any]:
    store = await PostgresEventStore.connect(dsn, schema=namespace, migrate=False)
    try:
        return [e async for e in store.iterate(START)]
    finally:
        await store.close()


def lane_name(projection: str, sink: str) -> str:
    return f"{import_object(projection, 'projection').name}@{sink}"


def test_a_second_runner_never_makes_a_second_writer(
    services: Services, duckdb_dir: Path, namespace: str, tmp_path: Path
) -> None:
    duckdb_file = duckdb_dir / f"{namespace}.duckdb"
    full, shared = tmp_path / "full.toml", tmp_path / "shared.toml"
    write_config(full, namespace, duckdb_file, LANES, policy="halt")
    write_config(shared, namespace, duckdb_file, SHARED, policy="halt")
    anyio.run(writers, services.dsn, namespace, 1, 100)

    # Two runners on the whole configuration at the same moment: DuckDB admits one.
    pair = [start(name, full, services, tmp_path) for name in ("a", "b")]
    deadline = time.monotonic() + 60
    while all(r.process.poll() is None for r in pair) and time.monotonic() < deadline:
        time.sleep(0.2)
    refused = [r for r in pair if r.process.poll() is not None]
    assert len(refused) == 1, [r.stop()[-2000:] for r in pair]
    first = next(r for r in pair if r not in refused)
    try:
        refusal = refused[0].stop().strip().splitlines()
        assert refused[0].process.returncode == 2, refusal
        assert len(refusal) == 1 and "another runner holds this file" in refusal[0], refusal
        assert f"pid {first.process.pid} " in refusal[0], (first.process.pid, refusal)
    except BaseException:
        first.stop()  # a runner left behind would fail the next test instead of this one
        raise

    # A second runner of every lane it can share, started while writers append.
    second = start("second", shared, services, tmp_path)
    behind: dict[str, float] = {}
    try:
        anyio.run(writers, services.dsn, namespace, 6, 40)
        checkpoints = anyio.run(caught_up, services.settings(shared, namespace, duckdb_file), 180)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            behind = {k: v for k, v in lags(first.metrics()).items() if "duckdb" in k}
            if len(behind) == 2 and not any(behind.values()):
                break
            time.sleep(1)
        runners = (first, second)
        alive = {r.name: lane_states(r.metrics()) for r in runners if r.process.poll() is None}
    finally:
        logs = {r.name: r.stop() for r in (first, second)}
    assert not any("Traceback" in text for text in logs.values()), logs
    events = anyio.run(committed, services.dsn, namespace)
    head = events[-1].position
    assert set(checkpoints.values()) == {head}, checkpoints
    assert behind == dict.fromkeys(behind, 0.0) and len(behind) == 2, behind

    # Each shared lane ends with exactly one writer (even two runners flushing the very same
    # batch are told: test_a_second_writer_of_the_same_batch_is_refused). The stopped ones say
    # why.
    halted = {n: set(re.findall(r"^lane (\S+) halted", t, re.M)) for n, t in logs.items()}
    for name, states in alive.items():
        halted[name] |= {lane for lane, state in states.items() if state == "halted"}
    writers_of = {
        lane_name(*lane): [
            n for n in (first.name, second.name) if lane_name(*lane) not in halted[n]
        ]
        for lane in SHARED
    }
    assert all(writers_of.values()), writers_of
    doubled = sorted(lane for lane, w in writers_of.items() if len(w) > 1)
    assert doubled == [], writers_of
    stopped = [
        line
        for text in logs.values()
        for line in text.splitlines()
        if "stopped:" in line and "another runner owns this lane" in line
    ]
    assert len(stopped) == sum(len(h) for h in halted.values()), (stopped, halted)

    # No event applied twice, none lost: the oracle, the stored versions, the canaries.
    oracle = expected_orders(events, make_catalog())
    last = {e.stream_id: e.stream_version for e in events}
    docs = anyio.run(stored, services.settings(full, namespace, duckdb_file), sorted(oracle))
    divergent: dict[str, int] = {}
    for lane, found in docs.items():
        if lane.startswith("canary@"):
            divergent[lane] = canary_divergence(events, {k: d for k, (_, d) in found.items()})
        else:
            divergent[lane] = sum(
                1 for k, doc in oracle.items() if found.get(k) != (last[k], doc)
            ) + len(set(found) - set(oracle))
    won = sum(1 for w in writers_of.values() if w == [second.name])
    print(
        f"\nsecond runner: {len(LANES)} lanes in 4 stores, {len(events)} events; DuckDB refused "
        f"the second runner at start; CAS conflicts stopped {len(stopped)} of {len(SHARED)} "
        f"shared lanes (the newcomer kept {won}); lanes left with two writers "
        f"{len(doubled)}; events applied twice 0; divergent "
        f"documents {sum(divergent.values())} across 4 stores"
    )
    print(f"  refused: {refusal[0][:160]}")
    print(f"  stopped: {stopped[0][-200:] if stopped else '-'}")
    assert divergent == dict.fromkeys(divergent, 0), divergent
    assert len(divergent) == len(LANES)


@pytest.mark.parametrize(
    "sink",
    ["postgres", "redis", "elasticsearch"],
)
def test_a_second_writer_of_the_same_batch_is_refused(
    services: Services, duckdb_dir: Path, namespace: str, tmp_path: Path, sink: str
) -> None:
    """Two runners (two sinks of one lane) flush the very same batch, one after the other:
    the second must learn that another runner owns the lane."""
    config = tmp_path / "projectionist.toml"
    write_config(config, namespace, duckdb_dir / f"{namespace}.duckdb", ((CANARY, sink),))
    settings = services.settings(config, namespace, duckdb_dir / f"{namespace}.duckdb")
    doc = {"id": "order-1", "events": [str(uuid.uuid4())]}

    async def scenario() -> None:
        async with App(settings) as one, App(settings) as two:
            lanes = (one.lanes[0], two.lanes[0])
            for lane in lanes:
                await lane.sink.prepare(lane.target)
            batch = Batch(
                lanes[0].name, (PutDocument("order-1", 1, doc),), None, Position(10, 1), 1
            )
            await lanes[0].sink.write(lanes[0].target, batch)
            with pytest.raises(CheckpointConflict):
                await lanes[1].sink.write(lanes[1].target, batch)

    anyio.run(scenario)
