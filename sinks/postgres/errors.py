"""asyncpg exceptions to the core error tree, at the sink's boundary.

* connection lost, refused, timed out, too many connections, serialization failure, deadlock,
  admin shutdown, a lock not available (``lock_timeout``), a read-only transaction (a standby
  during a failover): :class:`~core.errors.StoreUnavailable` (retried);
* the connection lost while ``COMMIT`` was in flight: :class:`~core.errors.AmbiguousCommit`
  (the lane re-reads the checkpoint to learn whether it landed);
* a value the database refuses (SQLSTATE classes 22 data, 23 integrity, 54 limits): located
  to one document and raised as :class:`~core.errors.DocumentRejected` by the sink;
* anything else: :class:`~core.errors.PermanentError`.

Messages are redacted: no DSN password ever appears in them.
"""

from __future__ import annotations

import asyncpg

from core.errors import AmbiguousCommit, PermanentError, ProjectionistError, StoreUnavailable
from core.pgerrors import DRIVER_ERRORS, translate_pg_error
from core.redact import redact_text

__all__ = ("DRIVER_ERRORS", "is_data_error", "translate")

_DATA_CLASSES = ("22", "23", "54")


def is_data_error(exc: BaseException) -> bool:
    """A value of one row was refused (bad data, constraint, too large): not retryable."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    return (exc.sqlstate or "").startswith(_DATA_CLASSES)


def translate(
    exc: BaseException, what: str, *, in_commit: bool = False, secrets: tuple[str, ...] = ()
) -> ProjectionistError:
    """The core error for ``exc`` raised while doing ``what``; its text redacted."""
    if isinstance(exc, asyncpg.InvalidCachedStatementError):
        # A concurrent schema change invalidated a prepared statement: asyncpg drops it
        # from its cache, so the retried batch prepares it afresh.
        error: ProjectionistError = StoreUnavailable(f"{what}: {exc}")
    else:
        error = translate_pg_error(exc, what, in_commit=in_commit)
    text = redact_text(str(error), secrets)
    for kind in (AmbiguousCommit, StoreUnavailable, PermanentError):
        if type(error) is kind:
            return kind(text)
    return error
