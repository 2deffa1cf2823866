"""The files of one DuckDB database, named from the working file's path.

For ``/data/analytics.duckdb``:

* ``analytics.duckdb`` (+ ``.wal``): the working file. Only the runner opens it, read-write.
* ``analytics.duckdb.lock``: held (``flock``) by the runner that owns the working file; it
  holds that runner's pid, host and start time, so a second runner can say who is in the way.
* ``analytics.snapshot-00000042.duckdb``: immutable snapshots (mode 0444), one per flush.
* ``analytics.current.duckdb``: a symlink to the newest snapshot, swapped atomically. This is
  what dashboards open, read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ("Layout",)

_SEQUENCE_DIGITS = 8


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths derived from the working file; no I/O except :meth:`snapshots`."""

    working: Path

    @property
    def stem(self) -> str:
        return self.working.stem

    @property
    def suffix(self) -> str:
        return self.working.suffix or ".duckdb"

    @property
    def folder(self) -> Path:
        return self.working.parent

    @property
    def wal(self) -> Path:
        return self.working.with_name(self.working.name + ".wal")

    @property
    def lock(self) -> Path:
        return self.working.with_name(self.working.name + ".lock")

    @property
    def current(self) -> Path:
        """The symlink readers open: always points at a complete snapshot."""
        return self.folder / f"{self.stem}.current{self.suffix}"

    def snapshot(self, sequence: int) -> Path:
        return self.folder / f"{self.stem}.snapshot-{sequence:0{_SEQUENCE_DIGITS}d}{self.suffix}"

    def _pattern(self) -> re.Pattern[str]:
        digits = rf"\.snapshot-(\d{{{_SEQUENCE_DIGITS}}})"
        return re.compile(re.escape(self.stem) + digits + re.escape(self.suffix))

    def snapshots(self) -> list[tuple[int, Path]]:
        """Published snapshot files as ``(sequence, path)``, oldest first."""
        pattern = self._pattern()
        found: list[tuple[int, Path]] = []
        if not self.folder.is_dir():
            return found
        for path in self.folder.iterdir():
            match = pattern.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def leftovers(self) -> list[Path]:
        """Temporary files of a publish that a killed runner did not finish."""
        prefix = f"{self.stem}."
        return [
            p
            for p in self.folder.iterdir()
            if p.name.startswith(prefix) and p.name.endswith(".publishing")
        ]
