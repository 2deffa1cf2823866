"""``projectionist run --processes 2`` against the real stores: the lanes split over two runner
processes (a DuckDB file's lanes in one), a runner killed with -9 stops the group and the
restart loses, doubles and reorders nothing; no runner outlives its supervisor, however the
supervisor ends; and commands that need no sink work beside a running DuckDB lane."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import asyncpg
import pytest

from core.settings import Settings
from core.status import StatusReport
from tests.reliability.canary import canary_divergence
from tests.reliability.runs import (
    ALL_STORES,
    BIN,
    ROOT,
    Services,
    projectionist,
    write_config,
)
from tests.reliability.test_second_runner import LANES, committed, lane_name, stored, writers
from tests.support.orders import expected_orders, make_catalog

pytestmark = [*ALL_STORES, pytest.mark.usefixtures("leave_no_trace")]

STARTED = re.compile(r"started runner (\d+) \(pid (\d+); lanes ([^)]*)\)")


def environment(services: Services, config: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")},
        **services.env(config),
        "PYTHONPATH": str(ROOT),
    }


def supervisor(config: Path, services: Services, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN), "run", "--processes", "2", *args],
            env=environment(services, config),
            stdout=out,
            stderr=out,
        )


def runners(log: Path, expected: int = 2, timeout: float = 60) -> dict[int, list[str]]:
    """``pid -> lanes`` of the runners the supervisor logged as started."""
    deadline = time.monotonic() + timeout
    while True:
        found = {int(pid): lanes.split(", ") for _, pid, lanes in STARTED.findall(log.read_text())}
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


async def lane_rows(dsn: str, namespace: str) -> dict[str, tuple[str, int]]:
    """``lane -> (owner, events)`` from the ``lane_status`` rows the runners publish."""
    conn = await asyncpg.connect(dsn)
    try:
        table = await conn.fetchval("SELECT to_regclass($1)", f'"{namespace}".lane_status')
        if table is None:
            return {}
        rows = await conn.fetch(f'SELECT lane, owner, events FROM "{namespace}".lane_status')
    finally:
        await conn.close()
    return {r["lane"]: (r["owner"], int(r["events"])) for r in rows}


def working(dsn: str, namespace: str, lanes: set[str], timeout: float) -> dict[str, str]:
    """Wait until every lane in ``lanes`` has published applied events; ``lane -> owner``."""
    deadline = time.monotonic() + timeout
    rows: dict[str, tuple[str, int]] = {}
    while time.monotonic() < deadline:
        rows = anyio.run(lane_rows, dsn, namespace)
        if lanes <= {lane for lane, (_, events) in rows.items() if events > 0}:
            break
        time.sleep(0.3)
    return {lane: owner for lane, (owner, _) in rows.items()}


@contextmanager
def working_group(
    config: Path, services: Services, log: Path, namespace: str
) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A ``--processes 2`` supervisor whose two runners have started and whose Postgres lane
    has applied events; on leaving, nothing of it is left running (killed if need be)."""
    group = supervisor(config, services, log)
    pids: list[int] = []
    try:
        pids = list(runners(log))
        assert len(pids) == 2, log.read_text()[-3000:]
        working(services.dsn, namespace, {"order_summary@postgres"}, 60)
        yield group, pids
    except BaseException:
        print(log.read_text()[-3000:])
        raise
    finally:
        if group.poll() is None:
            group.kill()
            group.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def divergence(settings: Settings, dsn: str, namespace: str) -> tuple[int, dict[str, int]]:
    """Events in the log, and per lane the documents that differ from the oracle (the order
    fold for the order read models, the committed ids in stream order for the canaries)."""
    events = anyio.run(committed, dsn, namespace)
    oracle = expected_orders(events, make_catalog())
    last = {e.stream_id: e.stream_version for e in events}
    docs = anyio.run(stored, settings, sorted(oracle))
    out: dict[str, int] = {}
    for lane, found in docs.items():
        if lane.startswith("canary@"):
            out[lane] = canary_divergence(events, {k: d for k, (_, d) in found.items()})
        else:
            out[lane] = sum(1 for k, doc in oracle.items() if found.get(k) != (last[k], doc))
            out[lane] += len(set(found) - set(oracle))
    return len(events), out


def test_a_runner_killed_stops_the_group_and_the_restart_loses_nothing(
    services: Services, duckdb_dir: Path, namespace: str, tmp_path: Path
) -> None:
    duckdb_file = duckdb_dir / f"{namespace}.duckdb"
    config = tmp_path / "projectionist.toml"
    write_config(config, namespace, duckdb_file, LANES, policy="halt")
    settings = services.settings(config, namespace, duckdb_file)
    names = {lane_name(*lane) for lane in LANES}
    anyio.run(writers, services.dsn, namespace, 2, 40)

    log = tmp_path / "first.log"
    group = supervisor(config, services, log)
    try:
        started = runners(log)
        assert len(started) == 2, log.read_text()[-3000:]
        assert sorted(n for lanes in started.values() for n in lanes) == sorted(names)
        (holder,) = [pid for pid, lanes in started.items() if "order_analytics@duckdb" in lanes]
        assert "canary@duckdb" in started[holder], started  # one file, one process
        (other,) = set(started) - {holder}

        # Both runners work (each publishes its own lanes under its own owner) while writers
        # append; then the DuckDB runner dies with -9 in the middle of it.
        async def append_then_kill() -> None:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(writers, services.dsn, namespace, 4, 30)
                await anyio.to_thread.run_sync(working, services.dsn, namespace, names, 120)
                os.kill(holder, signal.SIGKILL)

        anyio.run(append_then_kill)
        owners = anyio.run(lane_rows, services.dsn, namespace)
        assert {owner.rsplit(":", 1)[1] for owner, _ in owners.values()} == {
            str(holder),
            str(other),
        }, owners
        code = group.wait(timeout=120)
    finally:
        if group.poll() is None:
            group.kill()  # its runners get SIGTERM from the kernel
            group.wait()
    said = log.read_text()
    assert code == 1, said[-3000:]
    assert f"pid {holder};" in said and "failed with exit code -9" in said, said[-3000:]
    assert wait_gone([other], timeout=5) == [], "the other runner outlived the group"

    # More events while nothing runs; the restart catches up on everything.
    anyio.run(writers, services.dsn, namespace, 1, 30)
    again = tmp_path / "again.log"
    restart = supervisor(config, services, again, "--until-caught-up")
    assert restart.wait(timeout=300) == 0, again.read_text()[-3000:]
    assert again.read_text().count("caught up;") == 2

    events, divergent = divergence(settings, services.dsn, namespace)
    print(
        f"\n--processes 2: {len(LANES)} lanes in 4 stores over 2 runners, {events} events; "
        f"runner pid {holder} killed -9 mid-run; divergent documents after the restart "
        f"{sum(divergent.values())}"
    )
    assert len(divergent) == len(LANES)
    assert divergent == dict.fromkeys(divergent, 0), divergent


def test_no_runner_outlives_its_supervisor_and_sink_free_commands_work_beside_it(
    services: Services, duckdb_dir: Path, namespace: str, tmp_path: Path
) -> None:
    duckdb_file = duckdb_dir / f"{namespace}.duckdb"
    config = tmp_path / "projectionist.toml"
    lanes = (
        ("projections.orders:OrderSummary", "postgres"),
        ("projections.orders:OrderAnalytics", "duckdb"),
    )
    write_config(config, namespace, duckdb_file, lanes)
    anyio.run(writers, services.dsn, namespace, 1, 20)
    env = environment(services, config)

    # SIGTERM: each runner finishes its writes; the supervisor exits 0 once both have.
    with working_group(config, services, tmp_path / "term.log", namespace) as (group, pids):
        # A command that needs no sink works while a runner holds the DuckDB file.
        flushed = projectionist(env, "flush", "order_analytics@duckdb", timeout=60)
        assert flushed.returncode == 0, flushed.stderr
        status = projectionist(env, "status", "--json", timeout=60)
        assert status.returncode == 0, status.stderr
        report = StatusReport.model_validate_json(status.stdout)
        assert sorted(s.lane for s in report.lanes) == [
            "order_analytics@duckdb",
            "order_summary@postgres",
        ]
        facts = {s.name: s.facts for s in report.sinks}
        assert facts["duckdb"]["current_snapshot"], facts  # read beside the runner
        assert facts["duckdb"]["snapshot_age_seconds"] >= 0
        assert facts["postgres"]["server_version"], facts
        group.send_signal(signal.SIGTERM)
        assert group.wait(timeout=120) == 0
        assert wait_gone(pids, timeout=5) == []

    # SIGKILL of the supervisor itself: the kernel tells the runners (SIGTERM), they stop.
    with working_group(config, services, tmp_path / "kill.log", namespace) as (group, pids):
        group.kill()
        group.wait(timeout=30)
        assert wait_gone(pids, timeout=60) == [], "a runner outlived its supervisor"

    # The DuckDB file is free again: one plain runner takes it and catches up.
    plain = projectionist(env, "run", "--until-caught-up", timeout=180)
    assert plain.returncode == 0, plain.stderr[-3000:]
