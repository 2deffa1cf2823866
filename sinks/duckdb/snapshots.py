"""Publishing immutable snapshots of the working file for readers (the dashboard protocol).

After a write commits, :func:`publish` (still inside the file's one worker-thread slot, so no
write can interleave):

1. ``CHECKPOINT``: every committed change moves from the WAL into the working file, so the
   file alone is a complete, consistent database (checked: the WAL is empty afterwards);
2. copies the file to ``<stem>.snapshot-<n>.<suffix>.publishing`` (a reflink where the file
   system can, else a kernel-side copy), fsyncs it and makes it read-only (mode 0444);
3. renames it to ``<stem>.snapshot-<n>.<suffix>`` and swaps the ``<stem>.current.<suffix>``
   symlink to it with one ``rename`` (atomic), then fsyncs the folder;
4. deletes all but the newest ``keep`` snapshots. A reader that still has an older one open
   keeps reading it (POSIX unlink semantics); its space is freed when it closes.

A reader therefore always opens a complete snapshot: the old one or the new one, never a
half-written file, and it never takes a lock the runner needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

import duckdb

from core.errors import StoreUnavailable
from sinks.duckdb.layout import Layout

__all__ = ("clean_leftovers", "publish")

_FICLONE = 0x40049409  # Linux ioctl: share the file's extents (btrfs, XFS, bcachefs)


def _copy(source: Path, target: Path) -> None:
    """A reflink where the file system has them, else :func:`shutil.copyfile`, which copies in
    the kernel (``sendfile``) on Linux: the file's bytes never pass through this process,
    whose memory a copy through a buffer raised at every publish. Durable when it returns."""
    with source.open("rb") as src, target.open("wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        except OSError:
            pass
        else:
            os.fsync(dst.fileno())
            return
    shutil.copyfile(source, target)
    _fsync(target)


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_leftovers(layout: Layout) -> None:
    """Remove temporary files of a publish that a killed runner left behind."""
    for path in layout.leftovers():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def publish(con: duckdb.DuckDBPyConnection, layout: Layout, sequence: int, keep: int) -> Path:
    """Publish the working file as snapshot ``sequence``; returns the snapshot's path."""
    con.execute("CHECKPOINT")
    if layout.wal.exists() and layout.wal.stat().st_size > 0:
        con.execute("FORCE CHECKPOINT")
        if layout.wal.exists() and layout.wal.stat().st_size > 0:
            raise StoreUnavailable(
                f"{layout.working}: the WAL is not empty after CHECKPOINT, so the file is not "
                "yet complete on its own; the snapshot is published after the next write"
            )
    final = layout.snapshot(sequence)
    partial = final.with_name(final.name + ".publishing")
    _copy(layout.working, partial)
    partial.chmod(0o444)
    partial.replace(final)
    link = layout.current.with_name(layout.current.name + ".publishing")
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(final.name)
    link.replace(layout.current)
    _fsync(layout.folder)
    for _, old in layout.snapshots()[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    return final
