"""Where a rebuild's CPU went: the runner, each store's server, the harness, and the rest of
the machine, from ``/proc`` (Linux only; elsewhere :func:`snapshot` returns ``None``).

The fan-out target compares all lanes with the slowest alone. On a machine of few cores the
stores' servers share those cores with the runner, so the rebuild cannot take less wall time
than all the CPU work it causes divided by the cores: :func:`between` reports that floor
(``floor_s``) beside the rebuild's own seconds, which says whether the runner's concurrency or
the machine's total work bounds the figure.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ("CpuSnapshot", "between", "process_cpu_s", "snapshot")

_SERVICES = {"postgres": "postgres", "java": "elasticsearch", "redis-server": "redis"}
"""Process names (``comm``) of the stores' servers."""

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSnapshot:
    busy_s: float
    """CPU seconds the whole machine spent busy (all cores, from ``/proc/stat``)."""
    total_s: float
    """CPU seconds the whole machine had (busy and idle)."""
    services_s: dict[str, float]
    """Per store: its live processes' CPU plus what their reaped children used."""
    children_s: float
    """This process's reaped children (the runner and its launcher, once waited for)."""
    self_s: float
    """This process (the harness: sampling, the lanes' progress queries)."""


def _machine() -> tuple[float, float]:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """The name (``comm``) and the fields after it in ``/proc/<pid>/stat``; ``None`` if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()


def _cpu(fields: list[str], reaped: bool) -> float:
    used = fields[11:15] if reaped else fields[11:13]  # utime stime [cutime cstime]
    return sum(int(f) for f in used) / _TICK


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used so far; ``None`` once it has gone."""
    found = _stat(pid)
    return None if found is None else _cpu(found[1], reaped=False)


def _services() -> dict[str, float]:
    out = dict.fromkeys(_SERVICES.values(), 0.0)
    for entry in Path("/proc").iterdir():
        found = _stat(entry.name) if entry.name.isdigit() else None
        service = None if found is None else _SERVICES.get(found[0])
        if found is not None and service is not None:
            out[service] += _cpu(found[1], reaped=True)
    return out


def snapshot() -> CpuSnapshot | None:
    """The counters now, or ``None`` where ``/proc`` is not Linux's."""
    try:
        busy, total = _machine()
        services = _services()
    except (OSError, ValueError, IndexError):
        return None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(
        busy_s=busy,
        total_s=total,
        services_s=services,
        children_s=children.ru_utime + children.ru_stime,
        self_s=own.ru_utime + own.ru_stime,
    )


def between(before: CpuSnapshot | None, after: CpuSnapshot | None) -> dict[str, Any] | None:
    """CPU seconds between two snapshots, by part, with the machine's busy share and the
    wall-time floor (all the busy CPU divided by the cores). The runner's share is exact only
    once it has been waited for; take ``after`` then."""
    if before is None or after is None:
        return None
    cores = os.cpu_count() or 1
    busy = after.busy_s - before.busy_s
    total = after.total_s - before.total_s
    parts = {
        "runner": after.children_s - before.children_s,
        **{k: after.services_s[k] - before.services_s[k] for k in after.services_s},
        "harness": after.self_s - before.self_s,
    }
    parts["rest"] = max(0.0, busy - sum(parts.values()))
    return {
        "cpu_s": {k: round(v, 1) for k, v in parts.items()},
        "busy_cpu_s": round(busy, 1),
        "machine_busy_share": round(busy / total, 3) if total else None,
        "floor_s": round(busy / cores, 1),
    }
