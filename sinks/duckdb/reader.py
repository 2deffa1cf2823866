"""What a dashboard opens: the newest published snapshot, read-only.

>>> con = open_current("/var/lib/projectionist/analytics.duckdb")  # doctest: +SKIP
>>> con.sql("SELECT count(*) FROM order_analytics").fetchall()  # doctest: +SKIP

Pass the runner's working-file path (the sink's ``path`` setting); the helper resolves the
``<stem>.current.duckdb`` symlink and opens that snapshot with ``read_only=True``. Snapshots
are immutable, so a reader never takes a lock the runner needs and never sees a half-written
flush. Open one connection per refresh (about 10-30 ms) and close it: a connection keeps
showing the snapshot it opened. The session time zone is set to UTC, so ``::DATE`` of a
timestamp is its UTC day in every dashboard.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from sinks.duckdb.layout import Layout

__all__ = ("NoSnapshot", "current_snapshot", "open_current")


class NoSnapshot(FileNotFoundError):
    """No snapshot has been published for this file yet (the runner has not started)."""


def current_snapshot(path: str | Path) -> Path:
    """The snapshot file the ``current`` symlink points at now."""
    layout = Layout(Path(path).expanduser().absolute())
    try:
        return layout.current.resolve(strict=True)
    except FileNotFoundError:
        raise NoSnapshot(
            f"no snapshot of {layout.working} is published yet ({layout.current} is missing): "
            "start the runner with snapshots enabled (publish_snapshots=true)"
        ) from None


def open_current(
    path: str | Path, *, timeout: float = 5.0, time_zone: str = "UTC"
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the newest snapshot of the working file ``path``.

    Retries for up to ``timeout`` seconds when the snapshot it resolved was deleted before it
    could be opened (the runner keeps a few; this only happens to a reader that stalls for
    several flushes between resolving and opening), or when none is published yet.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            con = duckdb.connect(str(current_snapshot(path)), read_only=True)
        except (FileNotFoundError, duckdb.IOException):
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        con.execute(f"SET TimeZone = '{time_zone.replace(chr(39), '')}'")
        return con
