"""The DuckDB sink: documents and their child rows in one file, written in one transaction with
the lane's checkpoint, and published as immutable snapshots that dashboards read.

Threading: the duckdb driver blocks, so every call runs in a worker thread through
``anyio.to_thread.run_sync`` with a one-slot :class:`anyio.CapacityLimiter` owned by the sink:
one sink instance per file, shared by every lane on that file, one statement at a time.

Ownership: the sink takes an exclusive ``flock`` on ``<file>.lock`` (holding its pid and host)
before it opens the working file, and keeps the file open until :meth:`close`. A second runner
on the same file fails at once with :class:`~sinks.duckdb.errors.FileInUse`. Readers never open
the working file: after every commit the sink publishes a snapshot (see
:mod:`sinks.duckdb.snapshots`), and dashboards open it read-only (:mod:`sinks.duckdb.reader`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic, sleep, time
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import duckdb
import pyarrow as pa

from core import jsontext
from core.errors import (
    CheckpointConflict,
    ConfigurationError,
    ProjectionistError,
    StoreUnavailable,
    TransientError,
)
from core.naming import quote_ident
from core.operations import Batch
from core.position import Position
from core.sink import Sink, SinkCapabilities, StoredDocument, Target, check_promotable
from sinks.duckdb.config import DuckDBSinkSettings
from sinks.duckdb.encode import Encoded, chunks, dedupe
from sinks.duckdb.errors import FileInUse, translate_duckdb_error
from sinks.duckdb.layout import Layout
from sinks.duckdb.migrate import ensure_tables, set_live, user_views
from sinks.duckdb.reader import NoSnapshot, current_snapshot, open_current
from sinks.duckdb.schema import SYSTEM_DDL, TableSet, table_set
from sinks.duckdb.snapshots import clean_leftovers, publish

__all__ = ("DuckDBSink", "PublishStats")

log = logging.getLogger("projectionist.sink.duckdb")
T = TypeVar("T")

_READ_CHECKPOINT = (
    "SELECT transaction_id, global_position FROM projectionist_checkpoints "
    "WHERE lane = ? AND generation = ?"
)
_WRITE_CHECKPOINT = (
    "INSERT INTO projectionist_checkpoints VALUES (?, ?, ?, ?, now()) "
    "ON CONFLICT (lane, generation) DO UPDATE SET transaction_id = excluded.transaction_id, "
    "global_position = excluded.global_position, updated_at = excluded.updated_at"
)


def _hit_the_limit(exc: BaseException) -> bool:
    """DuckDB ran out of memory under ``memory_limit``: an out-of-memory error, or a fatal or
    transaction error whose cause is a block larger than the limit (a checkpoint, or the one
    ``COMMIT`` runs once the WAL passes its threshold), not a broken file or a conflict."""
    if isinstance(exc, duckdb.OutOfMemoryException):
        return True
    if not isinstance(exc, duckdb.FatalException | duckdb.TransactionException):
        return False
    text = str(exc).lower()
    return any(m in text for m in ("failed to pin", "could not allocate", "failed to allocate"))


def _durable(exc: BaseException) -> bool:
    """DuckDB's fatal error after a ``COMMIT`` that succeeded, whose autocheckpoint failed."""
    return isinstance(exc, duckdb.FatalException) and "succeeded and is durable" in str(exc)


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` visible to SQL as ``name`` for the block.

    After a failed statement DuckDB refuses the unregister as well ("Current transaction is
    aborted"); that second error would hide the one that matters (an out-of-memory, a
    constraint), so it is suppressed while an error is on its way out."""
    con.register(name, table)
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.unregister(name)
        raise
    con.unregister(name)


def _holder_of(fd: int, wait: float = 1.0) -> str:
    """The lock holder's line (``pid N on <host> since <time>``) from the lock file ``fd``.

    A holder writes its line just after it takes the lock; a runner that loses the race reads
    in between and would name nobody, so an empty file is read again for up to ``wait``
    seconds."""
    deadline = monotonic() + wait
    while True:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
        if text or monotonic() >= deadline:
            return text or "a process starting up"
        sleep(0.05)


def _checkpoint(con: duckdb.DuckDBPyConnection, lane: str, generation: int) -> Position | None:
    rows = con.execute(_READ_CHECKPOINT, [lane, generation]).fetchall()
    return Position(int(rows[0][0]), int(rows[0][1])) if rows else None


@dataclass
class PublishStats:
    """How snapshot publishing went, for ``describe()`` and the benchmark."""

    published: int = 0
    unpublished_writes: int = 0
    """Writes committed since the last published snapshot (deferred while catching up, or a
    publish that failed)."""
    total_seconds: float = 0.0
    last_seconds: float = 0.0
    max_seconds: float = 0.0
    current: str | None = None
    error: str | None = None


class DuckDBSink(Sink):
    """Writes document projections into one DuckDB file; see the module docstring."""

    kind = "duckdb"
    capabilities = SinkCapabilities(
        transactional_checkpoint=True,
        max_batch_operations=1_000_000,
        supports_rows=False,
        blocking_driver=True,
    )

    def __init__(self, settings: DuckDBSinkSettings, name: str | None = None) -> None:
        super().__init__(name)
        self.settings = settings
        self.layout = Layout(settings.path)
        self.publishing = PublishStats()
        self._limiter: anyio.CapacityLimiter | None = None
        self._lock_fd: int | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._sequence = 0
        self._published_at = float("-inf")
        self.over_memory_limit = 0
        """Calls (flushes, loads, snapshot checkpoints) run once without ``memory_limit``
        because they did not fit it."""
        self._observer = False

    # -- the worker-thread slot ----------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    @contextlib.contextmanager
    def _mapped(
        self, what: str, *, in_commit: bool = False, over_limit_passes: bool = False
    ) -> Iterator[None]:
        """Translate driver errors at the boundary; with ``over_limit_passes``, errors of
        running out of memory under the limit are raised as they are (for
        :meth:`_beyond_limit_once`)."""
        try:
            yield
        except (duckdb.Error, OSError) as exc:
            if over_limit_passes and _hit_the_limit(exc):
                raise
            error = translate_duckdb_error(exc, what, self.layout.working, in_commit=in_commit)
            if isinstance(error, TransientError):
                self._drop_connection()
            raise error from None

    # -- owning the file -----------------------------------------------------------------

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        try:
            self.layout.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError as exc:
            raise ConfigurationError(
                "duckdb.path", str(self.layout.working), f"not writable by this user: {exc}"
            ) from None
        except OSError as exc:
            raise StoreUnavailable(f"creating {self.layout.lock}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_of(fd)
            os.close(fd)
            raise FileInUse(self.layout.working, holder) from None
        except OSError as exc:
            os.close(fd)
            raise StoreUnavailable(f"locking {self.layout.lock}: {exc}") from None
        since = datetime.now(UTC).isoformat(timespec="seconds")
        try:  # who holds it, for the next one's message
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0
            )
        except OSError as exc:
            # Closing releases the lock: kept open, the retry's own new descriptor would
            # conflict with it and refuse this very process as "another runner".
            os.close(fd)
            raise StoreUnavailable(f"writing {self.layout.lock}: {exc}") from None
        self._lock_fd = fd

    def _connection(self, *, unbounded: bool = False) -> duckdb.DuckDBPyConnection:
        """The open connection, or a new one (under ``memory_limit`` unless ``unbounded``)."""
        if self._con is not None:
            return self._con
        if self._observer:
            raise ProjectionistError(
                f"sink {self.name} was opened to observe (open_observer): it reads checkpoints "
                "from the published snapshot and never opens the working file"
            )
        self._lock()
        config: dict[str, Any] = {}
        if self.settings.threads is not None:
            config["threads"] = self.settings.threads
        con = self._open(config, None if unbounded else self.settings.memory_limit)
        self._con = con
        with self._mapped("creating the checkpoint tables"):
            con.execute(SYSTEM_DDL)
            clean_leftovers(self.layout)
        return con

    def _open(self, config: dict[str, Any], limit: str | None) -> duckdb.DuckDBPyConnection:
        """Open the working file under ``limit``. Opening replays the WAL, which can hold a
        block larger than the limit (a large document written without it, then a crash before
        its checkpoint); that open runs once without the limit, which is set afterwards."""
        path = str(self.layout.working)
        if limit is not None:
            try:
                with self._mapped("opening the working file", over_limit_passes=True):
                    return duckdb.connect(path, config={**config, "memory_limit": limit})
            except duckdb.Error as exc:  # only errors of the limit come through
                self._over_limit("opening the working file (replaying its WAL)", exc)
        with self._mapped("opening the working file"):
            con = duckdb.connect(path, config=config)
            if limit is not None:
                con.execute(f"SET memory_limit = '{limit}'")
        return con

    def _over_limit(self, what: str, exc: duckdb.Error) -> None:
        """Count and log a call that ran out of memory under the limit (it runs once without)."""
        self.over_memory_limit += 1
        log.warning(
            "sink %s: %s needs more than memory_limit=%s (%s); it runs once without the "
            "limit. Raise the sink's memory_limit if this repeats.",
            self.name,
            what,
            self.settings.memory_limit,
            str(exc).splitlines()[0],
        )

    def _drop_connection(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(duckdb.Error):
                con.close()

    def _close(self) -> None:
        if self.publishing.unpublished_writes and self._con is not None:
            self._publish_quietly()
        self._drop_connection()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    async def open(self) -> None:
        """Take the file: lock it, open it, publish a first snapshot. Fails fast if taken."""

        def run() -> None:
            self._connection()
            self._publish_quietly()

        await self._run(run)

    async def close(self) -> None:
        await self._run(self._close)

    async def open_observer(self) -> None:
        """Read checkpoints from the published snapshot, the state dashboards see, and take
        neither the working file nor its lock, which a runner may hold. Without snapshots
        (``publish_snapshots = false``) this is :meth:`open`, which fails while a runner holds
        the file."""
        if self.settings.publish_snapshots:
            self._observer = True
        else:
            await self.open()

    def _observed(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.layout.working),
            "dashboards_open": str(self.layout.current),
            "memory_limit": self.settings.memory_limit,
            "duckdb": duckdb.__version__,
        }
        try:
            snapshot = current_snapshot(self.layout.working)
            age = time() - snapshot.stat().st_mtime
        except (NoSnapshot, OSError):
            facts["current_snapshot"] = None
            return facts
        facts["current_snapshot"] = str(snapshot)
        facts["snapshot_age_seconds"] = round(max(0.0, age), 1)
        return facts

    def _published_checkpoint(self, target: Target) -> Position | None:
        try:
            con = open_current(self.layout.working, timeout=1.0)
        except NoSnapshot:
            return None  # no runner has started on this file yet
        except (duckdb.Error, OSError) as exc:
            raise StoreUnavailable(
                f"sink {self.name}: cannot open the published snapshot of "
                f"{self.layout.working}: {exc}"
            ) from None
        try:
            with self._mapped(f"reading the checkpoint of lane {target.lane!r} from a snapshot"):
                return _checkpoint(con, target.lane, target.generation)
        finally:
            con.close()

    # -- snapshots -----------------------------------------------------------------------

    def _publish(self) -> None:
        if not self.settings.publish_snapshots:
            return
        if self._sequence == 0:
            self._sequence = max((n for n, _ in self.layout.snapshots()), default=0)
        started = monotonic()
        sequence, keep = self._sequence + 1, self.settings.keep_snapshots

        def checkpoint_and_copy(con: duckdb.DuckDBPyConnection, over_limit_passes: bool) -> Path:
            with self._mapped("publishing a snapshot", over_limit_passes=over_limit_passes):
                return publish(con, self.layout, sequence, keep)

        path = self._beyond_limit_once("publishing a snapshot", checkpoint_and_copy)
        self._sequence += 1
        self._published_at = monotonic()
        stats = self.publishing
        stats.unpublished_writes = 0
        stats.published += 1
        stats.last_seconds = monotonic() - started
        stats.total_seconds += stats.last_seconds
        stats.max_seconds = max(stats.max_seconds, stats.last_seconds)
        stats.current, stats.error = str(path), None

    def _publish_quietly(self) -> None:
        """Publish; a failure is logged and retried after the next write, never raised:
        the data and checkpoint are committed, so the batch must not be retried for it."""
        try:
            self._publish()
        except ProjectionistError as exc:
            self.publishing.error = str(exc)
            log.warning(
                "sink %s: snapshot not published (readers see the previous one): %s", self.name, exc
            )

    def _publish_due(self, catching_up: bool) -> bool:
        """Every write at the head; while catching up, once per ``catch_up_publish_seconds``."""
        if not catching_up:
            return True
        return monotonic() - self._published_at >= self.settings.catch_up_publish_seconds

    async def finish_deferred(self, target: Target) -> None:
        """Publish what catching up deferred: the lane has no batch coming for now."""

        def run() -> None:
            if self.publishing.unpublished_writes:
                self._publish_quietly()

        await self._run(run)

    async def publish(self) -> None:
        """Publish a snapshot now (raises if it fails)."""
        await self._run(self._publish)

    # -- the contract --------------------------------------------------------------------

    def check_target(self, target: Target) -> None:
        """The target's tables (names, reserved columns, children) and ``views`` option are
        valid and no other option is given, checked before any lane starts."""
        unknown = sorted(set(target.options) - {"views"})
        if unknown:
            raise ConfigurationError(
                f"{target.lane}.options", unknown, "the DuckDB sink's lane option is: views"
            )
        table_set(target)
        user_views(target)

    async def prepare(self, target: Target) -> None:
        tables = table_set(target)
        views = user_views(target)

        def run() -> None:
            con = self._connection()
            with self._mapped(f"preparing {tables.table}"), self._transaction(con):
                ensure_tables(con, tables)
                set_live(con, tables, views, promote=False)
            self._publish_quietly()

        await self._run(run)

    async def promote(self, target: Target) -> None:
        """Make ``target.generation`` the one the views show (after a rebuild); refused
        (:func:`~core.sink.check_promotable`) unless its lane has written it at least as far
        as the live generation has come."""
        tables = table_set(target)
        views = user_views(target)

        def run() -> None:
            con = self._connection()
            with self._mapped(f"promoting {tables.table}"), self._transaction(con):
                live_rows = con.execute(
                    "SELECT generation FROM projectionist_live WHERE projection = ?",
                    [target.projection],
                ).fetchall()
                live = int(live_rows[0][0]) if live_rows else None
                check_promotable(
                    target,
                    _checkpoint(con, target.lane, target.generation),
                    live,
                    None if live is None else _checkpoint(con, target.lane, live),
                )
                set_live(con, tables, views, promote=True)
            self._publish_quietly()

        await self._run(run)

    async def read_checkpoint(self, target: Target) -> Position | None:
        """The lane's checkpoint in the working file; opened with :meth:`open_observer`, in
        the newest published snapshot (at most ``catch_up_publish_seconds`` behind while the
        lane catches up, else one flush)."""
        if self._observer:
            return await anyio.to_thread.run_sync(self._published_checkpoint, target)

        def run() -> Position | None:
            con = self._connection()
            with self._mapped(f"reading the checkpoint of lane {target.lane!r}"):
                return _checkpoint(con, target.lane, target.generation)

        return await self._run(run)

    async def load(self, target: Target, keys: Sequence[str]) -> dict[str, StoredDocument]:
        tables = table_set(target)
        if not keys:
            return {}

        what = f"loading {len(keys)} documents from {tables.table}"

        def fetch(con: duckdb.DuckDBPyConnection, over_limit_passes: bool) -> Any:
            wanted = pa.table({"key": pa.array(list(keys), type=pa.string())})
            with (
                self._mapped(what, over_limit_passes=over_limit_passes),
                _registered(con, "projectionist_keys", wanted),
            ):
                return con.execute(
                    f"SELECT key, version, deleted, document FROM {quote_ident(tables.table)} "
                    "WHERE key IN (SELECT key FROM projectionist_keys)"
                ).fetchall()

        def run() -> dict[str, StoredDocument]:
            rows = self._beyond_limit_once(what, fetch)
            return {
                key: StoredDocument(int(version), None if deleted else jsontext.loads(document))
                for key, version, deleted, document in rows
            }

        return await self._run(run)

    async def write(self, target: Target, batch: Batch) -> None:
        tables = table_set(target)
        ops = dedupe(batch.operations)

        def commit(con: duckdb.DuckDBPyConnection, over_limit_passes: bool) -> None:
            what = f"writing lane {batch.lane!r} up to {batch.checkpoint}"
            with (
                self._mapped(what, over_limit_passes=over_limit_passes),
                self._transaction(con, commit=False),
            ):
                found = _checkpoint(con, batch.lane, target.generation)
                if found != batch.expected_checkpoint:
                    raise CheckpointConflict(batch.lane, batch.expected_checkpoint, found)
                for chunk in chunks(ops, self.settings.chunk_rows):
                    self._apply(con, tables, Encoded.of(tables, chunk))
                con.execute("DROP TABLE IF EXISTS temp.projectionist_winners")
                position = [batch.lane, target.generation, *batch.checkpoint]
                con.execute(_WRITE_CHECKPOINT, position)
            try:
                with self._mapped(
                    what + " (COMMIT)", in_commit=True, over_limit_passes=over_limit_passes
                ):
                    con.execute("COMMIT")
            except duckdb.FatalException as exc:
                if not _durable(exc):
                    raise  # over the limit: rolled back, and retried without it
                self._over_limit(f"lane {batch.lane}'s autocheckpoint after COMMIT", exc)
                self._drop_connection()  # invalidated: the next call reopens, replaying the WAL

        def run() -> None:
            self._beyond_limit_once(
                f"lane {batch.lane}'s flush up to {batch.checkpoint}", commit
            )  # an out-of-memory error rolled the transaction back; the retry starts afresh
            self.publishing.unpublished_writes += 1
            if self._publish_due(batch.catching_up):
                self._publish_quietly()

        await self._run(run)

    def _beyond_limit_once(
        self, what: str, fn: Callable[[duckdb.DuckDBPyConnection, bool], T]
    ) -> T:
        """``fn(connection, over_limit_passes)`` under the configured ``memory_limit``; if
        DuckDB runs out of memory there (a document of tens of MiB), once more under DuckDB's
        own limit (80% of the RAM), then the configured one again.

        ``fn`` must map its driver errors with ``over_limit_passes`` (:meth:`_mapped`), so
        that only errors of the limit reach this method untranslated, and leave nothing
        half-done when one is raised (a write runs in one transaction, which DuckDB rolls
        back when its ``COMMIT`` fails). The limit bounds DuckDB's cache; it must not stop a
        lane for good: such an error would come back at every retry of the same call, so
        retrying it as it was would stall the lane forever. A ``CHECKPOINT`` that cannot pin
        a block larger than the limit fails with a fatal error that invalidates the
        database: the connection is then reopened without the limit (DuckDB replays the WAL,
        so nothing committed is lost) before the retry. Counted as
        ``calls_over_memory_limit`` and logged, so that a limit too small for the documents
        shows."""
        con = self._connection()
        if self.settings.memory_limit is None:
            return fn(con, False)
        try:
            return fn(con, True)
        except duckdb.Error as exc:  # only errors of the limit come through fn untranslated
            invalidated = isinstance(exc, duckdb.FatalException)
            self._over_limit(what, exc)
        if invalidated:
            self._drop_connection()
            con = self._connection(unbounded=True)
        else:
            with self._mapped("lifting memory_limit"):
                con.execute("SET memory_limit = '80%'")
        try:
            return fn(con, False)
        finally:
            try:
                con.execute(f"SET memory_limit = '{self.settings.memory_limit}'")
            except duckdb.Error:
                self._drop_connection()  # reopened with the configured limit

    @staticmethod
    def _apply(con: duckdb.DuckDBPyConnection, tables: TableSet, encoded: Encoded) -> None:
        """One chunk: find the keys whose stored version is older or absent (the winners),
        then replace their child rows and their document rows (delete, then insert)."""
        with _registered(con, "projectionist_batch", encoded.documents):
            con.execute(tables.winners_sql("projectionist_batch"))
            for child in tables.children:
                delete, insert = child.replace_sql("projectionist_children")
                con.execute(delete)
                with _registered(con, "projectionist_children", encoded.children[child.table]):
                    con.execute(insert)
            for statement in tables.replace_sql("projectionist_batch"):
                con.execute(statement)

    async def reset(self, target: Target) -> None:
        tables = table_set(target)

        def run() -> None:
            con = self._connection()
            with self._mapped(f"resetting {tables.table}"), self._transaction(con):
                present = {
                    r[0]
                    for r in con.execute(
                        "SELECT table_name FROM duckdb_tables() WHERE database_name = "
                        "current_database() AND schema_name = 'main'"
                    ).fetchall()
                }
                for name in [tables.table, *(c.table for c in tables.children)]:
                    if name in present:
                        con.execute(f"DELETE FROM {quote_ident(name)}")
                con.execute(
                    "DELETE FROM projectionist_checkpoints WHERE lane = ? AND generation = ?",
                    [target.lane, target.generation],
                )
            self._publish_quietly()

        await self._run(run)

    @contextlib.contextmanager
    def _transaction(
        self, con: duckdb.DuckDBPyConnection, *, commit: bool = True
    ) -> Iterator[None]:
        """BEGIN; on any error ROLLBACK and re-raise; COMMIT at the end when ``commit``."""
        con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        if commit:
            con.execute("COMMIT")

    def counters(self) -> dict[str, tuple[float, str]]:
        p = self.publishing
        return {
            "snapshots_published": (p.published, "Snapshots published since the sink opened"),
            "unpublished_writes": (
                p.unpublished_writes,
                "Committed writes that readers do not see yet (no snapshot published since)",
            ),
            "publish_seconds_max": (p.max_seconds, "Longest snapshot publish, seconds"),
            "calls_over_memory_limit": (
                self.over_memory_limit,
                "Calls run once without memory_limit because they did not fit it; if this "
                "grows, raise the sink's memory_limit",
            ),
        }

    async def describe(self) -> dict[str, Any]:
        """The files and DuckDB's version; opened with :meth:`open_observer` (``status``),
        the published snapshot and its age, else this process's publishing counters."""
        if self._observer:
            return await anyio.to_thread.run_sync(self._observed)
        p = self.publishing
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.layout.working),
            "dashboards_open": str(self.layout.current),
            "current_snapshot": p.current,
            "snapshots_published": p.published,
            "unpublished_writes": p.unpublished_writes,
            "memory_limit": self.settings.memory_limit,
            "calls_over_memory_limit": self.over_memory_limit,
            "last_publish_seconds": round(p.last_seconds, 4),
            "max_publish_seconds": round(p.max_seconds, 4),
            "publish_error": p.error,
            "duckdb": duckdb.__version__,
        }
