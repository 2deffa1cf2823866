"""The DuckDB sink: document read models (and their child rows) in one DuckDB file, written in
one transaction with the lane's checkpoint and published as immutable snapshots that
dashboards open read-only. See docs/sinks/duckdb.md."""

from __future__ import annotations

import os

# DuckDB allocates through its own jemalloc, which keeps freed pages for 10 s by default: in
# a runner that writes a batch every few seconds that is 20-80 MB of resident memory holding
# nothing (measured: bench/README.md, memory). Return them at once, unless the operator says
# otherwise; it must be set before DuckDB's first allocation, so before it is imported.
os.environ.setdefault("DUCKDB_JE_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

from typing import Any

from pydantic import ValidationError

from core.errors import ConfigurationError
from sinks.duckdb.config import DuckDBSinkSettings
from sinks.duckdb.errors import FileInUse
from sinks.duckdb.layout import Layout
from sinks.duckdb.reader import NoSnapshot, current_snapshot, open_current
from sinks.duckdb.sink import DuckDBSink

__all__ = (
    "DuckDBSink",
    "DuckDBSinkSettings",
    "FileInUse",
    "Layout",
    "NoSnapshot",
    "create_sink",
    "current_snapshot",
    "open_current",
)


def create_sink(name: str, settings: Any, options: dict[str, Any]) -> DuckDBSink:
    """The factory named in the settings (``sinks.duckdb:create_sink``).

    The working file is ``options["path"]``, else ``settings.duckdb_path``
    (``PROJECTIONIST_DUCKDB_PATH``); other options are :class:`DuckDBSinkSettings` fields.
    """
    options = dict(options)
    path = options.pop("path", None) or getattr(settings, "duckdb_path", None)
    if path is None:
        raise ConfigurationError(
            "duckdb_path",
            None,
            "set PROJECTIONIST_DUCKDB_PATH to the working file, e.g. "
            "/var/lib/projectionist/analytics.duckdb",
        )
    try:
        return DuckDBSink(DuckDBSinkSettings(path=path, **options), name=name)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "sinks.duckdb.options." + ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(field, first.get("input"), first["msg"]) from None
