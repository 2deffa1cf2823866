"""Settings of the DuckDB sink (frozen). A DuckDB file has no secrets: only a path."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import ConfigurationError

__all__ = ("DuckDBSinkSettings",)

_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_MEMORY = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>%|[kmgt]i?b|b)")


class DuckDBSinkSettings(BaseModel):
    """Where the working file lives and how snapshots are published.

    One sink instance owns one working file: every lane on it shares one worker-thread slot
    (DuckDB allows one writing process per file, and its connection is used by one thread at a
    time). Dashboards never open ``path``: they open the published snapshot (see
    :mod:`sinks.duckdb.reader`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    """The working file, e.g. ``/var/lib/projectionist/analytics.duckdb``."""
    publish_snapshots: bool = True
    """Publish an immutable snapshot after committed writes (the dashboard protocol)."""
    catch_up_publish_seconds: float = Field(default=30.0, ge=0.0, le=86_400.0)
    """While a lane catches up (its batch says more of the log is waiting), publish at most
    this often; 0 publishes after every write. A write at the head is always published, and
    so is what was deferred when the lane reaches the head or halts
    (:meth:`~sinks.duckdb.DuckDBSink.finish_deferred`) or the sink closes. A publish copies the
    whole file (no reflink on ext4), so publishing every catch-up batch made a rebuild's cost
    grow with the square of the history (bench/README.md)."""
    keep_snapshots: int = Field(default=3, ge=2, le=100)
    """Snapshots kept on disk; older ones are deleted (a reader that has one open keeps it)."""
    chunk_rows: int = Field(default=50_000, ge=1, le=1_000_000)
    """Documents per Arrow table; a larger batch is split into chunks of one transaction."""
    threads: int | None = Field(default=None, ge=1, le=256)
    """DuckDB worker threads (``None``: DuckDB's default, one per core)."""
    memory_limit: str | None = "25MB"
    """DuckDB's ``memory_limit``: a size with its unit (``"100MB"``, ``"2GB"``, ``"512MiB"``,
    at least 16MB) or a share of the RAM (``"10%"``); ``"80%"`` or ``None`` is DuckDB's own
    default. DuckDB caches the tables' blocks up to it (what does not fit is read back from the
    working file), so without a limit the runner grows with the analytics tables: at
    1,000,000 events the five reference lanes in one runner peaked at 467-497 MB without it,
    356-368 MB with ``"100MB"``, 311-313 MB with ``"50MB"`` and 285-292 MB with ``"25MB"``
    (decision 0012). A flush, load or checkpoint that does not fit the limit (a document of
    tens of MiB) runs once without it, with a warning (see :class:`~sinks.duckdb.DuckDBSink`)."""

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = _MEMORY.fullmatch(value.strip().lower())
        share = found is not None and found["unit"] == "%"
        if found is None or (share and not 0 < float(found["amount"]) <= 100):
            raise ConfigurationError(
                "duckdb.memory_limit",
                value,
                'give a size with its unit, such as "100MB", "2GB" or "512MiB", or a share of '
                'the RAM such as "10%"',
            )
        if not share and float(found["amount"]) * _UNITS[found["unit"]] < 16 * 1000**2:
            raise ConfigurationError(
                "duckdb.memory_limit",
                value,
                'give at least "16MB": below that DuckDB fails ordinary statements with "Out of '
                'Memory" (4MB could not build a table of 200,000 short rows)',
            )
        return value.strip()  # the sink quotes it into ``SET memory_limit`` as it is

    @field_validator("path")
    @classmethod
    def _file(cls, value: Path) -> Path:
        text = str(value)
        if not text or text == ":memory:" or text.endswith(("/", ".wal", ".lock")):
            raise ConfigurationError(
                "duckdb.path",
                text,
                "name a database file such as /var/lib/projectionist/analytics.duckdb "
                "(not :memory:, a folder, a .wal or a .lock file)",
            )
        if ".current." in value.name or ".snapshot-" in value.name:
            raise ConfigurationError(
                "duckdb.path",
                text,
                "that is a published snapshot name; the sink needs the working file's path",
            )
        return value.expanduser().absolute()
