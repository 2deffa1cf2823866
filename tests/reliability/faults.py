"""Test-only sink factories that SIGKILL their own process at chosen points of a write.

Named in a runner's configuration like the real factories
(``factory = "tests.reliability.faults:killing_elasticsearch"``), each builds the real sink
through :mod:`sinks.factories` and hooks its seams; the sink's code is not changed. Nothing
happens unless the runner's environment arms a point:

* ``CHAOS_KILL_AT``: comma-separated kill points (names below);
* ``CHAOS_KILL_P``: the chance that an armed point kills when it is reached (default 0.5);
* ``CHAOS_MARKS``: a file the point's name is appended to just before the kill, so the test
  counts the kills that landed where it aimed.

Kill points:

``postgres.statement_sent``     the one-statement write (a batch of up to ``chunk_rows`` rows)
                                under way, killed 0-5 ms after it began, its answer unread
``postgres.after_checkpoint``   inside the transaction (a larger batch): the checkpoint row
                                moved, no rows yet
``postgres.before_commit``      inside the transaction: rows written, ``COMMIT`` not sent
``redis.script_sent``           the batch's ``EVALSHA`` sent, its reply never read
``elasticsearch.mid_bulk``      the first ``_bulk`` request of a write answered, the rest unsent
``elasticsearch.before_checkpoint``  every item resolved, the checkpoint not moved
``duckdb.mid_flush``            inside the transaction: a chunk's SQL ran, no checkpoint, no COMMIT
``duckdb.before_publish``       committed, the dashboards' snapshot not yet published
``<sink>.after_write``          the write returned, the lane has not recorded it
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from core.settings import Settings
from core.sink import Sink
from sinks import factories

__all__ = (
    "KILL_POINTS",
    "armed",
    "killing_duckdb",
    "killing_elasticsearch",
    "killing_postgres",
    "killing_redis",
)

KILL_POINTS = (
    "postgres.statement_sent",
    "postgres.after_checkpoint",
    "postgres.before_commit",
    "redis.script_sent",
    "elasticsearch.mid_bulk",
    "elasticsearch.before_checkpoint",
    "duckdb.mid_flush",
    "duckdb.before_publish",
    "postgres.after_write",
    "redis.after_write",
    "elasticsearch.after_write",
    "duckdb.after_write",
)

_rng = random.Random()


def armed() -> frozenset[str]:
    """The kill points this process's environment arms."""
    found = {p.strip() for p in os.environ.get("CHAOS_KILL_AT", "").split(",") if p.strip()}
    unknown = found - set(KILL_POINTS)
    if unknown:
        raise ValueError(f"unknown kill points {sorted(unknown)}; known: {KILL_POINTS}")
    return frozenset(found)


def _fires(point: str) -> bool:
    return point in armed() and _rng.random() < float(os.environ.get("CHAOS_KILL_P", "0.5"))


def _die(point: str) -> None:
    """Record ``point`` in the marks file, then SIGKILL this process (from any thread)."""
    marks = os.environ.get("CHAOS_MARKS")
    if marks:
        fd = os.open(marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{point}\n".encode())
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_point(point: str) -> None:
    if _fires(point):
        _die(point)


def _after_write(sink: Sink) -> None:
    write = sink.write

    async def killing_write(target: Any, batch: Any) -> None:
        await write(target, batch)
        _kill_point(f"{sink.kind}.after_write")

    setattr(sink, "write", killing_write)


def _after(point: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def killing(*args: Any) -> Any:
        result = await fn(*args)
        _kill_point(point)
        return result

    return killing


def _under_way(point: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``fn`` started, and the process killed a moment later, whether its answer came or not."""

    async def killing(*args: Any) -> Any:
        if not _fires(point):
            return await fn(*args)
        async with anyio.create_task_group() as group:
            group.start_soon(fn, *args)
            await anyio.sleep(_rng.uniform(0.0, 0.005))
            _die(point)

    return killing


def killing_postgres(name: str, settings: Settings, options: dict[str, Any]) -> Sink:
    """The Postgres sink, killed during its one statement, or inside its transaction (after
    the CAS, before COMMIT)."""
    sink: Any = factories.postgres(name, settings, options)
    setattr(sink, "_write_alone", _under_way("postgres.statement_sent", sink._write_alone))
    setattr(
        sink, "_advance_checkpoint", _after("postgres.after_checkpoint", sink._advance_checkpoint)
    )
    setattr(sink, "_write_rows", _after("postgres.before_commit", sink._write_rows))
    _after_write(sink)
    return sink  # type: ignore[no-any-return]


def killing_redis(name: str, settings: Settings, options: dict[str, Any]) -> Sink:
    """The Redis sink, killed with its batch script sent and the reply unread.

    When ``redis.script_sent`` is armed (only then), the hook replaces the sink module's
    ``commit_script`` in this process: when the point fires it sends the same ``EVALSHA`` on a
    pooled connection, gives the event loop a moment to flush the socket, and dies; Redis runs
    the script, or never receives all of it.
    """
    if "redis.script_sent" in armed():
        _hook_redis_script()
    sink = factories.redis(name, settings, options)
    _after_write(sink)
    return sink


def _hook_redis_script() -> None:
    import sinks.redis.sink as redis_sink

    module: Any = redis_sink
    real = getattr(module, "_real_commit_script", module.commit_script)
    module._real_commit_script = real

    async def commit_script(client: Any, script: Any, keys: Any, args: Any) -> Any:
        if _fires("redis.script_sent"):
            conn = await client.connection_pool.get_connection()
            command = conn.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
            await conn.send_packed_command(command, check_health=False)
            await anyio.sleep(0.01)
            _die("redis.script_sent")
        return await real(client, script, keys, args)

    module.commit_script = commit_script


def killing_elasticsearch(name: str, settings: Settings, options: dict[str, Any]) -> Sink:
    """The Elasticsearch sink, killed between two ``_bulk`` requests of one write (give the
    sink a small ``bulk_max_docs`` so writes span several) or after the bulk, before the
    checkpoint moves."""
    sink: Any = factories.elasticsearch(name, settings, options)
    sender = sink._sender

    def killing_sender(index: str) -> Any:
        send = sender(index)
        sent = 0

        async def killing_send(lines: list[bytes]) -> Any:
            nonlocal sent
            answer = await send(lines)
            sent += 1
            if sent == 1:
                _kill_point("elasticsearch.mid_bulk")
            return answer

        return killing_send

    opened = sink.open

    async def killing_open() -> None:
        await opened()
        checkpoints = sink.checkpoints
        move = checkpoints.move

        async def killing_move(*args: Any) -> None:
            _kill_point("elasticsearch.before_checkpoint")
            await move(*args)

        setattr(checkpoints, "move", killing_move)

    setattr(sink, "_sender", killing_sender)
    setattr(sink, "open", killing_open)
    _after_write(sink)
    return sink  # type: ignore[no-any-return]


def killing_duckdb(name: str, settings: Settings, options: dict[str, Any]) -> Sink:
    """The DuckDB sink, killed (from its worker thread) inside a flush's transaction after a
    chunk's SQL ran (give it a small ``chunk_rows``), or after COMMIT before the snapshot."""
    sink: Any = factories.duckdb(name, settings, options)
    apply = sink._apply
    publish = sink._publish_quietly

    def killing_apply(*args: Any) -> None:
        apply(*args)
        _kill_point("duckdb.mid_flush")

    def killing_publish() -> None:
        _kill_point("duckdb.before_publish")
        publish()

    setattr(sink, "_apply", killing_apply)
    setattr(sink, "_publish_quietly", killing_publish)
    _after_write(sink)
    return sink  # type: ignore[no-any-return]
