"""How ``projectionist run --processes N`` splits the lanes (no process is started here; the
runners themselves are tested against the real services in tests/reliability/test_processes.py)."""

from __future__ import annotations

import sys
import time

import pytest

from core.app import configured_lanes
from core.errors import ConfigurationError
from core.settings import DEFAULT_LANES, LaneSettings, Settings, SinkSettings
from core.supervisor import partition, runner_command, supervise

DSN = "postgresql://nobody@127.0.0.1:1/none"


def settings(*lanes: tuple[str, str], **extra: object) -> Settings:
    sinks = {
        "postgres": SinkSettings(factory="sinks.factories:postgres"),
        "redis": SinkSettings(factory="sinks.factories:redis"),
        "duckdb": SinkSettings(factory="sinks.factories:duckdb"),
        "other_duckdb": SinkSettings(factory="sinks.factories:duckdb"),
    }
    configured = [LaneSettings(projection=f"projections.orders:{p}", sink=s) for p, s in lanes]
    return Settings(postgres_dsn=DSN, sinks=sinks, lanes=configured, **extra)  # type: ignore[arg-type]


def split(s: Settings, processes: int) -> list[list[str]]:
    return partition(configured_lanes(s), s, processes)


def test_the_default_lanes_in_two_processes() -> None:
    s = Settings(postgres_dsn=DSN, lanes=DEFAULT_LANES)  # type: ignore[arg-type]
    assert split(s, 2) == [
        ["order_summary@postgres", "order_cache@redis", "order_analytics@duckdb"],
        ["order_detail@postgres", "order_search@elasticsearch"],
    ]
    assert split(s, 1) == [list(configured_lanes(s))]
    assert split(s, 5) == [[name] for name in configured_lanes(s)]


def test_lanes_of_a_one_process_sink_stay_together_and_count_as_their_number() -> None:
    s = settings(
        ("OrderSummary", "postgres"),
        ("OrderAnalytics", "duckdb"),
        ("OrderDetail", "postgres"),
        ("OrderSummary", "duckdb"),
        ("OrderCache", "redis"),
        ("OrderDetail", "duckdb"),
        ("OrderAnalytics", "other_duckdb"),
    )
    groups = split(s, 3)
    # The three lanes of sink "duckdb" are one unit of three, placed first; another DuckDB
    # sink is a unit of its own (its own file).
    assert groups == [
        ["order_analytics@duckdb", "order_summary@duckdb", "order_detail@duckdb"],
        ["order_summary@postgres", "order_cache@redis"],
        ["order_detail@postgres", "order_analytics@other_duckdb"],
    ]
    # Never more processes than units, never an empty group, every lane exactly once.
    many = split(s, 64)
    assert len(many) == 5
    assert sorted(n for g in many for n in g) == sorted(configured_lanes(s))


def test_the_split_is_the_same_every_time() -> None:
    s = Settings(postgres_dsn=DSN, lanes=DEFAULT_LANES)  # type: ignore[arg-type]
    assert all(split(s, n) == split(s, n) for n in (1, 2, 3, 4))


def test_zero_processes_is_a_configuration_error() -> None:
    s = Settings(postgres_dsn=DSN, lanes=DEFAULT_LANES)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="processes"):
        split(s, 0)


def test_the_processes_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="processes"):
        Settings(postgres_dsn=DSN, processes=0)  # type: ignore[arg-type]


def test_each_runner_gets_its_lanes_on_its_command_line() -> None:
    command = runner_command(["a@postgres", "b@redis"], until_caught_up=True)
    assert command[1:] == [
        "-m",
        "core",
        "run",
        "--lane",
        "a@postgres",
        "--lane",
        "b@redis",
        "--until-caught-up",
    ]


def _fake_runners(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """Runner processes that run ``code`` (a Python program) instead of ``projectionist run``."""
    import core.supervisor

    monkeypatch.setattr(
        core.supervisor, "runner_command", lambda lanes, until: [sys.executable, "-c", code]
    )


@pytest.mark.parametrize("attempt", range(6))
def test_runners_that_fail_together_give_their_code(
    monkeypatch: pytest.MonkeyPatch, attempt: int
) -> None:
    """Stopping the others after the first failure signalled a runner that had just exited:
    ``Popen.send_signal`` collected it behind the supervisor's back, whose next collection
    then raised ECHILD (a traceback and exit 1, in about half the runs)."""
    _fake_runners(monkeypatch, "import sys; sys.exit(2)")
    said: list[str] = []
    code = supervise([["a"], ["b"], ["c"]], settings(), until_caught_up=False, say=said.append)
    assert code == 2, said


def test_a_runner_that_crashes_stops_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 3 (an unexpected exception, core.cli) is not "its lanes halted" (1)."""
    program = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "if os.environ['PROJECTIONIST_METRICS_PORT'] == '9100': sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    _fake_runners(monkeypatch, program)
    said: list[str] = []
    started = time.monotonic()
    code = supervise(
        [["a"], ["b"]], settings(metrics_port=9100), until_caught_up=False, say=said.append
    )
    assert code == 3 and time.monotonic() - started < 30, said
    assert any("failed with exit code 3" in line for line in said), said
