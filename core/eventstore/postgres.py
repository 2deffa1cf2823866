"""The Postgres event store (asyncpg).

Ordering guarantee: every event carries ``transaction_id = pg_current_xact_id()`` of the
transaction that wrote it. Readers only see rows with ``transaction_id <
pg_snapshot_xmin(pg_current_snapshot())``: every transaction below that bound has ended, so
no row can ever appear behind a position a reader has passed. Rows are read in
``(transaction_id, global_position)`` order. The cost: one long-open writing transaction holds
every reader back; :meth:`PostgresEventStore.fence_age` reports how long.

Wake-ups: each append's commit sends a NOTIFY that carries its transaction id. A reader at the
head that was woken for a commit whose events the fence still hides (an earlier transaction,
of any kind, is still open) looks again soon, instead of waiting for the next append or the
poll interval: the end of a transaction that appended nothing sends no NOTIFY.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from time import monotonic
from typing import Any

import anyio
import asyncpg

from core import jsontext
from core.errors import (
    CheckpointAheadOfLog,
    ConcurrencyError,
    ConfigurationError,
    EventLogRestored,
    InvalidEvent,
)
from core.events import EventEnvelope, EventLimits, NewEvent, UndecodableData
from core.eventstore.base import (
    ANY,
    AppendResult,
    EventStore,
    StreamAppender,
    ahead_of_log,
    check_batch,
)
from core.eventstore.postgres_schema import schema_ddl
from core.naming import quote_ident, validate_name
from core.pgerrors import DRIVER_ERRORS, translate_pg_error
from core.pgpool import keep_session
from core.position import Position
from core.redact import redact_url

log = logging.getLogger("projectionist.eventstore")

__all__ = ("PostgresEventStore", "init_connection")

_MIGRATION_LOCK = 0x70726F6A  # "proj": serialises concurrent migrations

FENCE_RECHECK = 0.005
"""Seconds before a reader looks again, at the soonest, for a commit it was woken for but the
fence still hides; then as long again as the commit has waited so far (so a fence held long
costs few reads), never longer than the poll interval."""

_COMMITS_KEPT = 4096
"""Notified commits remembered, newest last; those older than the poll interval are
forgotten first."""

_COLUMNS = (
    "event_id, stream_id, stream_version, event_type, schema_version, data, metadata, "
    "recorded_at, transaction_id::text::bigint AS txid, global_position"
)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json and jsonb as Python objects on every pooled connection."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=_decode_stored_json, schema="pg_catalog"
        )


def _decode_stored_json(text: str) -> Any:
    """A stored JSON value; one nested too deep for Python becomes :class:`UndecodableData`
    (the event is then parked or halts its lane) instead of failing the whole read."""
    try:
        return jsontext.loads(text)
    except RecursionError:
        return UndecodableData(
            f"nests deeper than Python's JSON decoder follows ({len(text)} characters)"
        )


def _envelope(row: asyncpg.Record) -> EventEnvelope:
    return EventEnvelope.trusted(
        {
            "event_id": row[0],
            "stream_id": row[1],
            "stream_version": row[2],
            "event_type": row[3],
            "schema_version": row[4],
            "data": row[5],
            "metadata": row[6],
            "recorded_at": row[7],
            "position": Position(row[8], row[9]),
        }
    )


_LISTENER_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *DRIVER_ERRORS)
"""A listener connection that failed, or took too long to open."""
LISTENER_CONNECT_SECONDS = 2.0
"""The least time the listener's connection may take to open (else the poll interval)."""


class _Sql:
    """The store's statements for one schema, built once."""

    def __init__(self, schema: str) -> None:
        t = f"{quote_ident(schema)}.events"
        fence = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
        after = "(transaction_id, global_position) > ($1::text::xid8, $2::bigint)"
        # Data and metadata arrive as JSON text and are cast here: the pool's jsonb codec would
        # encode a str parameter a second time, as a JSON string. ``dup`` makes a batch that
        # reuses any committed event id write nothing; ON CONFLICT covers a concurrent one.
        self.append = f"""
WITH cur AS (SELECT coalesce(max(stream_version), 0) AS v FROM {t} WHERE stream_id = $1),
dup AS (SELECT count(*) AS n FROM {t} WHERE event_id = ANY($2::uuid[])),
ins AS (
    INSERT INTO {t} (event_id, stream_id, stream_version, event_type, schema_version,
                     data, metadata)
    SELECT e.event_id, $1, cur.v + e.n, e.event_type, e.schema_version,
           e.data::jsonb, e.metadata::jsonb
    FROM cur, dup, unnest($2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[])
         WITH ORDINALITY AS e(event_id, event_type, schema_version, data, metadata, n)
    WHERE dup.n = 0 AND ($7::bigint IS NULL OR cur.v = $7::bigint)
    ORDER BY e.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING stream_version
)
SELECT (SELECT v FROM cur) AS current, count(*) AS written, max(stream_version) AS last FROM ins
"""
        # ``append`` alone, in its own implicit transaction: no ON CONFLICT, so a concurrent
        # commit of any of these ids fails the whole statement (never a partial write that
        # would commit), and the caller sorts it out.
        self.append_alone = self.append.replace("    ON CONFLICT (event_id) DO NOTHING\n", "")
        assert self.append_alone != self.append
        self.existing = (
            f"SELECT event_id, stream_id, stream_version FROM {t} WHERE event_id = ANY($1)"
        )
        self.version = f"SELECT coalesce(max(stream_version), 0) FROM {t} WHERE stream_id = $1"
        self.next_xid = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        self.read = (
            f"SELECT {_COLUMNS} FROM {t} WHERE {after} AND {fence} "
            "ORDER BY transaction_id, global_position LIMIT $3"
        )
        self.read_stream = (
            f"SELECT {_COLUMNS} FROM {t} WHERE stream_id = $1 AND stream_version >= $2 "
            "AND stream_version <= $3 ORDER BY stream_version"
        )
        self.head = (
            f"SELECT transaction_id::text::bigint AS txid, global_position FROM {t} WHERE {fence} "
            "ORDER BY transaction_id DESC, global_position DESC LIMIT 1"
        )
        self.count = (
            f"SELECT count(*) FROM {t} WHERE {after} AND (transaction_id, global_position) "
            "<= ($3::text::xid8, $4::bigint)"
        )
        self.restored = (
            f"SELECT max(transaction_id)::text::bigint AS top, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax FROM "
            f"{t}"
        )


class _PgAppender(StreamAppender):
    def __init__(self, store: PostgresEventStore, conn: asyncpg.Connection) -> None:
        self._store = store
        self._conn = conn
        self.limits = store.limits

    async def _append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        encoded: Sequence[tuple[str, str]],
        expected_version: int | None,
    ) -> AppendResult:
        # Postgres waits for a concurrent holder of these keys inside the statement.
        return await self._store._append_on(
            self._conn, stream_id, events, encoded, expected_version
        )


class PostgresEventStore(EventStore):
    """The event log in Postgres. Create with :meth:`connect`; call :meth:`close` when done."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        schema: str = "projectionist",
        limits: EventLimits | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.limits = limits or EventLimits()
        self.poll_interval = poll_interval
        self._dsn = dsn
        self._sql = _Sql(schema)
        self._listener: asyncpg.Connection | None = None
        self._listener_lock = anyio.Lock()
        self._signal = anyio.Event()
        self._commits: deque[tuple[int, float]] = deque(maxlen=_COMMITS_KEPT)
        """(highest transaction id notified so far, arrival) of each commit notified within
        the poll interval (see :meth:`_hidden_since`)."""
        self._highest_read = 0
        """The highest transaction id :meth:`read` has returned: checked against the server's
        next one when the listener reconnects (a failover, see :meth:`check_reachable`)."""
        self._lost: CheckpointAheadOfLog | None = None

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        schema: str = "projectionist",
        limits: EventLimits | None = None,
        pool_size: int = 10,
        migrate: bool = True,
        poll_interval: float = 1.0,
    ) -> PostgresEventStore:
        """Open a pool, create or migrate the schema, and check the log was not restored."""
        validate_name("event_store.schema", schema)
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, init=init_connection, reset=keep_session
            )
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(
                exc, f"connecting to the event store at {redact_url(dsn)}"
            ) from None
        store = cls(pool, dsn, schema, limits, poll_interval)
        try:
            if migrate:
                await store.migrate()
            else:
                await store.check_exists()
            await store.check_not_restored()
            await store._warn_if_blind_to_other_roles()
        except BaseException:
            await pool.close()
            raise
        return store

    async def migrate(self) -> None:
        """Create or update the schema objects; safe to run concurrently and repeatedly.

        The DDL's digest is kept as the schema's comment and nothing runs when it matches: a
        (re)start then takes no table lock. (Re-creating the trigger would wait for every open
        append, and make all later appends and reads queue behind it.)
        """
        ddl = schema_ddl(self.schema)
        stamp = "projectionist event store " + hashlib.sha256(ddl.encode()).hexdigest()[:16]
        current = "SELECT obj_description(to_regnamespace($1), 'pg_namespace')"
        async with self.pool.acquire() as conn:
            if await conn.fetchval(current, self.schema) == stamp:
                return
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                if await conn.fetchval(current, self.schema) == stamp:
                    return
                await conn.execute(ddl)
                await conn.execute(f"COMMENT ON SCHEMA {quote_ident(self.schema)} IS '{stamp}'")

    async def check_exists(self) -> None:
        """Refuse a database without this store's log (opened without migrating it)."""
        rows = await self._fetch(
            "looking for the event log",
            "SELECT to_regclass($1)",
            f"{quote_ident(self.schema)}.events",
        )
        if rows[0][0] is None:
            raise ConfigurationError(
                "event_store_schema",
                self.schema,
                "this database holds no event log in that schema: check "
                "PROJECTIONIST_POSTGRES_DSN and PROJECTIONIST_EVENT_STORE_SCHEMA, or create it by "
                "appending (`projectionist demo`) or running a lane (`projectionist run`) once",
            )

    async def _warn_if_blind_to_other_roles(self) -> None:
        """Warn once when the role cannot see other roles' transactions: the fence age would
        read 0 while another application's transaction holds every reader back."""
        seen = await self._fetch(
            "checking the role's privileges",
            "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') "
            "OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
        )
        if not seen[0][0]:
            log.warning(
                "the event store's role cannot see other roles' transactions, so the fence "
                "age reads 0 while one of theirs holds every reader back; grant it: GRANT "
                "pg_read_all_stats TO <this role> (docs/event-log.md, What it costs)"
            )

    async def check_not_restored(self) -> None:
        """Refuse to run on a log whose transaction ids come from another cluster."""
        row = await self.pool.fetchrow(self._sql.restored)
        if row is not None and row["top"] is not None and row["top"] >= row["xmax"]:
            raise EventLogRestored(
                f"{self.schema}.events holds transaction id {row['top']}, at or above this "
                f"server's next transaction id {row['xmax']}: the log was restored into another "
                "cluster (pg_dump/pg_restore), so readers would see none of its history. Remedy: "
                "with the server stopped, raise its next transaction id above the log's with "
                f"`pg_resetwal -e {row['top'] >> 32} -x <above {row['top'] & 0xFFFFFFFF}>` "
                "(epoch and 32-bit id; read pg_resetwal's notes on -x first), or restore "
                "physically (pg_basebackup); see docs/event-log.md."
            )

    async def _append_on(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        events: Sequence[NewEvent],
        encoded: Sequence[tuple[str, str]],
        expected_version: int | None,
        *,
        alone: bool = False,
    ) -> AppendResult:
        """Append on ``conn``: inside the caller's transaction, or ``alone`` as one statement
        in its own implicit transaction (committed when the statement ends, so the fence is
        held for the statement only, never across a round trip to this process). ``encoded``
        is :func:`check_batch`'s result for ``events``."""
        try:
            row = await conn.fetchrow(
                self._sql.append_alone if alone else self._sql.append,
                stream_id,
                [e.event_id for e in events],
                [e.event_type for e in events],
                [e.schema_version for e in events],
                [data for data, _ in encoded],
                [metadata for _, metadata in encoded],
                expected_version,
            )
        except asyncpg.UniqueViolationError:
            if alone:
                # A concurrent transaction committed this stream's next version, or some of
                # these ids, first; this statement wrote nothing and the connection is usable.
                return await self._after_lost_race(conn, stream_id, events, expected_version)
            # A concurrent transaction committed this stream's next version first. This
            # transaction is aborted and its connection may be the pool's last: ask elsewhere.
            actual = await self._version(stream_id)
            raise ConcurrencyError(stream_id, expected_version, actual) from None
        except asyncpg.PostgresError as exc:
            if exc.sqlstate and exc.sqlstate.startswith("22"):
                raise InvalidEvent(f"stream {stream_id!r}: {exc}") from None
            what = f"appending to stream {stream_id!r}"
            raise translate_pg_error(exc, what, in_commit=alone) from None
        except (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            # Alone, the statement is its own commit: a connection lost during it may or may
            # not have committed.
            what = f"appending to stream {stream_id!r}"
            raise translate_pg_error(exc, what, in_commit=alone) from None
        assert row is not None
        if row["written"] == len(events):
            return AppendResult(stream_id, row["last"], len(events))
        return await self._resolve_unwritten(conn, stream_id, events, expected_version, row)

    async def _after_lost_race(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
    ) -> AppendResult:
        """An append alone lost a race on a unique key: the same batch committed meanwhile is
        an idempotent no-op, part of it or its ids elsewhere a refusal, anything else a
        concurrency conflict."""
        try:
            actual = int(await conn.fetchval(self._sql.version, stream_id))
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, f"appending to stream {stream_id!r}") from None
        return await self._resolve_unwritten(
            conn, stream_id, events, expected_version, {"written": 0, "current": actual}
        )

    async def _resolve_unwritten(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        row: asyncpg.Record | dict[str, Any],
    ) -> AppendResult:
        """Not all was written: an idempotent re-append, a reuse of event ids, or a conflict.

        When some rows were written (another transaction was committing some of the same ids),
        the error raised rolls this transaction back as it leaves :meth:`transaction`.
        """
        try:
            found = await conn.fetch(self._sql.existing, [e.event_id for e in events])
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, f"appending to stream {stream_id!r}") from None
        if row["written"] == 0:
            if len(found) == len(events) and all(r["stream_id"] == stream_id for r in found):
                return AppendResult(stream_id, max(r["stream_version"] for r in found), 0)
            if not found:
                raise ConcurrencyError(stream_id, expected_version, row["current"])
        raise InvalidEvent(
            f"stream {stream_id!r}: {len(found) - row['written']} of these {len(events)} event "
            "ids were already appended (to this or another stream); an event id may be "
            "appended once, with the same batch"
        )

    async def _version(self, stream_id: str) -> int:
        """The stream's committed version, read on a connection of its own (not the pool's)."""
        try:
            conn = await asyncpg.connect(self._dsn)
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, f"reading the version of stream {stream_id!r}") from None
        try:
            return int(await conn.fetchval(self._sql.version, stream_id))
        finally:
            await conn.close()

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = ANY
    ) -> AppendResult:
        """One stream's events in one statement, committed by it (one round trip; the fence is
        held while the server runs the statement, not while this process gets to COMMIT). A
        connection lost during the statement raises :class:`~core.errors.AmbiguousCommit`."""
        encoded = check_batch(stream_id, events, self.limits)
        try:
            conn = await self.pool.acquire()
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, f"appending to stream {stream_id!r}") from None
        try:
            return await self._append_on(
                conn, stream_id, events, encoded, expected_version, alone=True
            )
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StreamAppender]:
        """Appends on one connection, committed together when the block ends normally.

        Whatever the block raises propagates unchanged after a rollback (an ``OSError`` of the
        caller's own, such as ``TimeoutError``, is not a failed commit). Only a failure of the
        COMMIT itself becomes :class:`~core.errors.AmbiguousCommit` or another core error.

        An append that failed once it reached the server dooms the transaction (Postgres has
        aborted it, or it may hold part of a refused batch): later appends raise that error
        again, and the block's end rolls back and raises it again even if the block caught it,
        so nothing of a doomed transaction is ever reported as committed.
        """
        try:
            conn = await self.pool.acquire()
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, "opening an append transaction") from None
        try:
            tx = conn.transaction()
            try:
                await tx.start()
            except DRIVER_ERRORS as exc:
                raise translate_pg_error(exc, "opening an append transaction") from None
            appender = _PgAppender(self, conn)
            try:
                yield appender
                appender.raise_if_doomed()
            except BaseException:
                # A lost connection cannot roll back, but then nothing was committed either.
                with (
                    anyio.move_on_after(10, shield=True),
                    suppress(*DRIVER_ERRORS),
                ):
                    await tx.rollback()
                raise
            try:
                await tx.commit()
            except DRIVER_ERRORS as exc:
                raise translate_pg_error(exc, "committing an append", in_commit=True) from None
        finally:
            await self.pool.release(conn)

    async def _fetch(self, what: str, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return list(await self.pool.fetch(query, *args))
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, what) from None

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        if self._lost is not None:
            raise self._lost
        rows = await self._fetch(
            "reading the event log", self._sql.read, str(after[0]), after[1], limit
        )
        if rows and rows[-1][8] > self._highest_read:
            self._highest_read = rows[-1][8]
        return [_envelope(r) for r in rows]

    async def check_reachable(self, position: Position, owner: str) -> None:
        rows = await self._fetch("reading the snapshot", self._sql.next_xid)
        next_xid = int(rows[0][0])
        if position.transaction_id >= next_xid:
            raise CheckpointAheadOfLog(ahead_of_log(owner, position, next_xid))

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[EventEnvelope]:
        top = to_version if to_version is not None else (1 << 62)
        rows = await self._fetch(
            f"reading stream {stream_id!r}", self._sql.read_stream, stream_id, from_version, top
        )
        return [_envelope(r) for r in rows]

    async def head(self) -> Position | None:
        rows = await self._fetch("reading the log head", self._sql.head)
        return Position(rows[0]["txid"], rows[0]["global_position"]) if rows else None

    async def count_between(self, after: Position, upto: Position) -> int:
        if upto <= after:
            return 0
        rows = await self._fetch(
            "counting lag", self._sql.count, str(after[0]), after[1], str(upto[0]), upto[1]
        )
        return int(rows[0][0])

    async def fence_age(self) -> float:
        """Age in seconds of the oldest open transaction with an assigned id, cluster-wide,
        prepared (two-phase) transactions included: a forgotten ``PREPARE TRANSACTION`` holds
        every reader back until someone commits or rolls it back.

        Needs ``pg_read_all_stats`` (or superuser) to see other roles' sessions.
        """
        rows = await self._fetch(
            "reading the fence age",
            "SELECT greatest("
            "(SELECT coalesce(extract(epoch FROM max(clock_timestamp() - xact_start)), 0) "
            "FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()), "
            "(SELECT coalesce(extract(epoch FROM max(clock_timestamp() - prepared)), 0) "
            "FROM pg_prepared_xacts))",
        )
        return float(rows[0][0])

    async def settle(self, timeout: float) -> bool:
        rows = await self._fetch("reading the snapshot", self._sql.next_xid)
        target = int(rows[0][0])
        with anyio.move_on_after(timeout):
            while True:
                rows = await self._fetch(
                    "reading the fence",
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                )
                if int(rows[0][0]) >= target:
                    return True
                await anyio.sleep(0.05)
        return False

    def _notified(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        self.notifications += 1
        now = monotonic()
        commits = self._commits
        while commits and now - commits[0][1] > self.poll_interval:
            commits.popleft()
        with suppress(TypeError, ValueError):  # a trigger older than the payload sends ''
            txid = int(payload)  # type: ignore[call-overload]
            commits.append((max(txid, commits[-1][0]) if commits else txid, now))
        self._signal.set()
        self._signal = anyio.Event()

    def _hidden_since(self, after: Position) -> float | None:
        """When the oldest notified commit that a reader at ``after`` has not read arrived
        (``None``: none within the poll interval).

        Each remembered commit holds the highest transaction id notified up to it, not its own
        (commits arrive out of id order when a transaction took its id early), so the ids only
        grow from oldest to newest: the first commit past ``after`` is where that running
        highest first passes it, and the walk back from the newest stops at the first one
        that does not (at the head, the newest: one step)."""
        since = None
        for highest, at in reversed(self._commits):
            if highest <= after.transaction_id:
                break
            since = at
        return since

    async def _ensure_listener(self) -> None:
        """One LISTEN connection for the whole store: lanes waiting at once share it.

        A new connection after one was lost (the server restarted, or failed over) first
        checks that the server still has every transaction this store has read: if not, every
        later :meth:`read` raises :class:`~core.errors.CheckpointAheadOfLog` (the lanes halt)
        instead of waiting for good behind positions the new server hands out again."""
        async with self._listener_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            conn: asyncpg.Connection | None = None
            # What was read before the snapshot below: reads on other connections meanwhile
            # may see commits newer than it (compared with them, a live server looks behind).
            seen = self._highest_read
            # Bounded (asyncpg's own 60 s default held every waiting reader past its poll),
            # by the driver's timeouts: cancelling a connect half-way leaks its socket.
            limit = max(self.poll_interval, LISTENER_CONNECT_SECONDS)
            try:
                conn = await asyncpg.connect(self._dsn, timeout=limit)
                next_xid = int(await conn.fetchval(self._sql.next_xid, timeout=limit))
                await conn.add_listener(f"{self.schema}_events", self._notified)
            except _LISTENER_ERRORS:
                if conn is not None:
                    conn.terminate()
                self._listener = None  # fall back to polling until the next call retries
                return
            if seen >= next_xid and self._lost is None:
                self._lost = CheckpointAheadOfLog(
                    ahead_of_log(
                        f"the event store's reader ({self.schema})",
                        Position(seen, 0),
                        next_xid,
                        lane=False,
                    )
                )
            self._listener = conn

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        """Return on a NOTIFY from a committed append (or one since ``seen``), or after
        ``min(timeout, poll_interval)``; sooner when a reader at ``after`` was woken for a
        commit that it could not read yet (see :data:`FENCE_RECHECK`)."""
        await self._ensure_listener()
        signal = self._signal
        if seen is not None and self.notifications > seen:
            return
        wait = min(timeout, self.poll_interval)
        if after is not None and (since := self._hidden_since(after)) is not None:
            wait = min(wait, max(FENCE_RECHECK, monotonic() - since))
        with anyio.move_on_after(wait):
            await signal.wait()

    async def close(self) -> None:
        async with self._listener_lock:  # not while a reconnect is under way
            listener, self._listener = self._listener, None
        try:
            if listener is not None and not listener.is_closed():
                with suppress(*DRIVER_ERRORS):
                    await listener.close()
        finally:
            await self.pool.close()
