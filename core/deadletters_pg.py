"""Dead letters in the event store's database (table ``<schema>.dead_letters``)."""

from __future__ import annotations

import json
from uuid import UUID

import asyncpg

from core.deadletters import DeadLetter, DeadLetterStore
from core.naming import quote_ident, validate_name
from core.pgerrors import DRIVER_ERRORS, translate_pg_error
from core.position import Position

__all__ = ("PostgresDeadLetters",)

_STATUSES = ("parked", "retry", "skipped", "resolved")


class PostgresDeadLetters(DeadLetterStore):
    """``park`` is idempotent by ``(lane, event_id)``: a replayed batch parks nothing twice."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "projectionist") -> None:
        self.pool = pool
        self.table = f"{quote_ident(validate_name('event_store.schema', schema))}.dead_letters"

    async def park(self, letters: list[DeadLetter]) -> None:
        # One row per event: a statement may not upsert one row twice (SQLSTATE 21000).
        letters = list({(d.lane, d.event_id): d for d in letters}.values())
        if not letters:
            return
        query = f"""
INSERT INTO {self.table} (lane, event_id, transaction_id, global_position, stream_id,
                          stream_version, event_type, error, blocked_by, payload)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::bigint[], $5::text[],
                     $6::bigint[], $7::text[], $8::text[], $9::uuid[], $10::jsonb[])
ON CONFLICT (lane, event_id) DO UPDATE SET status = 'parked', error = excluded.error,
    parked_at = now() WHERE dead_letters.status = 'retry'"""
        try:
            await self.pool.execute(
                query,
                [d.lane for d in letters],
                [d.event_id for d in letters],
                [d.position.transaction_id for d in letters],
                [d.position.global_position for d in letters],
                [d.stream_id for d in letters],
                [d.stream_version for d in letters],
                [d.event_type for d in letters],
                [d.error for d in letters],
                [d.blocked_by for d in letters],
                [json.dumps(d.payload) for d in letters],
            )
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, "parking events") from None

    async def find(self, lane: str | None = None, status: str = "parked") -> list[DeadLetter]:
        query = (
            f"SELECT * FROM {self.table} WHERE ($1::text IS NULL OR lane = $1) "
            "AND ($2 = 'any' OR status = $2) ORDER BY transaction_id, global_position"
        )
        try:
            rows = await self.pool.fetch(query, lane, status)
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, "reading dead letters") from None
        return [
            DeadLetter(
                lane=r["lane"],
                event_id=r["event_id"],
                position=Position(r["transaction_id"], r["global_position"]),
                stream_id=r["stream_id"],
                stream_version=r["stream_version"],
                event_type=r["event_type"],
                error=r["error"],
                payload=r["payload"]
                if isinstance(r["payload"], dict)
                else json.loads(r["payload"]),
                blocked_by=r["blocked_by"],
                status=r["status"],
                parked_at=r["parked_at"],
            )
            for r in rows
        ]

    async def set_status(self, lane: str, event_ids: list[UUID], status: str) -> int:
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}")
        query = f"UPDATE {self.table} SET status = $3 WHERE lane = $1 AND event_id = ANY($2)"
        try:
            result = await self.pool.execute(query, lane, event_ids, status)
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, "updating dead letters") from None
        return int(result.split()[-1])

    async def clear(self, lane: str) -> None:
        try:
            await self.pool.execute(
                f"DELETE FROM {self.table} WHERE lane = $1 AND status <> 'skipped'", lane
            )
        except DRIVER_ERRORS as exc:
            raise translate_pg_error(exc, "clearing dead letters") from None
