"""The runner as users run it: ``projectionist run`` in a subprocess, configured through the
environment (the default lanes and strategies, with every name moved into a namespace), timed
from launch to exit, with its peak resident memory.

Peak RSS is the kernel's own high-water mark: the runner's ``ru_maxrss`` from ``wait4`` in a
small launcher process (:data:`LAUNCHER`), sampled along the way from ``VmHWM`` in
``/proc/<pid>/status`` together with the events each lane has flushed (the ``lane_status``
rows the runner publishes every 2 s), so a long rebuild shows whether memory grows with the
history's length.

With ``run --processes N`` the launcher's child is the supervisor: the peak is then the sum of
the supervisor's own high-water mark and each runner process's ``ru_maxrss`` (which the
supervisor logs as each exits), an upper bound of what the group held at any one moment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from bench import cpu
from bench.history import BenchLog
from bench.lanes import LANES, lane_options
from bench.places import Services, Where
from core.settings import DEFAULT_SINKS

__all__ = ("BIN", "Process", "children", "rebuild", "runner_env", "start", "stop")

BIN = Path(sys.executable).with_name("projectionist")
SAMPLE_EVERY = 0.5


def runner_env(log: BenchLog, where: Where, services: Services, lanes: list[str]) -> dict[str, str]:
    """The environment of a runner of ``lanes`` on the benchmark's log, writing under
    ``where``; no configuration file (``PROJECTIONIST_CONFIG`` is the null device)."""
    where.folder.mkdir(parents=True, exist_ok=True)
    sinks = {name: s.model_dump(mode="json") for name, s in DEFAULT_SINKS.items()}
    sinks["elasticsearch"]["options"] = {"index_prefix": where.index_prefix}
    if services.duckdb_memory_limit is not None:
        sinks["duckdb"]["options"] = {"memory_limit": services.duckdb_memory_limit}
    configured = [
        {**LANES[name].model_dump(mode="json"), "options": lane_options(name, where)}
        for name in lanes
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")}
    env.update(
        PROJECTIONIST_CONFIG=os.devnull,
        PROJECTIONIST_POSTGRES_DSN=services.dsn,
        PROJECTIONIST_REDIS_URL=services.redis_url,
        PROJECTIONIST_ELASTICSEARCH_URL=services.elasticsearch_url,
        PROJECTIONIST_DUCKDB_PATH=str(where.duckdb_path),
        PROJECTIONIST_EVENT_STORE_SCHEMA=log.schema,
        PROJECTIONIST_READ_MODEL_SCHEMA=where.read_models,
        PROJECTIONIST_SINKS=json.dumps(sinks),
        PROJECTIONIST_LANES=json.dumps(configured),
    )
    return env


def _proc_status(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in MB (empty once it has gone)."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    return out


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (a supervisor's runner processes)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def _lane_events(log: BenchLog, owners: list[str]) -> dict[str, int]:
    rows = await log.store.pool.fetch(
        f"SELECT lane, events FROM {log.schema}.lane_status WHERE owner = ANY($1::text[])",
        owners,
    )
    return {r["lane"]: int(r["events"]) for r in rows}


RUNNER_PEAK = re.compile(r"runner \d+ \(pid \d+; lanes [^)]*\) exited \(0\); peak RSS ([\d.]+) MB")
"""The line :mod:`core.supervisor` logs as each runner process exits."""


LAUNCHER = """
import os, signal, subprocess, sys
out = sys.argv[1]
child = subprocess.Popen(sys.argv[2:])
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda n, _: child.send_signal(n))
with open(out + ".pid", "w") as f:
    f.write(str(child.pid))
_, status, usage = os.wait4(child.pid, 0)
with open(out, "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs the runner as its child and records its ``ru_maxrss``. A child spawned straight from
the benchmark's process would inherit that (large) process's high-water mark at ``exec``; the
launcher is small, so the figure is the runner's own (within the launcher's ~10 MB)."""


@dataclass
class Process:
    """A runner started through the launcher: ``pid`` is the runner's own."""

    launcher: subprocess.Popen[bytes]
    pid: int
    result: Path

    def peak_rss_mb(self) -> float:
        return int(self.result.read_text()) / 1024


async def start(env: dict[str, str], args: list[str], stderr: Path) -> Process:
    result = stderr.with_suffix(".maxrss")
    pid_file = Path(f"{result}.pid")
    command = [sys.executable, "-c", LAUNCHER, str(result), str(BIN), *args]
    launcher = _spawn(command, env, stderr, pid_file)
    with anyio.fail_after(30):
        while not _read(pid_file):  # noqa: ASYNC110 - a file another process writes
            await anyio.sleep(0.02)
    return Process(launcher, int(_read(pid_file)), result)


def _spawn(
    command: list[str], env: dict[str, str], stderr: Path, pid_file: Path
) -> subprocess.Popen[bytes]:
    pid_file.unlink(missing_ok=True)
    with stderr.open("wb") as err:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


async def stop(proc: Process, timeout: float = 30.0) -> int:
    """SIGTERM (the runner finishes its in-flight writes), then SIGKILL after ``timeout``."""
    launcher = proc.launcher
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGTERM)
        with anyio.move_on_after(timeout):
            while launcher.poll() is None:  # noqa: ASYNC110 - a child process, not an event
                await anyio.sleep(0.1)
        if launcher.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    return await anyio.to_thread.run_sync(launcher.wait)


async def rebuild(
    log: BenchLog, env: dict[str, str], stderr: Path, processes: int = 1
) -> dict[str, Any]:
    """``projectionist run --until-caught-up [--processes N]`` from empty targets: seconds,
    peak RSS, and the memory/progress samples. Raises if the runner fails."""
    started = time.perf_counter()
    cpu_before = cpu.snapshot()
    args = ["run", "--until-caught-up"]
    if processes > 1:
        args += ["--processes", str(processes)]
    proc = await start(env, args, stderr)
    host = socket.gethostname()
    samples: list[dict[str, Any]] = []
    own_peak = 0.0
    seconds = 0.0
    try:
        async with anyio.create_task_group() as group:

            async def reap() -> None:
                nonlocal seconds
                await anyio.to_thread.run_sync(proc.launcher.wait, abandon_on_cancel=True)
                seconds = time.perf_counter() - started
                group.cancel_scope.cancel()

            group.start_soon(reap)
            while True:
                memory = _proc_status(proc.pid)
                own_peak = max(own_peak, memory.get("VmHWM", 0.0))
                pids = [proc.pid, *children(proc.pid)]
                if len(pids) > 1:  # a supervisor: the group's resident memory
                    each = [_proc_status(p) for p in pids]
                    memory = {k: sum(m.get(k, 0.0) for m in each) for k in ("VmRSS", "VmHWM")}
                events = await _lane_events(log, [f"{host}:{p}" for p in pids])
                if memory:
                    samples.append(
                        {"t": round(time.perf_counter() - started, 2), **memory, "events": events}
                    )
                await anyio.sleep(SAMPLE_EVERY)
    finally:
        if proc.launcher.poll() is None:
            await stop(proc, timeout=5)
    used = cpu.between(cpu_before, cpu.snapshot())  # the launcher (and so the runner) reaped
    if proc.launcher.returncode != 0:
        raise RuntimeError(f"the runner exited with {proc.launcher.returncode}: {_tail(stderr)}")
    if processes == 1:
        return {**_summary(seconds, proc.peak_rss_mb(), samples, log.events), "cpu": used}
    peaks = _runner_peaks(stderr)
    out = _summary(seconds, own_peak + sum(peaks), samples, log.events)
    out["cpu"] = used
    out["processes"] = processes
    out["runner_peak_rss_mb"] = peaks
    out["supervisor_peak_rss_mb"] = round(own_peak, 1)
    return out


def _runner_peaks(stderr: Path) -> list[float]:
    return [float(p) for p in RUNNER_PEAK.findall(stderr.read_text(errors="replace"))]


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def _summary(
    seconds: float, peak: float, samples: list[dict[str, Any]], events: int
) -> dict[str, Any]:
    first = next((s["t"] for s in samples if s["events"]), None)
    out: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "startup_s": first,
        "peak_rss_mb": round(peak, 1),
        "samples": len(samples),
    }
    if events >= 200_000:
        # The mean lane past 100,000 events: memory by then against memory at the end.
        early = next((s for s in samples if s["events"] and _mean(s["events"]) >= 100_000), None)
        if early is not None:
            out["peak_rss_mb_by_100k"] = round(early["VmHWM"], 1)
            out["t_by_100k"] = early["t"]
    out["rss_curve"] = [
        {"t": s["t"], "rss_mb": round(s["VmRSS"], 1), "events": _mean(s["events"])}
        for s in samples[:: max(1, len(samples) // 40)]
    ]
    return out


def _mean(events: dict[str, int]) -> int:
    return round(sum(events.values()) / len(events)) if events else 0
