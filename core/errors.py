"""The one exception tree of Projectionist.

Every error the platform raises is a :class:`ProjectionistError`. The first split says what
the runner does with it: a :class:`TransientError` is retried with capped exponential backoff;
a :class:`PermanentError` is never retried and follows the lane's error policy (halt or park).
Driver exceptions (asyncpg, elasticsearch, redis, duckdb) are translated into this tree at the
sink boundary, so nothing above a sink ever sees a driver type::

    ProjectionistError
    ├── TransientError                 retry with backoff; the lane state is "retrying"
    │   ├── StoreUnavailable           a service is down, refused, timed out, out of memory
    │   ├── AmbiguousCommit            the connection died during COMMIT: re-read the checkpoint
    │   └── LookupUnavailable          an enrichment lookup failed for a passing reason
    └── PermanentError                 never retried; halt or park per lane policy
        ├── ConfigurationError         bad setting or name: names the field, the value, the fix
        ├── InvalidEvent               an event that can never be stored or decoded
        ├── ConcurrencyError           optimistic concurrency: the stream moved on
        ├── EventLogRestored           the log holds transaction ids from another cluster
        ├── CheckpointConflict         another runner moved this lane's checkpoint
        ├── HandlerFailed              a projection handler raised on one event
        ├── LookupMissing              an enrichment lookup found no such entity
        └── DocumentRejected           the store refused one document (mapping, size)

Messages name the lane, the position and the fix where there is one. Secrets never appear in
them: sinks render DSNs through :func:`core.redact.redact_url` before any message is built.
"""

from __future__ import annotations

from typing import Any

__all__ = (
    "AmbiguousCommit",
    "CheckpointConflict",
    "ConcurrencyError",
    "ConfigurationError",
    "DocumentRejected",
    "EventLogRestored",
    "HandlerFailed",
    "InvalidEvent",
    "LookupMissing",
    "LookupUnavailable",
    "PermanentError",
    "ProjectionistError",
    "StoreUnavailable",
    "TransientError",
)


class ProjectionistError(Exception):
    """Base of every error Projectionist raises."""


class TransientError(ProjectionistError):
    """A passing failure: the same operation may succeed if retried later."""


class PermanentError(ProjectionistError):
    """A failure that retrying cannot fix: the lane's error policy decides what happens."""


class StoreUnavailable(TransientError):
    """A store did not answer, refused the connection, timed out or ran out of memory."""


class AmbiguousCommit(TransientError):
    """The connection was lost while a COMMIT was in flight; the outcome is unknown.

    The runner resolves it by re-reading the lane's checkpoint from the sink.
    """


class LookupUnavailable(TransientError):
    """An enrichment lookup could not be answered right now."""


class ConfigurationError(PermanentError):
    """A setting, name or declaration is invalid. The message names the field, value and fix."""

    def __init__(self, field: str, value: Any, fix: str) -> None:
        self.field = field
        self.value = value
        self.fix = fix
        super().__init__(f"{field}={value!r} is invalid: {fix}")


class InvalidEvent(PermanentError):
    """An event that can never be appended or decoded (size, nesting, encoding, type)."""


class ConcurrencyError(PermanentError):
    """An append expected a stream version that the stream no longer has."""

    def __init__(self, stream_id: str, expected: int | None, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r}: expected version {expected}, but it is at version {actual}; "
            "reload the stream and decide again"
        )


class EventLogRestored(PermanentError):
    """The events table holds transaction ids at or above the server's next transaction id."""


class CheckpointAheadOfLog(PermanentError):
    """A position read or checkpointed earlier lies beyond the server's next transaction id:
    the log lost transactions that were read (a failover that lost its tail, or a restore to
    an earlier point in time), so new events would sort behind that position, unread."""


class CheckpointConflict(PermanentError):
    """Another runner advanced this lane's checkpoint: this one must stop writing."""

    def __init__(self, lane: str, expected: object, found: object) -> None:
        self.lane = lane
        self.expected = expected
        self.found = found
        went_back = (found is None and expected is not None) or (
            isinstance(found, tuple) and isinstance(expected, tuple) and found < expected
        )
        if went_back:
            why = (
                "the store's checkpoint went back (data restored from a backup, or lost by the "
                "store): restart the lane and it replays from the stored checkpoint"
            )
        else:
            why = (
                "another runner owns this lane. Stop one of them, or give each runner its own "
                "lanes with `projectionist run --lane`"
            )
        super().__init__(
            f"lane {lane!r}: checkpoint expected at {expected} but found at {found}; {why}."
        )


class HandlerFailed(PermanentError):
    """A projection handler raised while applying one event."""


class LookupMissing(PermanentError):
    """An enrichment lookup found no entity with that id."""


class DocumentRejected(PermanentError):
    """The store refused one document for good (mapping conflict, too large, bad value)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"document {key!r} rejected: {reason}")
