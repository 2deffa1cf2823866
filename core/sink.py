"""The sink contract: the one extension point between the runner and a store.

A sink is an async resource (``async with sink:``) with a small surface. The runner owns
batching, retries and scheduling; a sink only translates a :class:`~core.operations.Batch` into
its store's native bulk path and maps driver errors into :mod:`core.errors` at its boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from core.errors import ConfigurationError
from core.naming import validate_name
from core.operations import Batch
from core.position import Position
from core.schema import DocumentSchema

__all__ = ("Sink", "SinkCapabilities", "StoredDocument", "Target", "check_promotable")


@dataclass(frozen=True, slots=True)
class SinkCapabilities:
    """What a sink can do, as data (never ``isinstance`` checks)."""

    transactional_checkpoint: bool
    """The checkpoint commits atomically with the data (else: idempotent writes, then it)."""
    max_batch_operations: int = 10_000
    max_batch_bytes: int | None = None
    supports_rows: bool = False
    blocking_driver: bool = False
    """Calls go through a worker thread (DuckDB)."""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A document as a sink holds it: its version (stream version of its last event)."""

    version: int
    document: dict[str, Any] | None
    """``None`` for a tombstone: the key was deleted at ``version``."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one lane writes: the projection's read model in one sink, at one generation.

    ``generation`` leaves room for blue/green rebuilds: a new generation is filled while the
    live one serves, then swapped in. ``options`` are sink-specific (TTL, analyzers, tables).
    """

    lane: str
    projection: str
    schema: DocumentSchema | None = None
    generation: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name("projection", self.projection)
        if self.generation < 1:
            raise ValueError("generation starts at 1")


class Sink(ABC):
    """Abstract async resource. Every method maps driver errors to :mod:`core.errors`.

    Contract:

    * ``write`` applies every operation of the batch and moves the lane's checkpoint from
      ``batch.expected_checkpoint`` to ``batch.checkpoint``. With a transactional checkpoint
      both happen in one transaction, or neither; otherwise the data writes are idempotent
      and the checkpoint is written only after every one of them is resolved.
    * Documents are guarded by version: a write never replaces a stored version that is
      equal or newer, so replays and redeliveries change nothing.
    * ``read_checkpoint`` returns what ``write`` last stored for the lane (``None``: nothing).
    """

    kind: str = "sink"
    capabilities: SinkCapabilities = SinkCapabilities(transactional_checkpoint=False)

    def __init__(self, name: str | None = None) -> None:
        self.name = validate_name("sink.name", name or self.kind)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect. Called once before any other method."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def open_observer(self) -> None:
        """Connect in place of :meth:`open` to read checkpoints only (``projectionist status``
        from another process): take nothing a running writer holds. Only ``read_checkpoint``,
        ``describe`` and ``close`` follow. The default is :meth:`open`, for stores that admit
        any number of clients."""
        await self.open()

    def check_target(self, target: Target) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~core.errors.ConfigurationError` for lane options this sink cannot use
        (a bad key prefix, a bad TTL...), without any I/O. The runner calls it for every lane
        before any lane starts, so a bad option stops the start with one clear line instead of
        halting its lane later. The default accepts everything."""

    @abstractmethod
    async def prepare(self, target: Target) -> None:
        """Create the target's storage if missing; apply additive changes; refuse others."""

    @abstractmethod
    async def read_checkpoint(self, target: Target) -> Position | None: ...

    @abstractmethod
    async def load(self, target: Target, keys: Sequence[str]) -> dict[str, StoredDocument]:
        """Stored documents (and tombstones) for ``keys``, in one round trip where possible."""

    @abstractmethod
    async def write(self, target: Target, batch: Batch) -> None: ...

    async def finish_deferred(self, target: Target) -> None:  # noqa: B027 - optional hook
        """The lane's last batch was ``catching_up`` and no batch follows for now (the lane
        reached the head with nothing to flush, or it halted): do what was deferred for such
        batches (DuckDB publishes a snapshot). Never called with a write in flight. The
        default does nothing."""

    @abstractmethod
    async def reset(self, target: Target) -> None:
        """Remove the target's data and checkpoint (a rebuild in place starts from nothing)."""

    async def describe(self) -> dict[str, Any]:
        """Non-secret facts for ``status`` (server version, address without credentials)."""
        return {"kind": self.kind, "name": self.name}

    def counters(self) -> dict[str, tuple[float, str]]:
        """Numbers for the metrics endpoint, by name: (value, one-line help). Read at scrape
        time from the endpoint's thread, so only plain attribute reads, no I/O. Each becomes
        the gauge ``projectionist_sink_<name>`` labelled with the sink's name. Default: none."""
        return {}


def check_promotable(
    target: Target, position: Position | None, live: int | None, live_position: Position | None
) -> None:
    """Refuse to make ``target``'s generation live (a swap, a promote) unless its lane has
    written it (``position``, its checkpoint) at least as far as the live generation ``live``
    has come (``live_position``): readers would otherwise see an empty model, or documents
    going back to older versions. Raises :class:`~core.errors.ConfigurationError`."""
    generation = target.generation
    if live == generation:
        return
    if position is None:
        raise ConfigurationError(
            "generation",
            generation,
            f"lane {target.lane} has not written generation {generation} (no checkpoint): "
            "run its lane until caught up, then make it live",
        )
    if live_position is not None and position < live_position:
        raise ConfigurationError(
            "generation",
            generation,
            f"lane {target.lane} has written generation {generation} up to {position}, "
            f"behind the live generation {live} at {live_position}: readers would see "
            "documents go back; run its lane until caught up, then make it live",
        )
