"""Blue/green rebuilds of an Elasticsearch read model: fill a new generation from the start of
the log while the alias keeps serving the old one, then swap the alias in one request."""

from __future__ import annotations

from core.errors import PermanentError
from core.lane import Lane
from core.strategy import LaneState
from sinks.elasticsearch.sink import ElasticsearchSink

__all__ = ("rebuild",)


async def rebuild(lane: Lane, sink: ElasticsearchSink) -> list[str]:
    """Catch ``lane`` (built with the new ``generation``, writing to ``sink``) up to the head
    with refresh off and no replicas, then promote its index; returns the indices the alias
    served before. Older generations are left for :meth:`ElasticsearchSink.drop`.

    The alias is not touched if the lane halts: a half-built generation is never served.
    """
    if lane.sink is not sink:
        raise PermanentError(f"lane {lane.name} does not write to sink {sink.name}")
    await sink.prepare(lane.target)
    await sink.begin_bulk_load(lane.target)
    await lane.run(until_caught_up=True)
    if lane.state is LaneState.HALTED:
        raise PermanentError(
            f"lane {lane.name} halted at {lane.halted_at} while rebuilding generation "
            f"{lane.target.generation}: {lane.stats.last_error}; the alias still serves the "
            "previous generation"
        )
    return await sink.promote(lane.target)
