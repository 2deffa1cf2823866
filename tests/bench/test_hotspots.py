"""bench.hotspots.summarize: shares of the runner's main-thread samples, by group of work."""

from __future__ import annotations

import pytest

from bench.hotspots import summarize

MAIN = "<module> (projectionist:6);run (core/cli.py:167)"
COLLAPSED = f"""\
{MAIN};Lane._fold (core/lane.py:300);_call_handler (core/fold.py:240);OrderFold.created (projections/orders/fold.py:70) 30
{MAIN};Lane._flush (core/lane.py:460);PostgresSink.write (sinks/postgres/sink.py:270);json_text (sinks/postgres/encode.py:38);dumps (core/jsontext.py:57) 20
{MAIN};Lane._flush (core/lane.py:460);PostgresSink.write (sinks/postgres/sink.py:270);Connection._do_execute (asyncpg/connection.py:2069) 10
{MAIN};BaseEventLoop._run_once (asyncio/base_events.py:1922) 40
Thread._bootstrap (threading.py:1002);DuckDBSink.write.<locals>.commit (sinks/duckdb/sink.py:483) 100
not a sample line
"""  # noqa: E501


def test_shares_are_of_the_main_thread_and_a_nested_group_wins() -> None:
    profile = summarize(COLLAPSED, top=2)
    assert (profile.samples, profile.main_samples) == (200, 100)
    assert profile.groups == pytest.approx(
        {
            "fold handlers": 0.3,
            "encoding documents": 0.2,  # inside the Postgres sink's write, counted as encoding
            "Postgres sink, the rest": 0.1,
            "the rest": 0.4,
        }
    )
    assert profile.top_self == [
        ("BaseEventLoop._run_once (asyncio/base_events.py:1922)", pytest.approx(0.4)),
        ("OrderFold.created (projections/orders/fold.py:70)", pytest.approx(0.3)),
    ]


def test_no_main_thread_samples_gives_an_empty_profile() -> None:
    profile = summarize("Thread._bootstrap (threading.py:1002) 5\n")
    assert (profile.samples, profile.main_samples, profile.groups) == (5, 0, {})
