"""A lane: one projection writing to one sink, with its own checkpoint, strategy, error
policy and failure domain. The lane does the I/O around the pure fold in :mod:`core.fold`."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from time import monotonic
from typing import Any
from uuid import UUID

import anyio

from core.deadletters import DeadLetter, DeadLetterStore, InMemoryDeadLetters
from core.errors import (
    AmbiguousCommit,
    CheckpointConflict,
    LookupUnavailable,
    PermanentError,
    ProjectionistError,
    TransientError,
)
from core.events import EventEnvelope
from core.eventstore.base import EventStore
from core.fold import (
    DocState,
    EventFailed,
    Pending,
    apply_event,
    decode_or_fail,
    lookups_needed,
    plan_gaps,
)
from core.lookups import LookupProvider, NoLookups
from core.operations import Batch
from core.pgerrors import DRIVER_ERRORS, translate_pg_error
from core.position import START, Position
from core.projection import DocumentProjection, LookupKey, Projection
from core.readahead import EventSource, ReadAhead
from core.rejected import ParksRejectedDocuments
from core.retry import Backoff, LogThrottle
from core.sink import Sink, Target
from core.strategy import ErrorPolicy, LaneState, Strategy

__all__ = ("EventSource", "Lane", "LaneStats")

log = logging.getLogger("projectionist.lane")


@dataclass
class LaneStats:
    """Counters a lane keeps for ``status`` and metrics."""

    events: int = 0
    batches: int = 0
    duplicates: int = 0
    ignored: int = 0
    gaps_repaired: int = 0
    parked: int = 0
    retries: int = 0
    last_error: str | None = None
    last_flush_at: float | None = None
    batch_seconds: list[float] = field(default_factory=list)
    """How long each of the last 100 flushes took."""
    batch_events: list[int] = field(default_factory=list)
    """Events each of the same flushes carried."""

    def rate(self) -> float:
        """Events per second of flush time over the last 100 flushes (0 before the first)."""
        seconds = sum(self.batch_seconds)
        return sum(self.batch_events) / seconds if seconds > 0 else 0.0


class Lane(ParksRejectedDocuments):
    """Moves one projection forward in one sink. Run it with :meth:`run` in a task group."""

    def __init__(
        self,
        projection: Projection,
        sink: Sink,
        store: EventStore,
        *,
        source: EventSource | None = None,
        strategy: Strategy | None = None,
        policy: ErrorPolicy = ErrorPolicy.HALT,
        lookups: LookupProvider | None = None,
        dead_letters: DeadLetterStore | None = None,
        options: dict[str, Any] | None = None,
        generation: int = 1,
        backoff: Backoff | None = None,
        document_cache: int = 2_000,
        idle_poll: float = 5.0,
    ) -> None:
        self.projection = projection
        self.sink = sink
        self.store = store
        self.source: EventSource = source or store
        self.strategy = strategy or Strategy.immediate()
        self.policy = policy
        self.lookups = lookups or NoLookups()
        self.dead_letters = dead_letters or InMemoryDeadLetters()
        self.name = f"{projection.name}@{sink.name}"
        schema = getattr(projection, "schema", None)
        self.target = Target(
            lane=self.name,
            projection=projection.name,
            schema=schema,
            generation=generation,
            options=dict(options or {}),
        )
        self.rebuilding = False
        """Set by :meth:`core.runner.Runner.rebuild` while it replays this lane from the start:
        ``status`` shows a working lane as ``rebuilding`` (:meth:`shown_state`)."""
        self.backoff = backoff or Backoff()
        self.document_cache = document_cache
        self.idle_poll = idle_poll
        self.state = LaneState.STARTING
        self.checkpoint: Position | None = None
        self.halted_at: Position | None = None
        self.stats = LaneStats()
        self._blocked: dict[str, tuple[UUID, int]] = {}
        """stream id -> (event id, version) of its first parked event"""
        self._skipped: set[UUID] = set()
        self._in_doubt: Position | None = None
        self._retried: set[UUID] = set()
        self._flushed = anyio.Event()
        self._flush_now = False
        self._sink_deferred = False
        """The last batch was ``catching_up``: :meth:`_finish_deferred` is due when none follows."""
        self._throttle = LogThrottle()
        self.on_progress: Callable[[Lane], None] | None = None

    # -- retries ---------------------------------------------------------------------------

    async def _retrying(self, what: str, fn: Callable[[], Any], *, shielded: bool = False) -> Any:
        """Await ``fn()`` until it succeeds; transient errors retry with backoff, forever.

        ``shielded``: each attempt runs to its end even when the lane is cancelled (a write is
        never cut in the middle of its round trip), but the wait between attempts is not, so a
        stop is never held up by a store that stays down.
        """
        attempt = 0
        while True:
            try:
                with anyio.CancelScope(shield=shielded), self._working():
                    result = await fn()
            except TransientError as exc:
                attempt += 1
                self.stats.retries += 1
                self.stats.last_error = f"{what}: {exc}"
                self.state = LaneState.RETRYING
                if self._throttle.should_log():
                    log.warning(
                        "lane %s: %s failed (attempt %d, %d similar lines suppressed): %s",
                        self.name,
                        what,
                        attempt,
                        self._throttle.suppressed,
                        exc,
                    )
                with self._away():
                    await anyio.sleep(self.backoff.delay(attempt))
                continue
            if attempt:
                log.info("lane %s: %s recovered after %d retries", self.name, what, attempt)
                self._throttle.reset()
                self.state = LaneState.RUNNING
            return result

    def _working(self) -> AbstractContextManager[None]:
        """Tell a shared log this lane is busy with its store: it keeps its place in the
        convoy (:class:`core.source.SharedLog`). A no-op on a store read directly."""
        working = getattr(self.source, "working", None)
        return working() if working is not None else nullcontext()

    def shown_state(self) -> str:
        """The state ``status`` shows: ``rebuilding`` while a rebuild replays a lane that
        works (starting, running, idle between reads, retrying), else :attr:`state`."""
        working = (LaneState.STARTING, LaneState.RUNNING, LaneState.IDLE, LaneState.RETRYING)
        if self.rebuilding and self.state in working:
            return LaneState.REBUILDING.value
        return self.state.value

    def _away(self) -> AbstractContextManager[None]:
        """Tell a shared log this lane waits out a store failure: the others go on."""
        away = getattr(self.source, "away", None)
        return away() if away is not None else nullcontext()

    # -- the loop --------------------------------------------------------------------------

    async def start(self) -> Pending:
        """Prepare the target and read the checkpoint and blocked keys."""
        await self._retrying("preparing the target", lambda: self.sink.prepare(self.target))
        self.checkpoint = await self._retrying(
            "reading the checkpoint", lambda: self.sink.read_checkpoint(self.target)
        )
        if (checkpoint := self.checkpoint) is not None:
            await self._retrying(
                "checking the checkpoint against the log",
                lambda: self.store.check_reachable(checkpoint, self.name),
            )
        letters = await self._retrying(
            "reading dead letters", lambda: self.dead_letters.find(self.name, "any")
        )
        still = {d.event_id for d in letters if d.status == "parked"}
        # A letter held behind one that is no longer parked (skipped, retried, resolved) is
        # released with it: retried like it, so the stream is not held by the first of them.
        released = {
            d.event_id
            for d in letters
            if d.status == "parked" and d.blocked_by is not None and d.blocked_by not in still
        }
        parked = [d for d in letters if d.event_id in still - released]
        self._blocked = {}
        for letter in sorted(parked, key=lambda d: d.stream_version):
            # the first one blocks; its stream's earlier events are applied as usual
            self._blocked.setdefault(letter.stream_id, (letter.event_id, letter.stream_version))
        self._skipped = {d.event_id for d in letters if d.status == "skipped"}
        self._retried = {d.event_id for d in letters if d.status == "retry"} | released
        self.stats.parked = len(parked)
        return Pending(position=self.checkpoint or START)

    async def run(self, *, until_caught_up: bool = False) -> None:
        """Run until cancelled (or, with ``until_caught_up``, until at the head and flushed).

        Returns early, with state ``halted``, when a permanent error meets the halt policy.
        While behind the head, the next chunk of the log is read while this one is folded and
        written (:class:`~core.readahead.ReadAhead`).
        """
        arrive = getattr(self.source, "arrive", None)
        if arrive is not None:  # a shared log keeps its window for this lane's first read
            arrive()
        try:
            pending = await self.start()
            self.state = LaneState.RUNNING
            failed: BaseException | None = None
            async with anyio.create_task_group() as group:
                try:
                    await self._loop(pending, ReadAhead(self.source, group), until_caught_up)
                except anyio.get_cancelled_exc_class():
                    raise
                except BaseException as exc:  # raised as itself below, not in an exception group
                    failed = exc
                finally:
                    group.cancel_scope.cancel()
            if failed is not None:
                raise failed
        finally:
            leave = getattr(self.source, "leave", None)
            if leave is not None:  # a shared log stops waiting for this lane
                leave()

    async def _loop(self, pending: Pending, source: ReadAhead, until_caught_up: bool) -> None:
        behind = True
        while True:
            threshold = self._threshold(behind)
            limit = max(1, min(self.strategy.read_size, threshold - pending.events))
            seen = source.notifications
            events = await self._retrying(
                "reading the log", partial(source.read, pending.position, limit)
            )
            if events:
                self.state = LaneState.RUNNING
                if pending.started is None:
                    pending.started = monotonic()
                halted = await self._fold(events, pending)
                if halted:
                    if self._unflushed(pending) or pending.parked:
                        await self._flush(pending)
                    await self._finish_deferred()
                    self.state = LaneState.HALTED
                    return
            at_head = len(events) < limit
            behind = not at_head
            if self._due(pending, behind) or (
                until_caught_up and at_head and self._unflushed(pending)
            ):
                pending = await self._flush(pending, catching_up=behind)
            if at_head and not self._unflushed(pending):
                await self._finish_deferred()
                if until_caught_up:
                    self.state = LaneState.IDLE
                    return
                self.state = LaneState.IDLE
            if at_head:
                await source.wait_for_new(self._wait_time(pending), seen, pending.position)

    async def _finish_deferred(self) -> None:
        """Let the sink do what it deferred for the last batch, which was ``catching_up``."""
        if self._sink_deferred:
            await self._retrying(
                "finishing what the sink deferred", partial(self.sink.finish_deferred, self.target)
            )
            self._sink_deferred = False

    def _unflushed(self, pending: Pending) -> bool:
        return pending.position != (self.checkpoint or START)

    def _threshold(self, behind: bool) -> int:
        """Events per flush: ``catch_up_batch`` while behind the head (larger than an
        immediate lane's batch, so a replay writes each document once per many events; smaller
        than a batch lane's, so a rebuild's memory stays bounded), ``max_batch`` at the head;
        never more than the sink takes in one batch."""
        events = self.strategy.catch_up_batch if behind else self.strategy.max_batch
        return min(events, self.sink.capabilities.max_batch_operations)

    def _due(self, pending: Pending, behind: bool) -> bool:
        if not self._unflushed(pending):
            return False
        if self._flush_now or pending.events >= self._threshold(behind):
            return True
        if behind:
            return False
        started = pending.started if pending.started is not None else monotonic()
        return monotonic() - started >= self.strategy.max_delay

    def _wait_time(self, pending: Pending) -> float:
        if not self._unflushed(pending) or pending.started is None:
            return self.idle_poll
        left = self.strategy.max_delay - (monotonic() - pending.started)
        return max(0.0, min(left, self.idle_poll))

    def request_flush(self) -> None:
        """Flush what is pending at the next turn of the loop (batch lanes' "flush now")."""
        self._flush_now = True

    # -- folding ---------------------------------------------------------------------------

    async def _fold(self, events: list[EventEnvelope], pending: Pending) -> bool:
        """Fold a chunk into ``pending``; True when the lane must halt after flushing."""
        projection = self.projection
        gap_events: dict[str, list[EventEnvelope]] = {}
        relevant = [e for e in events if projection.accepts(e)]
        if isinstance(projection, DocumentProjection):
            await self._load(relevant, pending)
            gaps = self._unblocked(plan_gaps(projection, relevant, pending))
            for stream_id, low, high in gaps:
                found = await self._retrying(
                    f"reading stream {stream_id} to repair a gap",
                    partial(self.store.read_stream, stream_id, low, high),
                )
                gap_events.setdefault(stream_id, []).extend(found)
        to_decode = relevant + [e for found in gap_events.values() for e in found]
        decoded: dict[Any, Any] = {}
        for envelope in to_decode:
            if projection.handler_for(envelope.event_type) is None:
                continue
            try:
                decoded[envelope.event_id] = decode_or_fail(projection, envelope)
            except EventFailed as failed:
                decoded[envelope.event_id] = failed
        lookups = await self._lookup(lookups_needed(projection, decoded.values()))
        every = len(relevant) == len(events)
        for envelope in events:
            if every or projection.accepts(envelope):
                waiting = gap_events.get(envelope.stream_id)
                while waiting and waiting[0].stream_version < envelope.stream_version:
                    gap = waiting.pop(0)
                    pending.gaps_repaired += 1
                    if self._apply(gap, decoded, lookups, pending):
                        return True
                if self._apply(envelope, decoded, lookups, pending):
                    return True
            pending.position = envelope.position
            pending.events += 1
        return False

    def _unblocked(self, gaps: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """The parts of ``gaps`` below their stream's parked event (none in a stream without
        one): versions from the parked one on are held behind it, not read."""
        out = []
        for stream_id, low, high in gaps:
            blocker = self._blocked.get(stream_id)
            if blocker is not None:
                high = min(high, blocker[1] - 1)
            if low <= high:
                out.append((stream_id, low, high))
        return out

    def _apply(
        self,
        envelope: EventEnvelope,
        decoded: dict[Any, Any],
        lookups: dict[LookupKey, Any],
        pending: Pending,
    ) -> bool:
        """Apply one event; True means halt (nothing of this event was applied).

        A stream with a parked event holds that event's later versions (parked too, "held
        behind" it) and applies its earlier ones as usual: a lane that replays from an older
        checkpoint (a stop between parking and the sink's write, or a rebuild) meets them
        again. The parked event itself, or one already parked in this batch, met again (a gap
        repair read it before its turn in the log), is a no-op.
        """
        key = envelope.stream_id
        blocker = self._blocked.get(key)
        if blocker is not None and envelope.stream_version >= blocker[1]:
            if envelope.event_id == blocker[0] or envelope.event_id in pending.parked_ids:
                return False
            state = pending.docs.get(key)
            if state is not None and envelope.stream_version <= state.version:
                pending.duplicates += 1
                return False
            self._park(envelope, pending, f"held behind parked event {blocker[0]}", blocker[0])
            return False
        try:
            skip = envelope.event_id in self._skipped
            decoded_event = decoded.get(envelope.event_id)
            apply_event(self.projection, envelope, decoded_event, lookups, pending, skip)
            if envelope.event_id in self._retried:
                pending.resolved.append(envelope.event_id)
        except EventFailed as failed:
            self.stats.last_error = str(failed.cause)
            if self.policy is ErrorPolicy.HALT:
                self.halted_at = envelope.position
                log.error(
                    "lane %s halted at %s: %s. It stops here at every start until the cause is "
                    'fixed (the projection, its lookups or the event\'s data); policy = "park" '
                    "parks such an event and goes on (docs/operations.md, Dead letters)",
                    self.name,
                    envelope.position,
                    failed.cause,
                )
                return True
            self._park(envelope, pending, str(failed.cause), None)  # its own failure
            if blocker is None or envelope.stream_version < blocker[1]:
                self._blocked[key] = (envelope.event_id, envelope.stream_version)
        return False

    def _park(
        self, envelope: EventEnvelope, pending: Pending, error: str, blocked_by: UUID | None
    ) -> None:
        """Park ``envelope`` with ``error``; ``blocked_by``: the parked event it is held behind
        (``None`` for an event that failed itself)."""
        pending.parked.append(DeadLetter.of(self.name, envelope, error, blocked_by))
        pending.parked_ids.add(envelope.event_id)
        self.stats.parked += 1
        log.warning(
            "lane %s parked event %s at %s: %s",
            self.name,
            envelope.event_id,
            envelope.position,
            error,
        )

    async def _load(self, relevant: list[EventEnvelope], pending: Pending) -> None:
        """Put every document the chunk touches in ``pending.docs``: loaded from the sink,
        or new (version 0) without a round trip when the stream starts in this chunk.

        A stream whose first event here is version 1 has no earlier state to fold on, so
        nothing is loaded for it. If the sink holds it anyway (a replay after a lost
        checkpoint), the fold starts again from version 1 and every write it makes is one the
        sink's version guard refuses or one that is newer than what is stored, computed from
        the whole stream: correct either way, so the guard, not the load, decides. Streams
        held behind a parked event, and projections keyed by something other than the stream
        id, are always loaded.
        """
        projection = self.projection
        assert isinstance(projection, DocumentProjection)
        docs = pending.docs
        keys: set[str] = set()
        for envelope in relevant:
            key = projection.key(envelope)
            if key in docs or key in keys:
                continue
            if (
                envelope.stream_version == 1
                and key == envelope.stream_id
                and key not in self._blocked
            ):
                docs[key] = DocState(0, None)
            else:
                keys.add(key)
        if not keys:
            return
        stored = await self._retrying(
            "loading documents", lambda: self.sink.load(self.target, sorted(keys))
        )
        for key in keys:
            found = stored.get(key)
            docs[key] = DocState(found.version, found.document) if found else DocState(0, None)

    async def _lookup(self, needed: set[LookupKey]) -> dict[LookupKey, Any]:
        if not needed:
            return {}
        by_source: dict[str, set[str]] = defaultdict(set)
        for source, entity_id in needed:
            by_source[source].add(entity_id)
        out: dict[LookupKey, Any] = {}
        for source, ids in by_source.items():

            async def fetch(s: str = source, i: set[str] = ids) -> Any:
                try:
                    return await self.lookups.fetch(s, i)
                except ProjectionistError:
                    raise
                except DRIVER_ERRORS as exc:  # the event store's pool, which providers get
                    error = translate_pg_error(exc, f"lookup {s}")
                    if isinstance(error, TransientError):  # a connection, a timeout, a restart
                        raise LookupUnavailable(str(error)) from exc
                    raise error from exc
                except Exception as exc:
                    # Anything else is the provider's own failure: the same call fails the
                    # same way, so retrying would loop for ever on this chunk.
                    raise PermanentError(
                        f"lookup {s} raised {type(exc).__name__}: {exc}; a defect of the "
                        f"lookup provider {type(self.lookups).__name__} (a provider raises "
                        "LookupUnavailable for a passing failure): fix it and restart; the "
                        "lane stops here rather than retry for ever"
                    ) from exc

            found = await self._retrying(f"looking up {source}", fetch)
            out.update({(source, k): v for k, v in found.items()})
        return out

    # -- flushing --------------------------------------------------------------------------

    async def _flush(self, pending: Pending, *, catching_up: bool = False) -> Pending:
        """Write the pending operations with the new checkpoint.

        Every attempt runs to its end even when the lane is cancelled (SIGTERM): a healthy
        store finishes the flush; a store that stays down is given up between attempts, which
        is safe because the checkpoint only moves with the data."""
        batch = Batch(
            lane=self.name,
            operations=pending.operations(),
            expected_checkpoint=self.checkpoint,
            checkpoint=pending.position,
            events=pending.events,
            catching_up=catching_up,
        )
        started = monotonic()
        if pending.parked:
            letters = list(pending.parked)
            await self._retrying(
                "parking events", lambda: self.dead_letters.park(letters), shielded=True
            )
        batch = await self._write_parking_rejected(batch, pending)
        if pending.resolved:
            done = list(pending.resolved)
            await self._retrying(
                "resolving retried events",
                lambda: self.dead_letters.set_status(self.name, done, "resolved"),
                shielded=True,
            )
            self._retried.difference_update(done)
        self.checkpoint = batch.checkpoint
        self._flush_now = False
        self._sink_deferred = catching_up
        self._record(pending, monotonic() - started)
        return pending.flushed(self.document_cache)

    async def _write(self, batch: Batch) -> None:
        """One attempt to write ``batch``; an ambiguous commit is resolved by the checkpoint.

        A batch whose commit answer was lost stays "in doubt" until resolved: if the re-read
        fails too, the retry may find the batch's own checkpoint already stored, which is the
        batch having landed, not another runner.
        """
        try:
            await self.sink.write(self.target, batch)
        except AmbiguousCommit:
            self._in_doubt = batch.checkpoint
            found = await self.sink.read_checkpoint(self.target)
            if found == batch.checkpoint:
                self._in_doubt = None
                return  # it landed
            if found != batch.expected_checkpoint:
                raise CheckpointConflict(self.name, batch.expected_checkpoint, found) from None
            raise  # it did not land: retry the same batch
        except CheckpointConflict:
            if self._in_doubt != batch.checkpoint:
                raise
            if await self.sink.read_checkpoint(self.target) != batch.checkpoint:
                raise
        self._in_doubt = None

    def _record(self, pending: Pending, seconds: float) -> None:
        stats = self.stats
        stats.events += pending.events
        stats.batches += 1
        stats.duplicates += pending.duplicates
        stats.ignored += pending.ignored
        stats.gaps_repaired += pending.gaps_repaired
        stats.last_flush_at = monotonic()
        stats.batch_seconds = [*stats.batch_seconds[-99:], seconds]
        stats.batch_events = [*stats.batch_events[-99:], pending.events]
        self._flushed.set()
        self._flushed = anyio.Event()
        if self.on_progress is not None:
            self.on_progress(self)

    async def wait_for(self, position: Position, timeout: float) -> bool:
        """Read-your-writes: True once the durable checkpoint is at or past ``position``."""
        with anyio.move_on_after(timeout):
            while self.checkpoint is None or self.checkpoint < position:
                await self._flushed.wait()
            return True
        return False

    async def reset(self) -> None:
        """Clear the read model, checkpoint and dead letters (but for the skipped ones, which
        stay skipped): a rebuild starts from nothing."""
        self.state = LaneState.REBUILDING
        await self._retrying("resetting the target", lambda: self.sink.reset(self.target))
        await self._retrying("clearing dead letters", lambda: self.dead_letters.clear(self.name))
        self.checkpoint = None
        self._blocked = {}
        self.stats = LaneStats()
