"""Helpers of the Postgres sink tests: history loading, the read side of the order summary
(the queries its indexes are for), table snapshots, and a TCP proxy that loses the
connection around a commit for real."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

from core.eventstore.postgres import PostgresEventStore
from core.position import START
from tests.support.orders import Catalog, order_history


async def load_history(
    store: PostgresEventStore, orders: int, catalog: Catalog, per_transaction: int = 400
) -> list[Any]:
    """Append ``orders`` generated orders, many streams per transaction; return every event
    once all are readable (another session's open transaction holds the fence back)."""
    steps = order_history(orders, catalog)
    for start in range(0, len(steps), per_transaction):
        async with store.transaction() as tx:
            for stream, events in steps[start : start + per_transaction]:
                await tx.append(stream, events)
    appended = sum(len(events) for _, events in steps)
    with anyio.fail_after(60):
        while True:
            readable = [e async for e in store.iterate(START)]
            if len(readable) == appended:
                return readable
            await anyio.sleep(0.05)


# -- the read side ---------------------------------------------------------------------------


async def customer_orders(
    pool: asyncpg.Pool, schema: str, customer_id: str, limit: int
) -> list[dict[str, Any]]:
    """A customer's orders, newest first (served by ``(customer_id, created_at DESC)``)."""
    rows = await pool.fetch(
        f'SELECT document::text FROM "{schema}".order_summary WHERE customer_id = $1 '
        "ORDER BY created_at DESC LIMIT $2",
        customer_id,
        limit,
    )
    return [json.loads(r[0]) for r in rows]


async def orders_by_status(
    pool: asyncpg.Pool, schema: str, status: str, limit: int
) -> list[dict[str, Any]]:
    """Orders with ``status``, newest first (served by ``(status, created_at DESC)``)."""
    rows = await pool.fetch(
        f'SELECT document::text FROM "{schema}".order_summary WHERE status = $1 '
        "ORDER BY created_at DESC LIMIT $2",
        status,
        limit,
    )
    return [json.loads(r[0]) for r in rows]


async def snapshot(pool: asyncpg.Pool, schema: str, table: str) -> dict[str, tuple[Any, ...]]:
    """Every row of a generation table by key, with ``xmin`` (changes when a row is rewritten)."""
    rows = await pool.fetch(
        f'SELECT xmin::text AS xmin, t.*, t.document::text AS doc_text FROM "{schema}"."{table}" t'
    )
    return {r["key"]: tuple(r.values()) for r in rows}


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _json(value: Any) -> Any:
    return value


ORACLE_COLUMNS: dict[str, Callable[[Any], Any]] = {
    "id": str,
    "customer_id": str,
    "customer_name": str,
    "customer_email": str,
    "status": str,
    "total_amount": Decimal,
    "item_count": int,
    "created_at": _ts,
    "updated_at": _ts,
    "completed_at": _ts,
    "cancelled_at": _ts,
    "cancel_reason": _json,
    "shipping_address": _json,
    "items": _json,
}
"""How each projected column must read, derived from the oracle's document (not the sink's)."""

JSON_COLUMNS = {"shipping_address", "items"}


async def view_rows(pool: asyncpg.Pool, schema: str, view: str) -> dict[str, dict[str, Any]]:
    """The view's rows by key, JSON columns decoded."""
    out: dict[str, dict[str, Any]] = {}
    for r in await pool.fetch(f'SELECT * FROM "{schema}"."{view}"'):
        row = dict(r)
        for column in ("document", *JSON_COLUMNS):
            if isinstance(row.get(column), str):
                row[column] = json.loads(row[column])
        out[row["key"]] = row
    return out


def expected_columns(doc: dict[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in columns:
        value = doc.get(column)
        out[column] = None if value is None else ORACLE_COLUMNS[column](value)
    return out


# -- a connection lost around COMMIT ---------------------------------------------------------

COMMIT = b"Q\x00\x00\x00\x0cCOMMIT;\x00"
"""The simple-protocol Query message asyncpg sends to commit a transaction."""

ONE_STATEMENT = b"WITH cas AS (UPDATE"
"""In the Parse message of the sink's one-statement write of a later batch: the statement
that commits itself. The proxy remembers, per connection, the names it was prepared under;
a Bind of one of them (with Execute and Sync, which commits it) is that statement's commit."""


def _parses(data: bytes) -> bytes | None:
    """The statement name of a Parse message at the start of ``data`` (``P``, length, name)."""
    return data[5 : data.index(b"\0", 5)] if data[:1] == b"P" else None


def _binds(data: bytes) -> bytes | None:
    """The statement a Bind message at the start of ``data`` executes (``B``, length, portal
    name, statement name)."""
    if data[:1] != b"B":
        return None
    portal_end = data.index(b"\0", 5)
    return data[portal_end + 1 : data.index(b"\0", portal_end + 1)]


class CommitFaultProxy:
    """A TCP proxy in front of Postgres that, once armed, loses the next commit's answer.

    The commit is a ``COMMIT`` (the default ``on``) or, with ``on=ONE_STATEMENT``, the
    execution of the sink's one-statement write, which commits itself.

    ``before``: the connection drops before the commit reaches the server (it never lands).
    ``after``: the commit reaches the server, its answer is awaited and thrown away, then the
    connection drops (it landed; the client cannot know). Either way the client sees the
    connection die while its commit is in flight.
    """

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._dsn = parts
        self.mode: Literal["off", "before", "after"] = "off"
        self.on = COMMIT
        self.skip = 0
        self.refuse = 0
        self.refused = 0
        self.tripped = 0
        self._server: asyncio.Server | None = None

    @property
    def dsn(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        user = self._dsn.netloc.rsplit("@", 1)[0] + "@" if "@" in self._dsn.netloc else ""
        return urlunsplit(
            self._dsn._replace(netloc=f"{user}127.0.0.1:{port}", query="sslmode=disable")
        )

    async def __aenter__(self) -> CommitFaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def arm(
        self,
        mode: Literal["before", "after"],
        skip: int = 0,
        refuse: int = 0,
        on: bytes = COMMIT,
    ) -> None:
        """Lose the answer of the commit (``on``) after the next ``skip`` ones; then refuse
        the next ``refuse`` connections (the database looks down for a moment)."""
        self.mode, self.skip, self.refuse, self.on = mode, skip, refuse, on

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        if self.tripped and self.refused < self.refuse:
            self.refused += 1
            cwriter.transport.abort()
            return
        sreader, swriter = await asyncio.open_connection(*self.upstream)
        swallow = asyncio.Event()
        one_statement: set[bytes] = set()  # the names it is prepared under here

        def drop() -> None:
            cwriter.transport.abort()
            swriter.transport.abort()

        async def upstream() -> None:
            while data := await creader.read(65536):
                name = _parses(data)
                if name is not None and ONE_STATEMENT in data:
                    one_statement.add(name)
                elif name is not None:
                    one_statement.discard(name)
                commit = COMMIT in data if self.on == COMMIT else _binds(data) in one_statement
                if self.mode != "off" and commit and self.skip:
                    self.skip -= 1
                elif self.mode != "off" and commit:
                    mode, self.mode = self.mode, "off"
                    self.tripped += 1
                    if mode == "before":
                        drop()
                        return
                    swallow.set()
                swriter.write(data)
                await swriter.drain()
            swriter.close()

        async def downstream() -> None:
            while data := await sreader.read(65536):
                if swallow.is_set():
                    drop()  # the COMMIT's answer: thrown away
                    return
                cwriter.write(data)
                await cwriter.drain()
            cwriter.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            drop()
