"""Builds the running system from :class:`~core.settings.Settings`: the event store, the
sinks (by factory import path), the lookups, the lanes and the runner."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Collection
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

from core.deadletters_pg import PostgresDeadLetters
from core.errors import ConfigurationError
from core.eventstore.postgres import PostgresEventStore
from core.lane import Lane
from core.lookups import CachedLookups, LookupProvider, NoLookups
from core.naming import validate_name
from core.projection import Projection
from core.runner import Runner
from core.settings import LaneSettings, Settings, import_object
from core.sink import Sink

__all__ = ("App", "configured_lanes", "lane_name_of", "select_lanes")


def lane_name_of(lane: LaneSettings) -> str:
    """``<projection name>@<sink name>`` for a configured lane (imports the projection)."""
    projection = import_object(lane.projection, "lanes.projection")
    return f"{projection.name}@{lane.sink}"


def configured_lanes(settings: Settings) -> dict[str, LaneSettings]:
    """Every enabled lane by its name (``<projection name>@<sink name>``), in configuration
    order; imports the projections and checks each lane's sink and projection, touching no
    service. Raises :class:`ConfigurationError` naming the field at fault."""
    names: dict[str, LaneSettings] = {}
    for lane in settings.lanes:
        if not lane.enabled:
            continue
        if lane.sink not in settings.sinks:
            known = ", ".join(sorted(settings.sinks))
            raise ConfigurationError("lanes.sink", lane.sink, f"configured sinks: {known}")
        validate_name("lanes.sink", lane.sink)
        cls = import_object(lane.projection, "lanes.projection")
        if not (isinstance(cls, type) and issubclass(cls, Projection)):
            raise ConfigurationError(
                "lanes.projection", lane.projection, "name a Projection subclass"
            )
        name = lane_name_of(lane)
        if name in names:
            raise ConfigurationError("lanes", name, "each lane may be configured once")
        names[name] = lane
    return names


def select_lanes(settings: Settings, only: Collection[str] | None) -> dict[str, LaneSettings]:
    """The configured lanes named in ``only`` (every enabled lane for ``None``), by name, in
    configuration order; an unknown name is a :class:`ConfigurationError` listing the
    configured ones. Touches no service."""
    names = configured_lanes(settings)
    if only is None:
        return names
    unknown = [n for n in only if n not in names]
    if unknown:
        known = ", ".join(names) or "none"
        raise ConfigurationError("lane", unknown[0], f"configured lanes: {known}")
    return {name: lane for name, lane in names.items() if name in only}


def tune_collector(settings: Settings) -> None:
    """Set up Python's cyclic garbage collector for a process that runs lanes; call it once
    the :class:`App` is open (every module imported, every client built).

    * the young generation's threshold becomes ``settings.gc_young_threshold`` (unless 0), so
      a batch's short-lived objects die young instead of being promoted and rescanned;
    * everything alive by then (modules, classes, clients: about 100,000 objects) moves to the
      permanent generation (:func:`gc.freeze`), out of every later full collection.

    Process-wide, so only the commands that run lanes call it (``run``, ``rebuild``, ``demo``).
    """
    if settings.gc_young_threshold:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(settings.gc_young_threshold, middle, old)
    gc.freeze()


class App:
    """An async context manager holding every open resource; closes them all on exit.

    ``only`` names the lanes to build (``<projection name>@<sink name>``); ``None`` builds
    every enabled lane. Only the sinks those lanes write are opened, so a process that runs
    some lanes never touches another process's store (a DuckDB file admits one writer) and
    never imports a client it does not need. An empty ``only`` opens the event store and
    nothing else. An unknown name is a :class:`ConfigurationError` raised before any service
    is touched.

    ``observe`` opens the sinks with :meth:`~core.sink.Sink.open_observer`, for reading
    checkpoints beside a running runner (``status``): its lanes must not be run.
    """

    def __init__(
        self, settings: Settings, only: Collection[str] | None = None, *, observe: bool = False
    ) -> None:
        self.settings = settings
        self.only = None if only is None else tuple(only)
        self.observe = observe
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stack = AsyncExitStack()
        self.store: PostgresEventStore
        self.sinks: dict[str, Sink] = {}
        self.lanes: list[Lane] = []
        self.runner: Runner
        self.lookups: LookupProvider = NoLookups()
        self.last_report: Any = None
        """The newest :class:`core.status.StatusReport` a running runner collected."""

    async def __aenter__(self) -> Self:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def validate(self) -> list[LaneSettings]:
        """Check every import path and lane name before touching any service; return the
        lanes to build."""
        s = self.settings
        chosen = list(select_lanes(s, self.only).values())
        for name in {lane.sink for lane in chosen}:
            import_object(s.sinks[name].factory, f"sinks.{name}.factory")
        if s.lookups and chosen:
            import_object(s.lookups, "lookups")
        return chosen

    async def _open(self) -> None:
        chosen = self.validate()
        s = self.settings
        # Commands that only read (status, flush, dead letters) change nothing in the database:
        # a monitoring role needs no CREATE, and a mistyped database gets no schema.
        reading = self.observe or self.only == ()
        self.store = await PostgresEventStore.connect(
            s.postgres_dsn.get_secret_value(),
            schema=s.event_store_schema,
            poll_interval=s.poll_interval,
            migrate=not reading,
        )
        self._stack.push_async_callback(self.store.close)
        self.dead_letters = PostgresDeadLetters(self.store.pool, s.event_store_schema)
        if s.lookups and chosen and not self.observe:
            factory = import_object(s.lookups, "lookups")
            self.lookups = CachedLookups(
                await factory(self.store.pool, s), seconds=s.lookup_cache_seconds
            )
        for name in sorted({lane.sink for lane in chosen}):
            self.sinks[name] = await self._open_sink(name)
        for lane in chosen:
            self.lanes.append(self._lane(lane))
        for built in self.lanes:
            built.sink.check_target(built.target)
        self.runner = Runner(self.store, self.lanes)

    async def _open_sink(self, name: str) -> Sink:
        config = self.settings.sinks[name]
        factory = import_object(config.factory, f"sinks.{name}.factory")
        sink: Sink = factory(name, self.settings, dict(config.options))
        if self.observe:
            await sink.open_observer()
            self._stack.push_async_callback(sink.close)
        else:
            await self._stack.enter_async_context(sink)
        return sink

    def _lane(self, config: LaneSettings) -> Lane:
        projection: Any = import_object(config.projection, "lanes.projection")()
        return Lane(
            projection,
            self.sinks[config.sink],
            self.store,
            strategy=config.strategy,
            policy=config.policy,
            lookups=self.lookups,
            dead_letters=self.dead_letters,
            options=config.options,
            document_cache=config.document_cache,
        )
