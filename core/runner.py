"""The runner: one anyio task group owns every lane; a slow, failing or halted lane never
holds back another. The lanes read the log through one shared window (:mod:`core.source`)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

import anyio

from core.errors import ConfigurationError, PermanentError
from core.eventstore.base import EventStore
from core.fold import SHARED_FOLDS
from core.lane import Lane
from core.position import Position
from core.redact import redact_text
from core.source import SharedLog
from core.strategy import LaneState

__all__ = ("Runner",)

log = logging.getLogger("projectionist.runner")


class Runner:
    """Runs lanes concurrently. ``run`` returns when every lane has returned.

    A lane that raises a permanent error (a checkpoint conflict, a bad configuration) stops
    with state ``halted`` and its error recorded; the others go on.
    """

    def __init__(self, store: EventStore, lanes: Iterable[Lane], *, share_log: bool = True):
        self.store = store
        self.lanes: dict[str, Lane] = {}
        self.shared = SharedLog(store) if share_log else None
        for lane in lanes:
            if lane.name in self.lanes:
                raise ConfigurationError("lane", lane.name, "each lane may be configured once")
            if self.shared is not None:
                lane.source = self.shared.reader(f"lane {lane.name}")
            self.lanes[lane.name] = lane
        self._share_work()

    def _share_work(self) -> None:
        """Decode and fold once for lanes that can share it (two or more lanes of one event
        registry or of one fold family); see :class:`core.fold.SharedFolds`."""
        registries: Counter[int] = Counter()
        families: Counter[str] = Counter()
        for lane in self.lanes.values():
            registries[id(lane.projection.registry)] += 1
            family = getattr(lane.projection, "fold_family", None)
            if family is not None:
                families[family] += 1
        for lane in self.lanes.values():
            if registries[id(lane.projection.registry)] > 1:
                lane.projection.registry.shared = True
        SHARED_FOLDS.families.update(f for f, n in families.items() if n > 1)

    def lane(self, name: str) -> Lane:
        try:
            return self.lanes[name]
        except KeyError:
            known = ", ".join(sorted(self.lanes)) or "none"
            raise ConfigurationError("lane", name, f"known lanes: {known}") from None

    async def _run_lane(self, lane: Lane, until_caught_up: bool) -> None:
        """Run one lane; whatever it raises stops that lane only (state ``halted``, the error
        recorded and logged), never the other lanes."""
        try:
            await lane.run(until_caught_up=until_caught_up)
        except PermanentError as exc:
            lane.state = LaneState.HALTED
            lane.stats.last_error = str(exc)
            log.error("lane %s stopped: %s", lane.name, exc)
        except Exception as exc:  # a bug or an unmapped driver error: this lane's failure only
            lane.state = LaneState.HALTED
            lane.stats.last_error = redact_text(f"unexpected {type(exc).__name__}: {exc}")
            log.error("lane %s stopped: %s", lane.name, lane.stats.last_error)

    async def run(self, *, until_caught_up: bool = False) -> None:
        """Run every lane; with ``until_caught_up`` return once each is at the head."""
        async with anyio.create_task_group() as group:
            for lane in self.lanes.values():
                group.start_soon(self._run_lane, lane, until_caught_up, name=f"lane {lane.name}")

    async def rebuild(self, name: str) -> None:
        """Reset one lane and replay the whole log into it (the lane must not be running)."""
        lane = self.lane(name)
        lane.rebuilding = True
        try:
            await lane.reset()
            lane.state = LaneState.REBUILDING
            await self._run_lane(lane, until_caught_up=True)
        finally:
            lane.rebuilding = False

    async def wait_for(self, name: str, position: Position, timeout: float = 10.0) -> bool:
        """Read-your-writes: True once lane ``name`` has durably passed ``position``."""
        return await self.lane(name).wait_for(position, timeout)

    def halted(self) -> list[Lane]:
        return [lane for lane in self.lanes.values() if lane.state is LaneState.HALTED]
