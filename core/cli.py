"""The ``projectionist`` command line (typer + rich).

Exit codes: 0 success; 1 a lane halted or the work failed; 2 bad configuration or usage (one
line on stderr naming the field, the value and the fix; never a secret).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from uuid import UUID

import anyio
import asyncpg
import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.app import App, select_lanes, tune_collector
from core.errors import ConfigurationError, ProjectionistError, StoreUnavailable
from core.logs import configure_logging
from core.position import START
from core.redact import redact_text
from core.retry import LogThrottle
from core.settings import Settings, load_settings
from core.status import (
    STALE_AFTER,
    StatusReport,
    collect_status,
    live_owner,
    publish_status,
)
from core.strategy import LaneState

__all__ = ("app",)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
dead_letters_app = typer.Typer(no_args_is_help=True, help="Inspect, retry or skip parked events.")
app.add_typer(dead_letters_app, name="dead-letters")
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("projectionist.cli")
T = TypeVar("T")


def _settings() -> Settings:
    return load_settings()


def _main(fn: Callable[[Settings], Awaitable[T]]) -> T:
    """Run ``fn`` with settings; translate errors into one line and an exit code."""
    return _guarded(lambda settings: anyio.run(fn, settings))


def _guarded(fn: Callable[[Settings], T]) -> T:
    """Call ``fn`` with settings; translate errors into one line and an exit code."""
    configure_logging()
    secrets: tuple[str, ...] = ()
    try:
        settings = _settings()
        secrets = settings.secrets()
        return fn(settings)
    except ConfigurationError as exc:
        err.print(f"[red]configuration error:[/red] {_text(exc, secrets)}")
        raise typer.Exit(2) from None
    except StoreUnavailable as exc:
        err.print(
            f"[red]cannot reach a service:[/red] {_text(exc, secrets)} "
            "(is it running? `scripts/services status`; check the PROJECTIONIST_* addresses)"
        )
        raise typer.Exit(2) from None
    except ProjectionistError as exc:
        err.print(f"[red]error:[/red] {_text(exc, secrets)}")
        raise typer.Exit(1) from None
    except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
        raise
    except Exception as exc:
        # Not "its lanes halted" (1): a supervisor must stop the others and report it.
        log.error("unexpected %s (a bug or the machine)", type(exc).__name__, exc_info=True)
        err.print(
            f"[red]unexpected error:[/red] {_text(exc, secrets, kind=True)} (the traceback is "
            "in the log above; exit code 3)"
        )
        raise typer.Exit(CRASHED) from None


CRASHED = 3
"""The exit code of a command that failed on an unexpected exception."""


def _text(exc: BaseException, secrets: tuple[str, ...], *, kind: bool = False) -> str:
    """The exception's message, secrets masked, safe to print (no markup read in it)."""
    text = f"{type(exc).__name__}: {exc}" if kind else str(exc)
    return escape(redact_text(text, secrets))


_STATUS_ERRORS = (OSError, ProjectionistError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def _publisher(app_: App) -> None:
    """Publish lane states every 2 s; refresh the lag and fence age the metrics show. While a
    store stays down, its failure is logged once a minute (as the lanes do), not every 2 s."""
    throttle = LogThrottle()
    while True:
        try:
            await publish_status(app_.store, app_.lanes, app_.owner)
            app_.last_report = await collect_status(app_, tolerate_stores=True, running=True)
            throttle.reset()
        except _STATUS_ERRORS as exc:
            if throttle.should_log():
                log.warning(
                    "could not publish lane status (%d similar lines suppressed): %s",
                    throttle.suppressed,
                    exc,
                )
        await anyio.sleep(2.0)


async def _publish_stopped(app_: App) -> None:
    """Publish the lanes of a process that ends as stopped (halted ones stay halted), so
    ``status`` and ``rebuild`` do not take them for running until the rows go stale. Best
    effort: the rows go stale anyway."""
    for lane in app_.lanes:
        if lane.state is not LaneState.HALTED:
            lane.state = LaneState.STOPPED
    with anyio.move_on_after(5, shield=True), contextlib.suppress(*_STATUS_ERRORS):
        await publish_status(app_.store, app_.lanes, app_.owner)


CONTROL_RETRY_SECONDS = 5.0
"""How soon the control listener tries again after its connection failed or was lost."""


async def _control(app_: App) -> None:
    """Listen for ``projectionist flush`` requests sent from other processes, on a connection
    of its own; when that connection fails or is lost (a restart of Postgres), connect again:
    a request sent while it is down is lost, as a NOTIFY is (the lane's schedule still
    flushes)."""

    def on_message(*args: Any) -> None:
        payload = str(args[-1])
        if payload.startswith("flush:"):
            name = payload.removeprefix("flush:")
            if name in app_.runner.lanes:
                app_.runner.lanes[name].request_flush()

    channel = f"{app_.settings.event_store_schema}_control"
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(app_.settings.postgres_dsn.get_secret_value())
            lost = anyio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            await conn.add_listener(channel, on_message)
            await lost.wait()
            log.warning("the flush-request listener lost its connection: connecting again")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "the flush-request listener cannot connect (%s): trying again in %g s",
                redact_text(str(exc), app_.settings.secrets()),
                CONTROL_RETRY_SECONDS,
            )
            await anyio.sleep(CONTROL_RETRY_SECONDS)
        finally:
            if conn is not None:
                conn.terminate()


async def _signals(scope: anyio.CancelScope, received_: list[int]) -> None:
    """Cancel ``scope`` at the first SIGTERM or SIGINT, noted in ``received_``."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
        async for signum in received:
            log.info("received %s: finishing the in-flight writes", signal.Signals(signum).name)
            received_.append(signum)
            scope.cancel()
            return


@app.command()
def run(
    until_caught_up: Annotated[
        bool,
        typer.Option(
            "--until-caught-up",
            help="exit 0 once every lane is at the head (128 + N when signal N stops it first)",
        ),
    ] = False,
    lane: Annotated[list[str], typer.Option("--lane", help="run only these lanes")] = [],  # noqa: B006
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=1,
            max=64,
            help="spread the lanes over N runner processes (default: the `processes` setting, 1)",
        ),
    ] = None,
) -> None:
    """Run every configured lane (until SIGTERM, or until caught up)."""

    def choose(settings: Settings) -> int:
        if not select_lanes(settings, lane or None):
            raise ConfigurationError(
                "lanes",
                [],
                "no lane is enabled: nothing would run; configure a lane in projectionist.toml "
                "([[lanes]]) or set enabled = true on one",
            )
        wanted = processes or settings.processes
        if wanted == 1:
            return anyio.run(go, settings)
        from core.supervisor import partition, supervise

        groups = partition(select_lanes(settings, lane or None), settings, wanted)
        return supervise(groups, settings, until_caught_up=until_caught_up, say=_say)

    async def go(settings: Settings) -> int:
        async with App(settings, only=lane or None) as app_:
            tune_collector(settings)
            if settings.metrics_port:
                from core.metrics import serve_metrics

                serve_metrics(app_, settings.metrics_port, settings.metrics_host)
            signalled: list[int] = []
            finished = False
            async with anyio.create_task_group() as group:
                group.start_soon(_signals, group.cancel_scope, signalled)
                group.start_soon(_publisher, app_)
                group.start_soon(_control, app_)
                await app_.runner.run(until_caught_up=until_caught_up)
                finished = True
                group.cancel_scope.cancel()
            await _publish_stopped(app_)
            if until_caught_up and signalled and not finished:
                # stopped before the head: not the success that exit 0 promises
                err.print(f"stopped by {signal.Signals(signalled[0]).name} before caught up")
                return 128 + signalled[0]
            halted = app_.runner.halted()
            for ln in halted:
                where = f" at {ln.halted_at}" if ln.halted_at is not None else ""
                reason = escape(ln.stats.last_error or "")
                err.print(f"[red]lane {escape(ln.name)} halted[/red]{where}: {reason}")
            return 1 if halted else 0

    raise typer.Exit(_guarded(choose))


def _say(line: str) -> None:
    log.info("%s", line)


def _print_status(report: StatusReport) -> None:
    table = Table(title=f"head {report.head}  ·  fence age {report.fence_age_seconds:.1f}s")
    for col in (
        "lane",
        "strategy",
        "state",
        "checkpoint",
        "lag",
        "lag s",
        "rate/s",
        "parked",
        "last error",
    ):
        table.add_column(col)
    for s in report.lanes:
        table.add_row(
            s.lane,
            s.strategy,
            s.state,
            s.checkpoint or "-",
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            f"{s.rate:.0f}",
            str(s.parked),
            escape((s.last_error or "")[:60]),
        )
    console.print(table)
    if report.sinks:
        sinks = Table(title="sinks")
        for col in ("sink", "kind", "facts"):
            sinks.add_column(col)
        for sink in report.sinks:
            facts = ", ".join(f"{k}={v}" for k, v in sink.facts.items() if v is not None)
            sinks.add_row(sink.name, sink.kind, facts)
        console.print(sinks)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Per-lane state, checkpoint, lag and errors, read from the sinks and the log."""

    async def go(settings: Settings) -> StatusReport:
        async with App(settings, observe=True) as app_:  # beside a running runner
            return await collect_status(app_)

    report = _main(go)
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        _print_status(report)


@app.command()
def rebuild(lane: str) -> None:
    """Clear one lane's read model and checkpoint and replay the whole log into it."""
    from core.progress import lane_progress

    async def go(settings: Settings) -> int:
        async with App(settings, only=[lane]) as app_:
            owner = await live_owner(app_.store, lane)
            if owner is not None:
                raise ConfigurationError(
                    "lane",
                    lane,
                    f"it is running in {owner} (projectionist status), or that runner "
                    f"stopped less than {STALE_AFTER:g} s ago: stop it, or run it without "
                    "this lane (--lane), then rebuild; a rebuild beside it would move its "
                    "checkpoint back under it",
                )
            tune_collector(settings)
            target = app_.runner.lane(lane)
            head = await app_.store.head()
            total = await app_.store.count_between(START, head) if head else 0
            failed: Exception | None = None
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(_publisher, app_)  # status shows it "rebuilding"
                    try:
                        with lane_progress(target, total, console):
                            await app_.runner.rebuild(lane)
                    except Exception as exc:  # raised as itself below, not in a group
                        failed = exc
                    group.cancel_scope.cancel()
            finally:
                await _publish_stopped(app_)
            if failed is not None:
                raise failed
            return 1 if app_.runner.halted() else 0

    raise typer.Exit(_main(go))


@app.command()
def flush(lane: str) -> None:
    """Ask the running runner to flush a (batch) lane now."""

    async def go(settings: Settings) -> None:
        select_lanes(settings, [lane])  # a known lane, or a configuration error
        async with App(settings, only=()) as app_:  # the event store only: sinks stay shut
            await app_.store.pool.execute(
                "SELECT pg_notify($1, $2)",
                f"{settings.event_store_schema}_control",
                f"flush:{lane}",
            )
        console.print(f"flush requested for {lane}")

    _main(go)


@app.command()
def demo(
    orders: Annotated[int, typer.Option("--orders", min=1, max=1_000_000)] = 3_000,
) -> None:
    """The orders demo: fill, append, catch up, ask every read model, show status."""
    from core.demo import run_demo

    async def go(settings: Settings) -> int:
        _, report = await run_demo(settings, orders, console)
        _print_status(report)
        behind = [s.lane for s in report.lanes if s.lag_events]
        return 1 if behind else 0

    raise typer.Exit(_main(go))


@dead_letters_app.command("list")
def dl_list(lane: Annotated[str | None, typer.Option(help="only this lane")] = None) -> None:
    """Parked events, oldest first."""

    async def go(settings: Settings) -> None:
        async with App(settings, only=()) as app_:
            letters = await app_.dead_letters.find(lane)
        table = Table()
        for col in ("lane", "event id", "position", "stream", "version", "type", "error"):
            table.add_column(col)
        for d in letters:
            table.add_row(
                d.lane,
                str(d.event_id),
                str(d.position),
                d.stream_id,
                str(d.stream_version),
                d.event_type,
                d.error[:80],
            )
        console.print(table)

    _main(go)


@dead_letters_app.command("show")
def dl_show(lane: str, event_id: UUID) -> None:
    """One parked event with its payload and error, as JSON."""

    async def go(settings: Settings) -> None:
        async with App(settings, only=()) as app_:
            found = [d for d in await app_.dead_letters.find(lane, "any") if d.event_id == event_id]
        if not found:
            raise ConfigurationError("event_id", str(event_id), f"no dead letter in lane {lane}")
        d = found[0]
        sys.stdout.write(
            json.dumps(
                {
                    "lane": d.lane,
                    "event_id": str(d.event_id),
                    "position": str(d.position),
                    "stream_id": d.stream_id,
                    "stream_version": d.stream_version,
                    "event_type": d.event_type,
                    "status": d.status,
                    "error": d.error,
                    "blocked_by": str(d.blocked_by) if d.blocked_by else None,
                    "payload": d.payload,
                },
                indent=2,
            )
            + "\n"
        )

    _main(go)


def _set_status(lane: str, event_ids: list[UUID], status_: str) -> None:
    """Mark the letters ``status_``; the letters parked behind them (held because they came
    later in the same stream) are marked ``retry``: with their blocker gone, the lane applies
    them when the stream's next event arrives, or at a rebuild. Left ``parked``, the first of
    them would hold the stream in its turn."""

    async def go(settings: Settings) -> None:
        async with App(settings, only=()) as app_:
            letters = app_.dead_letters
            changed = await letters.set_status(lane, event_ids, status_)
            chosen = set(event_ids)
            held = [
                d.event_id
                for d in await letters.find(lane, "parked")
                if d.blocked_by in chosen and d.event_id not in chosen
            ]
            released = await letters.set_status(lane, held, "retry") if held else 0
        console.print(f"{changed} dead letter(s) of {lane} marked {status_}")
        if released:
            console.print(f"{released} dead letter(s) held behind them marked retry")
        console.print(
            "a running lane reads dead letters when it starts: restart its runner (or "
            f"`projectionist rebuild {lane}`) for this to take effect"
        )

    _main(go)


@dead_letters_app.command("skip")
def dl_skip(lane: str, event_ids: list[UUID]) -> None:
    """Give up on parked events for good (their streams stay unblocked from then on)."""
    _set_status(lane, event_ids, "skipped")


@dead_letters_app.command("retry")
def dl_retry(lane: str, event_ids: list[UUID]) -> None:
    """Mark parked events for retry: `projectionist rebuild LANE` then re-applies them."""
    _set_status(lane, event_ids, "retry")
