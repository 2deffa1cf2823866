"""The Postgres sink: read models as tables, the lane's checkpoint in the same transaction.

Guarantees (see docs/sinks/postgres.md):

* a batch is one transaction: the checkpoint compare-and-set first (it also serialises two
  writers of one lane on the checkpoint row), then the set-based upsert. A batch of up to
  ``chunk_rows`` rows is one statement (the compare-and-set and the upsert as data-modifying
  CTEs, in the statement's implicit transaction: one round trip); a larger one is ``BEGIN``,
  the compare-and-set, one upsert per ``chunk_rows`` rows, ``COMMIT``. A checkpoint that
  moved raises :class:`CheckpointConflict` and nothing of the batch is written;
* every row is guarded by version (``WHERE stored.version < excluded.version``), deletes are
  tombstones under the same guard, so replays and late redeliveries change nothing;
* a connection lost during ``COMMIT`` (or during the one statement) raises
  :class:`AmbiguousCommit`: the lane re-reads the checkpoint to learn whether the batch landed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from core import jsontext
from core.errors import (
    AmbiguousCommit,
    CheckpointConflict,
    ConfigurationError,
    DocumentRejected,
    PermanentError,
    ProjectionistError,
)
from core.operations import Batch
from core.pgpool import keep_session
from core.position import Position
from core.redact import redact_text
from core.schema import DocumentSchema
from core.sink import Sink, SinkCapabilities, StoredDocument, Target, check_promotable
from sinks.postgres import migrate
from sinks.postgres.config import PostgresSinkSettings
from sinks.postgres.encode import Rows, encode_operations
from sinks.postgres.errors import DRIVER_ERRORS, is_data_error, translate
from sinks.postgres.schema import Layout, generation_of, layout_for

__all__ = ("PostgresSink",)

log = logging.getLogger("projectionist.sink.postgres")


@dataclass(frozen=True, slots=True)
class _Statements:
    layout: Layout
    upsert: str
    load: str
    read_checkpoint: str
    insert_checkpoint: str
    update_checkpoint: str
    write_first: str
    """The first batch of a lane in one statement: checkpoint insert, then the upsert."""
    write_next: str
    """A later batch in one statement: checkpoint compare-and-set, then the upsert."""


def _statements(layout: Layout) -> _Statements:
    cp = layout.checkpoints
    insert_checkpoint = (
        f"INSERT INTO {cp} (lane, generation, transaction_id, global_position, updated_at) "
        "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (lane, generation) DO NOTHING"
    )
    update_checkpoint = (
        f"UPDATE {cp} SET transaction_id = $3, global_position = $4, updated_at = now() "
        "WHERE lane = $1 AND generation = $2 AND transaction_id = $5 AND global_position = $6"
    )

    def alone(cas: str, first: int) -> str:
        # Data-modifying CTEs run once and to completion, in the statement's own implicit
        # transaction; the upsert reads the CAS's output, so the CAS (and its row lock, the
        # same lock order as the transactional path) comes first and gates every row.
        upsert = layout.upsert(first=first, only_if="EXISTS (SELECT FROM cas)")
        return f"WITH cas AS ({cas} RETURNING 1), rows AS ({upsert}) SELECT count(*) FROM cas"

    return _Statements(
        layout=layout,
        upsert=layout.upsert(),
        load=layout.load(),
        read_checkpoint=(
            f"SELECT transaction_id, global_position FROM {cp} WHERE lane = $1 AND generation = $2"
        ),
        insert_checkpoint=insert_checkpoint,
        update_checkpoint=update_checkpoint,
        write_first=alone(insert_checkpoint, first=5),
        write_next=alone(update_checkpoint, first=7),
    )


def _cas_arguments(target: Target, batch: Batch) -> tuple[str | int, ...]:
    """The checkpoint compare-and-set's parameters: lane, generation and the batch's end, then
    the checkpoint it expects (none for a lane's first batch, whose statement inserts)."""
    head = (target.lane, target.generation, *batch.checkpoint)
    expected = batch.expected_checkpoint
    return head if expected is None else (*head, *expected)


def _affected(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 1`` or ``UPDATE 0``."""
    return int(status.rsplit(" ", 1)[-1])


async def _rollback(tx: Any) -> None:
    """Roll back; if the connection is gone, the server has rolled it back already."""
    with contextlib.suppress(*DRIVER_ERRORS):
        await tx.rollback()


class PostgresSink(Sink):
    """Documents of each target in ``<schema>.<projection>_g<generation>`` over an asyncpg pool.

    ``async with PostgresSink(settings) as sink:`` opens a lazy pool (no connection is made
    until the first call, so a database that is down at start is a retried, transient error).
    """

    kind = "postgres"
    capabilities = SinkCapabilities(
        transactional_checkpoint=True, max_batch_operations=50_000, supports_rows=False
    )

    def __init__(self, settings: PostgresSinkSettings, name: str | None = None) -> None:
        super().__init__(name)
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._cache: dict[tuple[str, int, DocumentSchema | None], _Statements] = {}
        self._in_doubt: dict[tuple[str, int], Position] = {}
        """Per (lane, generation): the checkpoint of a batch whose COMMIT answer was lost."""

    # -- resource --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        s = self.settings
        self._pool = await asyncpg.create_pool(
            s.dsn.get_secret_value(),
            min_size=0,
            max_size=s.pool_size,
            timeout=s.connect_timeout,
            command_timeout=s.command_timeout,
            server_settings={"application_name": s.application_name},
            reset=keep_session,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        """The sink's pool (for read queries on the views); open the sink first."""
        if self._pool is None:
            raise ConfigurationError(
                f"sink {self.name}", "closed", "open it first: `async with sink:`"
            )
        return self._pool

    def _error(
        self, exc: BaseException, what: str, *, in_commit: bool = False
    ) -> ProjectionistError:
        return translate(exc, what, in_commit=in_commit, secrets=self.settings.secrets())

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; driver errors leave as core errors naming ``what``."""
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except DRIVER_ERRORS as exc:
            raise self._error(exc, what) from None

    def _for(self, target: Target) -> _Statements:
        key = (target.projection, target.generation, target.schema)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = _statements(layout_for(self.settings.schema_name, target))
        return found

    # -- schema management -----------------------------------------------------------------

    async def prepare(self, target: Target) -> None:
        """Create or evolve the target's table, indexes and view (see :mod:`.migrate`)."""
        layout = layout_for(self.settings.schema_name, target)
        async with self._connection(f"preparing {layout.table}") as conn, conn.transaction():
            await migrate.lock(conn, layout.schema)
            added = await migrate.ensure_target(conn, layout)
        if added:
            log.info("sink %s: added columns %s to %s", self.name, added, layout.table)

    def check_target(self, target: Target) -> None:
        """The lane's options and schema make a valid layout (names, ``indexes``, no unknown
        option), checked before any lane starts."""
        layout_for(self.settings.schema_name, target)

    async def swap(self, target: Target) -> None:
        """Point the projection's view at ``target``'s generation, atomically for readers;
        refused (:func:`~core.sink.check_promotable`) unless its lane has written it at least
        as far as the live generation has come."""
        layout = layout_for(self.settings.schema_name, target)
        stm = self._for(target)
        async with self._connection(f"swapping {layout.view}") as conn, conn.transaction():
            await migrate.lock(conn, layout.schema)
            live_table = await migrate.view_reads(conn, layout)
            live = generation_of(live_table, target.projection) if live_table else None

            async def checkpoint(generation: int | None) -> Position | None:
                if generation is None:
                    return None
                row = await conn.fetchrow(stm.read_checkpoint, target.lane, generation)
                return None if row is None else Position(row[0], row[1])

            check_promotable(
                target, await checkpoint(target.generation), live, await checkpoint(live)
            )
            await migrate.ensure_target(conn, layout)
            await migrate.ensure_view(conn, layout, swap=True)

    async def drop(self, target: Target) -> None:
        """Drop a generation that is not live (its table and its lane's checkpoint)."""
        layout = layout_for(self.settings.schema_name, target)
        async with self._connection(f"dropping {layout.table}") as conn, conn.transaction():
            await migrate.lock(conn, layout.schema)
            if await migrate.view_reads(conn, layout) == layout.table:
                raise ConfigurationError(
                    "generation", target.generation, "it is live: swap another generation in first"
                )
            await migrate.drop_generation(conn, layout, target.lane)

    async def reset(self, target: Target) -> None:
        """Drop the generation's table and checkpoint and create it again from the current
        declaration, in one transaction: a rebuild in place also applies destructive changes."""
        layout = layout_for(self.settings.schema_name, target)
        async with self._connection(f"resetting {layout.table}") as conn, conn.transaction():
            await migrate.lock(conn, layout.schema)
            await migrate.drop_generation(conn, layout, target.lane)
            await migrate.ensure_target(conn, layout)

    # -- reads -----------------------------------------------------------------------------

    async def read_checkpoint(self, target: Target) -> Position | None:
        stm = self._for(target)
        async with self._connection(f"reading the checkpoint of {target.lane}") as conn:
            try:
                row = await conn.fetchrow(stm.read_checkpoint, target.lane, target.generation)
            except asyncpg.UndefinedTableError:
                return None  # never prepared: no checkpoint yet
        return None if row is None else Position(row[0], row[1])

    async def load(self, target: Target, keys: Sequence[str]) -> dict[str, StoredDocument]:
        if not keys:
            return {}
        stm = self._for(target)
        async with self._connection(f"loading documents of {target.lane}") as conn:
            rows = await conn.fetch(stm.load, list(keys))
        return {
            r[0]: StoredDocument(r[1], None if r[2] is None else jsontext.loads(r[2])) for r in rows
        }

    # -- writes ----------------------------------------------------------------------------

    async def write(self, target: Target, batch: Batch) -> None:
        """Up to ``chunk_rows`` rows: one statement (:meth:`_write_alone`). More: one
        transaction of a checkpoint compare-and-set and one upsert per ``chunk_rows`` rows."""
        stm = self._for(target)
        rows = encode_operations(batch.lane, stm.layout.fields, batch.operations)
        what = f"lane {batch.lane}: writing {len(rows)} documents up to {batch.checkpoint}"
        if len(rows) <= self.settings.chunk_rows:
            await self._write_alone(stm, target, batch, rows, what)
        else:
            await self._write_in_transaction(stm, target, batch, rows, what)

    async def _write_alone(
        self, stm: _Statements, target: Target, batch: Batch, rows: Rows, what: str
    ) -> None:
        """The checkpoint compare-and-set and the upsert in one statement: one round trip.

        The statement is its own transaction: it commits whole or not at all. Its answer
        lost (connection dropped, backend terminated) leaves it in doubt:
        :class:`AmbiguousCommit`, resolved by re-reading the checkpoint. A compare-and-set that
        matched no row wrote nothing; then the stored checkpoint tells a conflict from this
        very batch having landed earlier (see :meth:`_landed_before`).
        """
        doubt = (target.lane, target.generation)
        sql = stm.write_first if batch.expected_checkpoint is None else stm.write_next
        moved: int | None = None
        refused: BaseException | None = None
        try:
            async with self.pool.acquire() as conn:
                try:
                    moved = await conn.fetchval(
                        sql, *_cas_arguments(target, batch), *rows.columns(0, len(rows))
                    )
                except DRIVER_ERRORS as exc:
                    if not is_data_error(exc):
                        error = self._error(exc, what, in_commit=True)
                        if isinstance(error, AmbiguousCommit):
                            self._in_doubt[doubt] = batch.checkpoint
                        raise error from None
                    refused = exc  # nothing was written; located below, on its own connection
                else:
                    if not moved and await self._landed_before(conn, stm, target, batch):
                        moved = 1
        except DRIVER_ERRORS as exc:
            if not moved and refused is None:
                raise self._error(exc, what) from None
            # else committed (or refused): only handing the connection back failed
        if refused is not None:
            raise await self._locate(stm, rows, refused) from None
        self._in_doubt.pop(doubt, None)

    async def _write_in_transaction(
        self, stm: _Statements, target: Target, batch: Batch, rows: Rows, what: str
    ) -> None:
        doubt = (target.lane, target.generation)
        done = False
        try:
            async with self.pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    landed = await self._advance_checkpoint(conn, stm, target, batch)
                    if not landed:
                        await self._write_rows(conn, stm, rows)
                except BaseException:
                    await _rollback(tx)
                    raise
                if landed:
                    await _rollback(tx)
                    self._in_doubt.pop(doubt, None)
                    done = True
                    return
                try:
                    await tx.commit()
                except DRIVER_ERRORS as exc:
                    self._in_doubt[doubt] = batch.checkpoint
                    raise self._error(exc, f"{what} (COMMIT)", in_commit=True) from None
                done = True
                self._in_doubt.pop(doubt, None)
        except DRIVER_ERRORS as exc:
            if done:
                return  # committed: only handing the connection back to the pool failed
            if is_data_error(exc):
                raise await self._locate(stm, rows, exc) from None
            raise self._error(exc, what) from None

    async def _advance_checkpoint(
        self, conn: asyncpg.Connection, stm: _Statements, target: Target, batch: Batch
    ) -> bool:
        """Compare-and-set the lane's checkpoint row; zero rows means another writer moved it,
        or this batch landed before (:meth:`_landed_before`, whose answer this returns)."""
        first = batch.expected_checkpoint is None
        sql = stm.insert_checkpoint if first else stm.update_checkpoint
        status = await conn.execute(sql, *_cas_arguments(target, batch))
        if _affected(status) != 1:
            return await self._landed_before(conn, stm, target, batch)
        return False

    async def _landed_before(
        self, conn: asyncpg.Connection, stm: _Statements, target: Target, batch: Batch
    ) -> bool:
        """After a compare-and-set that matched nothing: True when this very batch already
        landed (its commit answer was lost earlier, this sink raised :class:`AmbiguousCommit`
        for it, and the checkpoint is now at its end), so the retry is a no-op rather than a
        conflict with ourselves. Otherwise raises :class:`CheckpointConflict`."""
        row = await conn.fetchrow(stm.read_checkpoint, target.lane, target.generation)
        found = None if row is None else Position(row[0], row[1])
        in_doubt = self._in_doubt.get((target.lane, target.generation))
        if found == batch.checkpoint and in_doubt == batch.checkpoint:
            log.info("lane %s: batch up to %s had landed", batch.lane, found)
            return True
        raise CheckpointConflict(batch.lane, batch.expected_checkpoint, found)

    async def _write_rows(self, conn: asyncpg.Connection, stm: _Statements, rows: Rows) -> None:
        """One ``INSERT ... SELECT FROM unnest(...) ON CONFLICT`` per ``chunk_rows`` rows."""
        step = self.settings.chunk_rows
        for start in range(0, len(rows), step):
            await conn.execute(stm.upsert, *rows.columns(start, start + step))

    async def _locate(
        self, stm: _Statements, rows: Rows, original: BaseException
    ) -> ProjectionistError:
        """Find the document the database refused, one row per savepoint, all rolled back."""
        secrets = self.settings.secrets()
        try:
            async with self.pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    for i in range(len(rows)):
                        savepoint = conn.transaction()
                        await savepoint.start()
                        try:
                            await conn.execute(stm.upsert, *rows.columns(i, i + 1))
                        except asyncpg.PostgresError as exc:
                            if is_data_error(exc):
                                reason = redact_text(f"{exc.sqlstate}: {exc}", secrets)
                                return DocumentRejected(rows.keys[i], reason)
                            raise
                        finally:
                            await savepoint.rollback()
                finally:
                    await _rollback(tx)
        except DRIVER_ERRORS as exc:
            return self._error(exc, "locating a refused document")
        return PermanentError(redact_text(f"{stm.layout.table}: {original}", secrets))

    async def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "address": self.settings.address(),
            "schema": self.settings.schema_name,
        }
        try:
            facts["server_version"] = await self.pool.fetchval("SHOW server_version")
        except DRIVER_ERRORS as exc:
            facts["error"] = str(self._error(exc, "describing the sink"))
        return facts
