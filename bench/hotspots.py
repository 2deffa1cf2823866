"""Where the runner's time goes: py-spy on ``projectionist run`` over the benchmark's log.

    scripts/with-services-env .venv/bin/python -m bench.hotspots
    scripts/with-services-env .venv/bin/python -m bench.hotspots --events 1000000 --keep
    scripts/with-services-env .venv/bin/python -m bench.hotspots --lanes order_summary

Starts the runner as the fan-out part does (:func:`bench.runner.runner_env`: the default lanes
and strategies, every name under the namespace ``bench_hotspots``), from empty targets, under
``py-spy record`` for ``--seconds`` or until it has caught up, whichever comes first. Then
prints the shares of the runner's *main thread* samples (the thread that reads, decodes, folds
and encodes for every lane; DuckDB's writes run on a worker thread and are left out): the
functions with the most samples of their own, and the groups of work that decisions 0006,
0013 and 0014 discuss (:data:`GROUPS`). py-spy's collapsed stacks go to ``--out``, the
summary beside them (``.json``).

Shares are ratios within one run, so they hold on a busy machine where rates do not; compare
two codes by their shares, not by how many events each got through in the time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.history import drop_log, open_log  # noqa: E402
from bench.lanes import LANES  # noqa: E402
from bench.places import Services, Where, clear, one_run_at_a_time  # noqa: E402
from bench.runner import BIN, runner_env  # noqa: E402

__all__ = ("GROUPS", "Profile", "summarize")

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("encoding documents", ("dumps (core/jsontext.py", "JSONEncoder.encode (json/")),
    ("reading the log", ("SharedLog.read (core/source.py", "PostgresEventStore.read (")),
    ("decoding events", ("EventRegistry.decode (core/events.py",)),
    ("fold handlers", ("_call_handler (core/fold.py",)),
    ("shared-fold bookkeeping", ("SharedFolds.get (core/fold.py", "SharedFolds.put (")),
    ("Postgres sink, the rest", ("PostgresSink.write (",)),
    ("Elasticsearch sink, the rest", ("ElasticsearchSink.write (",)),
    ("Redis sink, the rest", ("RedisSink.write (",)),
    ("DuckDB sink, the rest (main thread)", ("DuckDBSink.write (",)),
    ("lane fold, the rest", ("Lane._fold (core/lane.py",)),
    ("lane flush, the rest", ("Lane._flush (core/lane.py",)),
)
"""Groups of work: a sample counts in the first group whose frames appear in its stack, so a
group nested in another (encoding inside a sink's write) is listed first. What no group takes
is "the rest" (the event loop, sockets, status publishing)."""

MAIN_THREAD = "<module> ("
"""A main-thread stack starts at the runner script's module; worker threads start at
``Thread._bootstrap``."""


@dataclass
class Profile:
    """The shares of one runner's main-thread samples."""

    samples: int
    """All samples, every thread."""
    main_samples: int
    groups: dict[str, float] = field(default_factory=dict)
    """Group -> share of the main thread's samples (0-1), the rest under ``"the rest"``."""
    top_self: list[tuple[str, float]] = field(default_factory=list)
    """The frames with the most samples of their own: (frame, share of the main thread's)."""


def summarize(collapsed: str, top: int = 25) -> Profile:
    """The :class:`Profile` of py-spy's raw output (one ``frame;frame;... count`` per line)."""
    total = main = 0
    groups: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        if not stack.startswith(MAIN_THREAD):
            continue
        main += n
        own[stack.rsplit(";", 1)[-1]] += n
        groups[_group(stack)] += n
    if main == 0:
        return Profile(total, 0)
    shares = {name: groups[name] / main for name, _ in GROUPS if groups[name]}
    shares["the rest"] = groups["the rest"] / main
    return Profile(total, main, shares, [(frame, n / main) for frame, n in own.most_common(top)])


def _group(stack: str) -> str:
    for name, patterns in GROUPS:
        if any(p in stack for p in patterns):
            return name
    return "the rest"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: `.venv/bin/pip install -e '.[dev]'`")
    return found


async def record(args: argparse.Namespace, services: Services) -> Profile:
    log = await open_log(services.dsn, args.events, reuse=True)
    tmp = Path(tempfile.mkdtemp(prefix="projectionist-profile-"))
    where = Where("bench_hotspots", tmp / "bench_hotspots")
    try:
        await clear(where, services)
        env = runner_env(log, where, services, args.lanes)
        command = [
            py_spy(), "record", "--rate", str(args.rate), "--duration", str(args.seconds),
            "--format", "raw", "--output", str(args.out),
            "--", str(BIN), "run", "--until-caught-up",
        ]  # fmt: skip
        print(f"== profiling {', '.join(args.lanes)} for up to {args.seconds} s", flush=True)
        # A session of its own: when py-spy stops recording, the runner (its child) is still
        # running, and the whole group is stopped with it.
        stderr = where.folder.parent / "runner.log"
        with stderr.open("wb") as errors:
            proc = await anyio.open_process(
                command, env=env, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
            )
            try:
                await proc.wait()
            finally:
                await anyio.to_thread.run_sync(_stop_group, proc.pid)
        if proc.returncode != 0 or not args.out.exists():
            raise SystemExit(f"py-spy failed ({proc.returncode}); see {stderr}")
    finally:
        await clear(where, services)
        if not args.keep:
            await drop_log(log)
        await log.store.close()
    return summarize(args.out.read_text(), args.top)


def _stop_group(pgid: int) -> None:
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return
        for _ in range(50):  # 5 s for the runner to finish its in-flight writes
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def render(profile: Profile, console: Console) -> None:
    groups = Table(title="The runner's main thread, by group of work")
    groups.add_column("group")
    groups.add_column("share", justify="right")
    for name, share in sorted(profile.groups.items(), key=lambda kv: -kv[1]):
        groups.add_row(name, f"{100 * share:.1f}%")
    console.print(groups)
    top = Table(title="Most samples of their own")
    top.add_column("frame")
    top.add_column("share", justify="right")
    for frame, share in profile.top_self:
        top.add_row(frame, f"{100 * share:.1f}%")
    console.print(top)
    console.print(f"{profile.main_samples:,} main-thread samples of {profile.samples:,}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the log")
    parser.add_argument("--lanes", help=f"comma-separated lanes of: {', '.join(LANES)}")
    parser.add_argument("--seconds", type=int, default=60, help="longest recording (60)")
    parser.add_argument("--rate", type=int, default=200, help="samples per second (200)")
    parser.add_argument("--top", type=int, default=25, help="frames listed (25)")
    parser.add_argument("--keep", action="store_true", help="keep the log for a later run")
    parser.add_argument("--out", type=Path, help="collapsed stacks (bench/results/profile-*)")
    args = parser.parse_args(argv)
    lanes = args.lanes.split(",") if args.lanes else list(LANES)
    unknown = [lane for lane in lanes if lane not in LANES]
    if unknown:
        parser.error(f"--lanes: unknown {', '.join(unknown)}; choose from {', '.join(LANES)}")
    args.lanes = lanes
    if args.seconds < 1 or args.rate < 1:
        parser.error("--seconds and --rate must be at least 1")
    if args.out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        args.out = ROOT / "bench" / "results" / f"profile-{stamp}.txt"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return args


async def main(args: argparse.Namespace) -> Profile:
    services = Services.from_environment()
    async with one_run_at_a_time(services.dsn):
        return await record(args, services)


if __name__ == "__main__":
    arguments = parse()
    result = anyio.run(main, arguments)
    render(result, Console())
    summary = arguments.out.with_suffix(".json")
    summary.write_text(json.dumps({"lanes": arguments.lanes, **asdict(result)}, indent=1))
    print(f"written to {arguments.out} and {summary}")
