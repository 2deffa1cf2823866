"""The CLI as a user meets it: one-line errors with exit code 2 for bad configuration, and
the commands against the real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.status import StatusReport

BIN = Path(sys.executable).with_name("projectionist")


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")}
    return subprocess.run(
        [str(BIN), *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_dsn_names_the_variable(tmp_path: Path) -> None:
    line = one_line_error(cli("status", cwd=tmp_path))
    assert "PROJECTIONIST_POSTGRES_DSN" in line


@pytest.mark.parametrize(
    "dsn", ["", "mysql://u:p@127.0.0.1/db", "postgresql://u:hidden-pw@127.0.0.1:notaport/db"]
)
def test_a_dsn_that_is_not_a_postgres_url_is_refused_before_connecting(
    tmp_path: Path, dsn: str
) -> None:
    """An empty one connected to the driver's default address (and migrated whatever
    database answered there); the others were tracebacks or "cannot reach"."""
    line = one_line_error(cli("status", env={"PROJECTIONIST_POSTGRES_DSN": dsn}, cwd=tmp_path))
    assert "PROJECTIONIST_POSTGRES_DSN" in line and "postgresql://user@host" in line, line
    assert "hidden-pw" not in line


def test_unreachable_service_is_a_clear_error(tmp_path: Path) -> None:
    dsn = "postgresql://someone:s3cret-pw@127.0.0.1:1/db"
    line = one_line_error(cli("status", env={"PROJECTIONIST_POSTGRES_DSN": dsn}, cwd=tmp_path))
    assert "cannot reach" in line
    assert "s3cret-pw" not in line


def test_bad_strategy_names_field_value_and_choices(tmp_path: Path) -> None:
    (tmp_path / "projectionist.toml").write_text(
        '[[lanes]]\nprojection = "projections.orders:OrderSummary"\nsink = "postgres"\n'
        'strategy = { kind = "sometimes" }\n'
    )
    env = {"PROJECTIONIST_POSTGRES_DSN": "postgresql://u:hidden-pw@127.0.0.1:1/db"}
    line = one_line_error(cli("status", env=env, cwd=tmp_path))
    assert "lanes.0.strategy.kind" in line
    assert "sometimes" in line
    assert "immediate" in line
    assert "hidden-pw" not in line


def test_unknown_projection_is_refused_before_any_connection(tmp_path: Path) -> None:
    (tmp_path / "projectionist.toml").write_text(
        '[[lanes]]\nprojection = "projections.orders:Nope"\nsink = "postgres"\n'
    )
    env = {"PROJECTIONIST_POSTGRES_DSN": "postgresql://u:p@127.0.0.1:1/db"}
    line = one_line_error(cli("status", env=env, cwd=tmp_path))
    assert "projections.orders:Nope" in line
    assert "has no 'Nope'" in line


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(
            {"PROJECTIONIST_CONFIG": "missing.toml"},
            ["PROJECTIONIST_CONFIG", "missing.toml", "no such file"],
            id="a-config-path-that-does-not-exist",
        ),
        pytest.param(
            {"PROJECTIONIST_CONFIG": "bad.toml"},
            ["bad.toml", "not valid TOML", "fix the file"],
            id="a-config-that-is-not-toml",
        ),
        pytest.param(
            {"PROJECTIONIST_LANES": "notjson"},
            ['"lanes"', "valid JSON"],
            id="an-environment-variable-that-is-not-json",
        ),
    ],
)
def test_a_configuration_that_cannot_be_read_is_one_line(
    tmp_path: Path, setup: dict[str, str], expected: list[str]
) -> None:
    """Never the built-in lanes in place of a mistyped file, never a traceback."""
    (tmp_path / "bad.toml").write_text("poll_interval = [1\n")
    env = {"PROJECTIONIST_POSTGRES_DSN": "postgresql://u:hidden-pw@127.0.0.1:1/db", **setup}
    line = one_line_error(cli("status", env=env, cwd=tmp_path))
    for part in expected:
        assert part in line
    assert "hidden-pw" not in line


def test_config_dev_null_reads_no_file_not_even_the_local_one(tmp_path: Path) -> None:
    (tmp_path / "projectionist.toml").write_text("poll_interval = [1\n")  # would be refused
    env = {
        "PROJECTIONIST_POSTGRES_DSN": "postgresql://u:hidden-pw@127.0.0.1:1/db",
        "PROJECTIONIST_CONFIG": "/dev/null",
    }
    line = one_line_error(cli("status", env=env, cwd=tmp_path))
    assert "cannot reach" in line, line  # got past the settings: the file was not read


@pytest.mark.postgres
def test_wrong_password_is_refused_without_showing_it(postgres_dsn: str, tmp_path: Path) -> None:
    wrong = postgres_dsn.replace("projectionist:projectionist@", "projectionist:Wr0ng-pw@")
    if wrong == postgres_dsn:
        pytest.skip("the DSN has no password to get wrong")
    line = one_line_error(cli("status", env={"PROJECTIONIST_POSTGRES_DSN": wrong}, cwd=tmp_path))
    assert "authentication failed" in line
    assert "Wr0ng-pw" not in line


def test_an_unknown_lane_is_refused_before_any_runner_starts(tmp_path: Path) -> None:
    _config(tmp_path, "nothing")
    env = {"PROJECTIONIST_POSTGRES_DSN": "postgresql://u:hidden-pw@127.0.0.1:1/db"}
    for args in (["--processes", "2"], [], ["--processes", "1"]):
        line = one_line_error(cli("run", "--lane", "nope@postgres", *args, env=env, cwd=tmp_path))
        assert "lane" in line and "nope@postgres" in line, line
        assert "configured lanes: order_summary@postgres" in line, line
        assert "hidden-pw" not in line
    refused = cli("run", "--processes", "0", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "--processes" in refused.stderr, refused.stderr


@pytest.mark.postgres
def test_an_unexpected_failure_is_exit_3_not_halted(
    postgres_dsn: str, tmp_path: Path, namespace: str
) -> None:
    """The metrics port is taken: an OSError, not a core error. It was a traceback with
    exit 1, which ``run --processes`` read as "its lanes halted" and let the others go on."""
    import socket

    _config(tmp_path, namespace)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"PROJECTIONIST_POSTGRES_DSN": postgres_dsn, "PROJECTIONIST_METRICS_PORT": str(port)}
        ran = cli("run", "--until-caught-up", env=env, cwd=tmp_path)
    assert ran.returncode == 3, ran.stderr
    assert "unexpected error: OSError" in ran.stderr
    logged = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    crash = [entry for entry in logged if "exception" in entry]  # the traceback, to report
    assert crash and "Address already in use" in crash[0]["exception"], ran.stderr


@pytest.mark.postgres
def test_until_caught_up_stopped_by_a_signal_is_not_success(
    postgres_dsn: str, tmp_path: Path, namespace: str
) -> None:
    """A lane that cannot reach its store retries; SIGTERM stops the run before the head:
    exit 128 + 15, not the 0 that means "caught up" to a script or a Kubernetes Job."""
    import signal
    import time

    (tmp_path / "projectionist.toml").write_text(
        f'event_store_schema = "{namespace}"\nlookups = "projections.orders:catalog_lookups"\n'
        '[[lanes]]\nprojection = "projections.orders:OrderCache"\nsink = "redis"\n'
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")}
    env = {
        **base,
        "PROJECTIONIST_POSTGRES_DSN": postgres_dsn,
        "PROJECTIONIST_REDIS_URL": "redis://127.0.0.1:1/0",  # nobody listens
    }
    process = subprocess.Popen(
        [str(BIN), "run", "--until-caught-up"],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        lines: list[str] = []
        assert process.stderr is not None
        while time.monotonic() < deadline:  # until the lane is retrying
            line = process.stderr.readline()
            lines.append(line)
            if "failed (attempt" in line:
                break
        else:
            raise AssertionError("".join(lines))
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert "stopped by SIGTERM before caught up" in rest


def test_run_with_no_enabled_lane_is_refused(tmp_path: Path) -> None:
    """It exited 0 doing nothing (one process) or failed on max() of nothing (several)."""
    (tmp_path / "projectionist.toml").write_text(
        '[[lanes]]\nprojection = "projections.orders:OrderSummary"\nsink = "postgres"\n'
        "enabled = false\n"
    )
    env = {"PROJECTIONIST_POSTGRES_DSN": "postgresql://u:p@127.0.0.1:1/db"}
    for args in ([], ["--processes", "2"]):
        line = one_line_error(cli("run", *args, env=env, cwd=tmp_path))
        assert "no lane is enabled" in line, line


@pytest.mark.postgres
def test_reading_commands_change_nothing_in_the_database(
    postgres_dsn: str, tmp_path: Path, namespace: str
) -> None:
    """``status``, ``flush`` and ``dead-letters list`` created the log's schema and the
    catalog (a monitoring role needs no CREATE; a mistyped database gets nothing)."""
    import anyio
    import asyncpg

    _config(tmp_path, namespace)
    env = {"PROJECTIONIST_POSTGRES_DSN": postgres_dsn}
    for args in (["status"], ["flush", "order_summary@postgres"], ["dead-letters", "list"]):
        line = one_line_error(cli(*args, env=env, cwd=tmp_path))
        assert "holds no event log" in line and namespace in line, line

    async def schemas() -> list[str]:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            rows = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{namespace}%"
            )
            return [r[0] for r in rows]
        finally:
            await conn.close()

    assert anyio.run(schemas) == []


def _config(tmp_path: Path, namespace: str) -> Path:
    path = tmp_path / "projectionist.toml"
    path.write_text(
        f'event_store_schema = "{namespace}"\nread_model_schema = "{namespace}_rm"\n'
        'lookups = "projections.orders:catalog_lookups"\n'
        '[[lanes]]\nprojection = "projections.orders:OrderSummary"\nsink = "postgres"\n'
        'policy = "park"\n'
    )
    return path


@pytest.mark.postgres
def test_run_status_dead_letters_flush_and_rebuild(
    postgres_dsn: str, tmp_path: Path, namespace: str
) -> None:
    import anyio

    from core.eventstore.postgres import PostgresEventStore
    from projections.orders.demo import append_history, seed_catalog
    from projections.orders.history import make_catalog

    async def fill() -> None:
        store = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
        try:
            catalog = make_catalog()
            await seed_catalog(store.pool, catalog)
            await append_history(store, 40, writers=2, catalog=catalog)
            new_event = __import__("core.events", fromlist=["NewEvent"]).NewEvent
            await store.append(
                "order-missing-customer",
                [
                    new_event(event_type="OrderCreated", data={"customer_id": "nobody"}),
                    new_event(  # parked behind the first
                        event_type="OrderItemAdded",
                        data={"product_id": "p1", "quantity": 1, "unit_price": "2.00"},
                    ),
                ],
            )
            await store.settle(30)
        finally:
            await store.close()

    anyio.run(fill)
    _config(tmp_path, namespace)
    env = {"PROJECTIONIST_POSTGRES_DSN": postgres_dsn}
    ran = cli("run", "--until-caught-up", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr

    status = cli("status", "--json", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    report = StatusReport.model_validate_json(status.stdout)
    (lane,) = report.lanes
    assert lane.lane == "order_summary@postgres"
    assert lane.lag_events == 0
    assert lane.parked == 2
    assert "projectionist:" not in status.stdout.replace("projectionist:projectionist", "")
    (sink,) = report.sinks  # the sink's own facts (Sink.describe), without credentials
    assert (sink.name, sink.kind) == ("postgres", "postgres")
    assert sink.facts["server_version"] and "error" not in sink.facts
    text = cli("status", env=env, cwd=tmp_path)
    assert text.returncode == 0 and "server_version=" in text.stdout, text.stdout

    listed = cli("dead-letters", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0
    assert "order-missing-customer" in listed.stdout

    async def parked_id() -> str:
        import asyncpg

        conn = await asyncpg.connect(postgres_dsn)
        try:
            return str(
                await conn.fetchval(
                    f'SELECT event_id FROM "{namespace}".dead_letters WHERE blocked_by IS NULL'
                )
            )
        finally:
            await conn.close()

    event_id = anyio.run(parked_id)
    shown = cli("dead-letters", "show", "order_summary@postgres", event_id, env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    letter = json.loads(shown.stdout)
    assert letter["stream_id"] == "order-missing-customer"
    assert "customer 'nobody' not found" in letter["error"]
    retried = cli(
        "dead-letters", "retry", "order_summary@postgres", event_id, env=env, cwd=tmp_path
    )
    assert "1 dead letter(s) of order_summary@postgres marked retry" in retried.stdout
    # the one held behind it is released with it (left parked, it would hold the stream)
    assert "1 dead letter(s) held behind them marked retry" in retried.stdout
    skipped = cli("dead-letters", "skip", "order_summary@postgres", event_id, env=env, cwd=tmp_path)
    assert "marked skipped" in skipped.stdout
    skipped_status = StatusReport.model_validate_json(
        cli("status", "--json", env=env, cwd=tmp_path).stdout
    )
    assert skipped_status.lanes[0].parked == 0

    bad_lane = one_line_error(cli("rebuild", "nope@postgres", env=env, cwd=tmp_path))
    assert "configured lanes: order_summary@postgres" in bad_lane
    assert cli("flush", "order_summary@postgres", env=env, cwd=tmp_path).returncode == 0

    rebuilt = cli("rebuild", "order_summary@postgres", env=env, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr  # the runner above published "stopped"

    async def another_runner(state: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(
                f'UPDATE "{namespace}".lane_status SET state = $1, owner = $2, '
                "updated_at = now() WHERE lane = 'order_summary@postgres'",
                state,
                "elsewhere:4242",
            )
        finally:
            await conn.close()

    anyio.run(another_runner, "running")
    beside = one_line_error(cli("rebuild", "order_summary@postgres", env=env, cwd=tmp_path))
    assert "it is running in elsewhere:4242" in beside, beside
    anyio.run(another_runner, "stopped")
    after = StatusReport.model_validate_json(cli("status", "--json", env=env, cwd=tmp_path).stdout)
    assert after.lanes[0].lag_events == 0
    # The skipped event stays skipped through the rebuild; the one released behind it is
    # applied again, and parked again on its own: its order was never created.
    assert after.lanes[0].parked == 1
    relisted = cli("dead-letters", "list", env=env, cwd=tmp_path).stdout
    assert "OrderItemAdded" in relisted and "OrderCreated" not in relisted, relisted


@pytest.mark.postgres
def test_the_flush_listener_comes_back_after_its_connection_is_cut(
    postgres_dsn: str, namespace: str
) -> None:
    """A restart of Postgres cut the runner's flush-request connection for good, and
    ``projectionist flush`` then said "requested" to nobody."""
    import types

    import anyio
    import asyncpg

    import core.cli
    from core.settings import Settings

    asked: list[str] = []
    lane = types.SimpleNamespace(request_flush=lambda: asked.append("order_summary@postgres"))
    app_ = types.SimpleNamespace(
        settings=Settings(postgres_dsn=postgres_dsn, event_store_schema=namespace),  # type: ignore[arg-type]
        runner=types.SimpleNamespace(lanes={"order_summary@postgres": lane}),
    )
    channel = f"{namespace}_control"

    async def listener_pid(conn: asyncpg.Connection) -> int | None:
        return await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE $1", f"LISTEN %{channel}%"
        )

    async def scenario() -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(core.cli._control, app_)
                with anyio.fail_after(20):
                    while (pid := await listener_pid(conn)) is None:
                        await anyio.sleep(0.05)
                    await conn.execute("SELECT pg_terminate_backend($1)", pid)
                    while (again := await listener_pid(conn)) in (None, pid):
                        await anyio.sleep(0.05)
                    await conn.execute(
                        "SELECT pg_notify($1, 'flush:order_summary@postgres')", channel
                    )
                    while not asked:
                        await anyio.sleep(0.05)
                assert again != pid
                group.cancel_scope.cancel()
        finally:
            await conn.close()

    anyio.run(scenario)
    assert asked == ["order_summary@postgres"]


@pytest.mark.postgres
def test_a_rebuild_refused_by_its_store_is_one_line(
    postgres_dsn: str, tmp_path: Path, namespace: str
) -> None:
    """An error of the rebuild itself (its reset) came out of the status publisher's task
    group as an ExceptionGroup: exit 3, "unexpected error", instead of one line and exit 2
    or 1 as from any other command."""
    import anyio
    import asyncpg

    _config(tmp_path, namespace)

    async def squat() -> None:  # a view where the lane's generation table goes
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{namespace}_rm"')
            await conn.execute(f'CREATE VIEW "{namespace}_rm".order_summary_g1 AS SELECT 1')
        finally:
            await conn.close()

    anyio.run(squat)
    env = {"PROJECTIONIST_POSTGRES_DSN": postgres_dsn}
    rebuilt = cli("rebuild", "order_summary@postgres", env=env, cwd=tmp_path)
    assert rebuilt.returncode in (1, 2), rebuilt.stderr
    assert "unexpected" not in rebuilt.stderr, rebuilt.stderr
    assert "resetting order_summary_g1" in rebuilt.stderr, rebuilt.stderr
