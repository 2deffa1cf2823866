"""Settings of the DuckDB sink (frozen). A DuckDB file has no secrets: only a path."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import ConfigurationError

__all__ = ("DuckDBSinkSettings",)


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
    """Publish an immutable snapshot after every committed write (the dashboard protocol)."""
    keep_snapshots: int = Field(default=3, ge=2, le=100)
    """Snapshots kept on disk; older ones are deleted (a reader that has one open keeps it)."""
    chunk_rows: int = Field(default=50_000, ge=1, le=1_000_000)
    """Documents per Arrow table; a larger batch is split into chunks of one transaction."""
    threads: int | None = Field(default=None, ge=1, le=256)
    """DuckDB worker threads (``None``: DuckDB's default, one per core)."""
    memory_limit: str | None = None
    """DuckDB ``memory_limit`` such as ``"2GB"``; ``None``: DuckDB's own default, 80% of RAM.
    DuckDB keeps the blocks and indexes of a growing table in memory up to it. Measured at
    1,000,000 events (bench/README.md): the lane alone peaked at 387 MB without a limit and at
    304 MB with ``"100MB"`` in the same time, but with all five reference lanes in one runner
    ``"100MB"`` cut the peak from 484 to 372 MB and doubled the rebuild (267 to 535 s)."""

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
