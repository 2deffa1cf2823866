"""DuckDB exceptions translated into the core error tree, at the sink boundary.

* The file is locked by another process, I/O failed, memory ran out, the statement was
  interrupted, a transaction conflicted or the database instance was invalidated:
  :class:`~core.errors.StoreUnavailable` (transient; the sink reopens the file on the next
  call). A failure while ``COMMIT`` runs is an :class:`~core.errors.AmbiguousCommit`.
* A constraint, conversion or range error: :class:`~core.errors.PermanentError` (values are
  checked per document before any SQL runs, so these point at a schema or sink defect).
* A second runner on the same working file: :class:`FileInUse`, raised before DuckDB is asked.
* A path that holds something other than a DuckDB database, or a database of a DuckDB
  version this one cannot read: :class:`~core.errors.ConfigurationError` naming the path and
  the fix (it is an ``IOException`` too, but retrying cannot help).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from core.errors import (
    AmbiguousCommit,
    ConfigurationError,
    PermanentError,
    ProjectionistError,
    StoreUnavailable,
)

__all__ = ("FileInUse", "lock_holder", "translate_duckdb_error")

_TRANSIENT = (
    duckdb.IOException,
    duckdb.OutOfMemoryException,
    duckdb.InterruptException,
    duckdb.TransactionException,
    duckdb.FatalException,
    duckdb.InternalException,
    duckdb.ConnectionException,
)
_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")
_NOT_READABLE = re.compile(
    r"not a valid DuckDB database file|database file with version number|"
    r"created with (a|an) (newer|older) version|storage version",
    re.IGNORECASE,
)


class FileInUse(ConfigurationError):
    """Another runner holds the working file (its lock file): this one must not start."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            "duckdb.path",
            str(path),
            f"another runner holds this file ({holder}); DuckDB allows one writing process per "
            "file. Stop that runner, or give this one its own file. Dashboards do not need the "
            "working file: they open the published snapshot read-only",
        )


def lock_holder(exc: BaseException) -> str | None:
    """``"<program> (pid N)"`` from DuckDB's lock-conflict message, else ``None``."""
    match = _HOLDER.search(str(exc))
    if match is None:
        return None
    return f"{match['program']} (pid {match['pid']})"


def translate_duckdb_error(
    exc: BaseException, what: str, path: Path, *, in_commit: bool = False
) -> ProjectionistError:
    """The core error for ``exc`` raised while doing ``what`` on the working file ``path``."""
    holder = lock_holder(exc)
    if holder is not None:
        current = path.with_name(f"{path.stem}.current{path.suffix or '.duckdb'}")
        return StoreUnavailable(
            f"{what}: {path} is open in another process, {holder}. Only the runner may open "
            f"the working file; dashboards open {current} read-only "
            "(sinks.duckdb.reader.open_current). Retrying until that process lets go."
        )
    text = f"{what} ({path}): {type(exc).__name__}: {exc}"
    if isinstance(exc, duckdb.IOException) and _NOT_READABLE.search(str(exc)):
        return ConfigurationError(
            "duckdb.path",
            str(path),
            f"{exc}; point the sink at a DuckDB file of this DuckDB version "
            f"({duckdb.__version__}) or at a path that does not exist yet (it is created), "
            "or rebuild the read model into a new file",
        )
    if isinstance(exc, OSError | TimeoutError):
        return AmbiguousCommit(text) if in_commit else StoreUnavailable(text)
    if isinstance(exc, duckdb.Error):
        if in_commit:
            return AmbiguousCommit(text)
        if isinstance(exc, _TRANSIENT):
            return StoreUnavailable(text)
        return PermanentError(text)
    return PermanentError(text)
