"""What every lane benchmark shares: the five lanes as the runner configures them by default
(:data:`core.settings.DEFAULT_LANES`), where each benchmark writes (a namespace per part, so
parts never share a read model), and one catch-up from an empty target timed by activity.

A lane's figures (:func:`figures`) put its catch-up beside its store's raw ceilings measured
in the same run: ``ratio`` is lane events/s over ceiling events/s, where the ceiling's
events/s is the log's event count over the seconds the plain client took to write the lane's
final rows or documents (so 1.0 means the lane replays the log as fast as the store takes the
result; the lane also reads and folds every event).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bench.history import CATALOG_SCHEMA, BenchLog
from bench.places import Where
from bench.timing import Clock, Timed, TimedLookups, TimedSource
from core.lane import Lane
from core.lookups import CachedLookups
from core.settings import DEFAULT_LANES, LaneSettings, import_object
from core.sink import Sink
from projections.orders import PostgresCatalog

__all__ = (
    "LANES",
    "CatchUp",
    "catch_up",
    "figures",
    "lane_options",
    "lane_settings",
)


def _projection_name(lane: LaneSettings) -> str:
    return str(import_object(lane.projection, "lanes.projection").name)


LANES: dict[str, LaneSettings] = {_projection_name(lane): lane for lane in DEFAULT_LANES}
"""The default lanes by projection name: order_summary, order_detail (Postgres), order_cache
(Redis), order_search (Elasticsearch), order_analytics (DuckDB)."""


def lane_settings(name: str) -> LaneSettings:
    try:
        return LANES[name]
    except KeyError:
        raise SystemExit(f"unknown lane {name!r}: choose from {', '.join(LANES)}") from None


def lane_options(name: str, where: Where) -> dict[str, Any]:
    """The lane's default options, with the Redis key prefix moved into the namespace."""
    options = dict(lane_settings(name).options)
    if "key_prefix" in options:
        options["key_prefix"] = where.key_prefix(name)
    return options


@dataclass
class CatchUp:
    """One timed catch-up of a lane from an empty target to the head of the log."""

    lane: Lane
    sink: Any
    seconds: float
    clock: Clock = field(default_factory=Clock)


async def catch_up(log: BenchLog, name: str, sink: Sink, where: Where, clock: Clock) -> CatchUp:
    """Reset the lane's target, then run it until caught up, with its default strategy.

    ``sink`` should be a :class:`bench.timing.Timed` sink on ``clock``; the log reads and the
    catalog lookups are timed in the same clock.
    """
    config = lane_settings(name)
    projection: Any = import_object(config.projection, "lanes.projection")()
    lane = Lane(
        projection,
        sink,
        log.store,
        source=TimedSource(log.store, clock),
        # as the runner does (core.app): one lookup cache in front of the catalog
        lookups=CachedLookups(TimedLookups(PostgresCatalog(log.store.pool, CATALOG_SCHEMA), clock)),
        strategy=config.strategy,
        options=lane_options(name, where),
    )
    await sink.prepare(lane.target)
    await sink.reset(lane.target)
    started = time.perf_counter()
    await lane.run(until_caught_up=True)
    seconds = time.perf_counter() - started
    if lane.checkpoint != log.head:
        raise RuntimeError(f"{lane.name} stopped at {lane.checkpoint}, not the head {log.head}")
    return CatchUp(lane, sink, seconds, clock)


def figures(
    log: BenchLog, run: CatchUp, final: int, ceilings: dict[str, float], judged: str
) -> dict[str, Any]:
    """The lane's figures; ``ceilings`` maps a raw method to its seconds for the ``final``
    rows/documents, and ``judged`` names the one the target is checked against."""
    events, seconds = log.events, run.seconds
    rate = events / seconds
    spent = dict(run.clock.spent)
    breakdown = {**spent, "fold and the rest": seconds - sum(spent.values())}
    writes = run.sink.operations_written if isinstance(run.sink, Timed) else None
    out: dict[str, Any] = {
        "lane": run.lane.name,
        "strategy": run.lane.strategy.kind,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(rate),
        "batches": run.lane.stats.batches,
        "final_documents": final,
        "document_writes": writes,
        "write_amplification": round(writes / final, 3) if writes and final else None,
        "breakdown_s": {k: round(v, 3) for k, v in breakdown.items()},
        "ceilings": {},
        "judged_ceiling": judged,
    }
    for method, raw in ceilings.items():
        out["ceilings"][method] = {
            "seconds": round(raw, 3),
            "rows_per_s": round(final / raw),
            "events_per_s": round(events / raw),
            "ratio": round(rate / (events / raw), 4),
        }
    out["ratio"] = out["ceilings"][judged]["ratio"]
    return out
