"""``projectionist status``: per lane state, checkpoint, head, lag, rate, parked count and last
error, plus the log's fence age. Checkpoints come from the sinks themselves and states from
the ``lane_status`` rows runners publish, so it works while a runner runs elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from core.errors import ProjectionistError
from core.eventstore.postgres import PostgresEventStore
from core.lane import Lane
from core.naming import quote_ident
from core.position import START
from core.redact import redact_text
from core.strategy import LaneState

if TYPE_CHECKING:
    from core.app import App

__all__ = ("LaneStatus", "SinkStatus", "StatusReport", "collect_status", "publish_status")

STALE_AFTER = 15.0
"""Seconds after which a runner's published lane state counts as gone ("stopped")."""


class LaneStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    lane: str
    sink: str
    strategy: str
    state: str
    checkpoint: str | None
    head: str | None
    lag_events: int
    lag_seconds: float
    rate: float
    parked: int
    retries: int
    last_error: str | None
    owner: str | None


class SinkStatus(BaseModel):
    """One configured sink as ``status`` sees it: :meth:`core.sink.Sink.describe`'s facts
    (its address without credentials, the server's version, an error if it did not answer;
    for DuckDB the published snapshot and its age), secrets removed."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    facts: dict[str, Any]


class StatusReport(BaseModel):
    """The ``status --json`` document (its JSON schema is in docs/operations.md)."""

    model_config = ConfigDict(frozen=True)

    generated_at: datetime
    head: str | None
    fence_age_seconds: float
    lanes: list[LaneStatus]
    sinks: list[SinkStatus] = []
    """Empty in a running runner's own report (collected every 2 s for its metrics)."""


def _table(store: PostgresEventStore) -> str:
    return f"{quote_ident(store.schema)}.lane_status"


LIVE_STATES = ("starting", "running", "idle", "retrying", "rebuilding")
"""States in which a lane's process may write to its read model."""


async def live_owner(store: PostgresEventStore, lane: str) -> str | None:
    """The process that runs ``lane`` now (its status row is fresh and in a writing state),
    or ``None``."""
    rows = await store.pool.fetch(
        f"SELECT owner FROM {_table(store)} WHERE lane = $1 AND state = ANY($2::text[]) "
        f"AND now() - updated_at < make_interval(secs => $3)",
        lane,
        list(LIVE_STATES),
        STALE_AFTER,
    )
    return str(rows[0]["owner"]) if rows else None


async def publish_status(store: PostgresEventStore, lanes: list[Lane], owner: str) -> None:
    """Upsert one ``lane_status`` row per lane (called every few seconds by a runner)."""
    rows = []
    for lane in lanes:
        rate = lane.stats.rate()
        rows.append(
            (
                lane.name,
                lane.shown_state(),
                owner,
                lane.stats.events,
                rate,
                lane.stats.retries,
                lane.stats.last_error,
            )
        )
    await store.pool.executemany(
        f"""INSERT INTO {_table(store)} (lane, state, owner, events, rate, retries, last_error,
                                        updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, now())
            ON CONFLICT (lane) DO UPDATE SET state = excluded.state, owner = excluded.owner,
                events = excluded.events, rate = excluded.rate, retries = excluded.retries,
                last_error = excluded.last_error, updated_at = now()""",
        rows,
    )


async def collect_status(
    app: App, *, tolerate_stores: bool = False, running: bool = False
) -> StatusReport:
    """The status of every lane. A store that cannot answer for a lane's checkpoint fails the
    whole report (the ``status`` command says so and exits non-zero), or, with
    ``tolerate_stores`` (the running runner's metrics), shows on that lane only: its
    in-memory checkpoint and the error.

    ``running``: the report of the runner that runs these lanes (every 2 s, for its metrics):
    each lane's checkpoint is the one it holds in memory, which is the stored one (it moves
    only when a flush has stored it), so no store is asked; a lane at the head costs no
    query at all. The ``status`` command, from another process, reads every store."""
    store = app.store
    head = await store.head()
    published: dict[str, Any] = {
        r["lane"]: r
        for r in await store.pool.fetch(
            f"SELECT *, extract(epoch FROM now() - updated_at) AS age FROM {_table(store)}"
        )
    }
    secrets = app.settings.secrets()
    lanes = []
    now = datetime.now(UTC)
    for lane in app.lanes:
        store_error: str | None = None
        if running and lane.state is not LaneState.STARTING:
            checkpoint = lane.checkpoint
        else:
            try:
                checkpoint = await lane.sink.read_checkpoint(lane.target)
            except ProjectionistError as exc:  # one store down never blanks the other lanes
                if not tolerate_stores:
                    raise
                checkpoint = lane.checkpoint
                store_error = f"reading the checkpoint: {exc}"
        after = checkpoint or START
        lag = await store.count_between(after, head) if head and after < head else 0
        lag_seconds = 0.0
        if lag:
            first = await store.read(after, 1)
            if first:
                lag_seconds = max(0.0, (now - first[0].recorded_at).total_seconds())
        row = published.get(lane.name)
        live = row is not None and float(row["age"]) < STALE_AFTER
        error = (row["last_error"] if row is not None else None) or store_error
        lanes.append(
            LaneStatus(
                lane=lane.name,
                sink=lane.sink.kind,
                strategy=lane.strategy.kind,
                state=row["state"] if live and row is not None else "stopped",
                checkpoint=str(checkpoint) if checkpoint else None,
                head=str(head) if head else None,
                lag_events=lag,
                lag_seconds=round(lag_seconds, 3),
                rate=round(float(row["rate"]), 1) if live and row is not None else 0.0,
                parked=await lane.dead_letters.count(lane.name),
                retries=int(row["retries"]) if row is not None else 0,
                last_error=redact_text(error, secrets) if error else None,
                owner=row["owner"] if live and row is not None else None,
            )
        )
    return StatusReport(
        generated_at=now,
        head=str(head) if head else None,
        fence_age_seconds=round(await store.fence_age(), 3),
        lanes=lanes,
        sinks=[] if running else await _describe(app),
    )


async def _describe(app: App) -> list[SinkStatus]:
    """Every open sink's facts; a sink that fails to describe itself says so in its facts
    (``describe`` reports, it never fails a status page)."""
    secrets = app.settings.secrets()
    out = []
    for name, sink in app.sinks.items():
        try:
            facts = await sink.describe()
        except Exception as exc:  # a sink's bug must not hide every other lane's status
            facts = {"error": f"describe failed: {type(exc).__name__}: {exc}"}
        shown = {
            k: redact_text(v, secrets) if isinstance(v, str) else v
            for k, v in facts.items()
            if k not in ("kind", "name")
        }
        out.append(SinkStatus(name=name, kind=sink.kind, facts=shown))
    return out
