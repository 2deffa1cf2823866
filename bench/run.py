"""The benchmark in one command: throughput, freshness and memory against raw ceilings and
baselines, on one fixed-seed order history, in one run (see bench/README.md).

    make bench                                   # 100,000 events, every part
    .venv/bin/python bench/run.py --quick        # a smoke-size run (about two minutes)
    .venv/bin/python bench/run.py --events 1000000
    .venv/bin/python bench/run.py --only catchup,naive --lanes order_summary

Parts: ``catchup`` (each lane's rebuild from the start against its store's raw ceiling),
``bound`` (a bare Python loop's replay of the order summary against the same ceiling: how
close any Python lane could get), ``naive`` (the seed's design for the order summary),
``fanout`` (all lanes in one runner process against the slowest alone, with the runner's peak
RSS), ``eventlog`` (append and read rates) and ``freshness`` (append -> visible under a steady
load). Services come from the ``PROJECTIONIST_*`` variables (``scripts/with-services-env``
sets them). Prints the tables and writes every figure to ``--out`` (default
``bench/results/<UTC time>.json``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
from rich.console import Console  # noqa: E402

from bench import (  # noqa: E402
    bound,
    duckdb_lane,
    elasticsearch_lane,
    eventlog,
    freshness,
    naive,
    postgres_lane,
    redis_lane,
    runner,
)
from bench.history import BenchLog, drop_log, open_log  # noqa: E402
from bench.lanes import LANES  # noqa: E402
from bench.places import Services, Where, clear, one_run_at_a_time  # noqa: E402
from bench.report import check_targets, load_average, machine, render, versions  # noqa: E402

PARTS = ("catchup", "bound", "naive", "fanout", "eventlog", "freshness")
MEASURE: dict[str, Callable[[BenchLog, str, Services, Where], Awaitable[dict[str, Any]]]] = {
    "postgres": postgres_lane.measure,
    "redis": redis_lane.measure,
    "elasticsearch": elasticsearch_lane.measure,
    "duckdb": duckdb_lane.measure,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, help="events in the history (default 100,000)")
    parser.add_argument("--only", help=f"comma-separated parts of: {', '.join(PARTS)}")
    parser.add_argument("--lanes", help=f"comma-separated lanes of: {', '.join(LANES)}")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/<time>.json)")
    parser.add_argument("--freshness-seconds", type=float, help="per load phase (default 60)")
    parser.add_argument("--rates", default="500,2000", help="freshness append rates, events/s")
    parser.add_argument(
        "--beside-rate",
        type=float,
        default=5.0,
        help="freshness: first a phase at this rate beside unrelated writes (default 5; 0: none)",
    )
    parser.add_argument("--naive-events", type=int, help="cap of the naive replay (10,000)")
    parser.add_argument("--naive-seconds", type=float, default=120.0, help="its time cap")
    parser.add_argument("--eventlog-events", type=int, help="events per append run (<=100,000)")
    parser.add_argument("--slowest", choices=tuple(LANES), help="fan-out: the lane to run alone")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="fan-out: also all lanes in `run --processes N` (default 2; 1 skips it)",
    )
    parser.add_argument(
        "--freshness-processes",
        type=int,
        default=1,
        help="freshness: the runner as `run --processes N` (default 1: one process)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke sizes (5,000 events, 5 s)")
    parser.add_argument("--keep", action="store_true", help="keep the log for a later run")
    parser.add_argument("--fresh-log", action="store_true", help="refill even a kept log")
    parser.add_argument("--profile", action="store_true", help="profile each lane (JSON only)")
    parser.add_argument(
        "--duckdb-memory-limit",
        help='the DuckDB sink\'s memory_limit (default "25MB"), e.g. "80%%": DuckDB\'s own',
    )
    args = parser.parse_args(argv)
    if args.beside_rate < 0:
        parser.error(f"--beside-rate {args.beside_rate:g}: give events/s, or 0 for no quiet phase")
    quick = args.quick
    args.events = args.events or (5_000 if quick else 100_000)
    args.freshness_seconds = args.freshness_seconds or (5.0 if quick else 60.0)
    args.naive_events = args.naive_events or (1_000 if quick else 10_000)
    args.eventlog_events = args.eventlog_events or (2_000 if quick else min(args.events, 100_000))
    args.parts = _choose(args.only, PARTS, "part")
    args.lane_names = _choose(args.lanes, tuple(LANES), "lane")
    args.rate_list = [float(r) for r in args.rates.split(",") if r]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out = args.out or ROOT / "bench" / "results" / f"{stamp}.json"
    return args


def _choose(given: str | None, known: tuple[str, ...], what: str) -> list[str]:
    if not given:
        return list(known)
    chosen = [p.strip() for p in given.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {', '.join(unknown)}: choose from {', '.join(known)}")
    return [p for p in known if p in chosen]


async def profiled(log: BenchLog, name: str, services: Services, where: Where) -> str:
    """The top functions (own time) of one more catch-up of lane ``name`` under cProfile."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await MEASURE[LANES[name].sink](log, name, services, where)
    finally:
        profiler.disable()
        await clear(where, services)
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(30)
    return buffer.getvalue()


async def catchup(args: argparse.Namespace, log: BenchLog, services: Services, tmp: Path) -> Any:
    where = Where("bench_lanes", tmp / "lanes")
    out: dict[str, Any] = {}
    for name in args.lane_names:
        await clear(where, services)
        print(f"== catch-up: {name}", flush=True)
        out[name] = await MEASURE[LANES[name].sink](log, name, services, where)
        print(f"   {out[name]['events_per_s']:,} events/s, ratio {out[name]['ratio']:.3f}")
        if args.profile:
            out[name]["profile"] = await profiled(log, name, services, where)
    await clear(where, services)
    return out


async def fanout(
    args: argparse.Namespace, log: BenchLog, services: Services, tmp: Path, result: dict[str, Any]
) -> dict[str, Any]:
    """All lanes in one runner, and in ``run --processes N`` (``--processes``), against the
    slowest lane alone (``--slowest``, else the slowest of the catch-up part, else the slowest
    of each run alone), each as ``projectionist run --until-caught-up``."""
    everything = Where("bench_all", tmp / "all")
    await clear(everything, services)
    print(f"== fan-out: {len(args.lane_names)} lanes in one runner", flush=True)
    env = runner.runner_env(log, everything, services, args.lane_names)
    together = await runner.rebuild(log, env, everything.log_file("rebuild"))
    spread: dict[str, Any] | None = None
    if args.processes > 1:
        where = Where("bench_spread", tmp / "spread")
        await clear(where, services)
        print(f"== fan-out: {len(args.lane_names)} lanes in {args.processes} processes", flush=True)
        env = runner.runner_env(log, where, services, args.lane_names)
        spread = await runner.rebuild(log, env, where.log_file("rebuild"), args.processes)
        await clear(where, services)
    alone: dict[str, Any] = {}
    rates = {n: f["events_per_s"] for n, f in result.get("catchup", {}).items()}
    candidates = args.lane_names
    if args.slowest:
        candidates = [args.slowest]
    elif rates:
        candidates = [min(rates, key=rates.__getitem__)]
    for name in candidates:
        where = Where(f"bench_alone_{name}", tmp / f"alone_{name}")
        await clear(where, services)
        print(f"== fan-out: {name} alone", flush=True)
        env = runner.runner_env(log, where, services, [name])
        alone[name] = await runner.rebuild(log, env, where.log_file("rebuild"))
        await clear(where, services)
    slowest = max(alone, key=lambda n: alone[n]["seconds"])
    out = {
        "lanes": args.lane_names,
        "all": together,
        "slowest": slowest,
        "alone": alone[slowest],
        "others_alone": {
            n: {"seconds": a["seconds"], "peak_rss_mb": a["peak_rss_mb"]}
            for n, a in alone.items()
            if n != slowest
        },
        "ratio": round(together["seconds"] / alone[slowest]["seconds"], 3),
        "ratio_after_startup": _after_startup(together, alone[slowest]),
    }
    if spread is not None:
        out["spread"] = spread
        out["ratio_spread"] = round(spread["seconds"] / alone[slowest]["seconds"], 3)
    return out


def _after_startup(together: dict[str, Any], alone: dict[str, Any]) -> float | None:
    """The ratio without each process's start-up (launch to its first published status)."""
    if together["startup_s"] is None or alone["startup_s"] is None:
        return None
    mine = together["seconds"] - together["startup_s"]
    theirs = alone["seconds"] - alone["startup_s"]
    return round(mine / theirs, 3) if theirs > 0 else None


async def run_part(result: dict[str, Any], part: str, work: Callable[[], Awaitable[Any]]) -> None:
    started = time.perf_counter()
    try:
        result[part] = await work()
    except Exception as exc:  # one failed part must not lose the others' figures
        traceback.print_exc()
        result.setdefault("not_measured", {})[part] = f"failed: {type(exc).__name__}: {exc}"
    result["part_seconds"][part] = round(time.perf_counter() - started, 1)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    services = Services.from_environment()
    services = replace(services, duckdb_memory_limit=args.duckdb_memory_limit)
    async with one_run_at_a_time(services.dsn):
        return await _run(args, services)


async def _run(args: argparse.Namespace, services: Services) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="projectionist-bench-"))
    result: dict[str, Any] = {
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "load_start": load_average()},
        "versions": await versions(services),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "only", "lanes")},
        "part_seconds": {},
        "runner_logs": str(tmp),
    }
    print(f"== the log: {args.events:,} events", flush=True)
    log = await open_log(services.dsn, args.events, reuse=not args.fresh_log)
    result["log"] = {
        "schema": log.schema,
        "events": log.events,
        "orders": log.orders,
        "seed": log.seed,
        "append_rate": round(log.append_rate) if log.append_rate else None,
        "reused": log.append_seconds is None,
        "table_mb": round(
            await log.store.pool.fetchval(
                "SELECT pg_total_relation_size($1::regclass)", f"{log.schema}.events"
            )
            / 1e6,
            1,
        ),
    }
    everything = Where("bench_all", tmp / "all")
    parts = args.parts
    try:
        if "catchup" in parts:
            await run_part(result, "catchup", lambda: catchup(args, log, services, tmp))
        if "bound" in parts:
            print("== the bound: a bare Python loop's order summary", flush=True)
            where = Where("bench_bound", tmp / "bound")
            await clear(where, services)
            await run_part(result, "bound", lambda: bound.measure(log, services, where))
            await clear(where, services)
        if "naive" in parts:
            print(f"== naive baseline: up to {args.naive_events:,} events", flush=True)
            await run_part(
                result, "naive", lambda: naive.measure(log, args.naive_events, args.naive_seconds)
            )
            lane = result.get("catchup", {}).get("order_summary")
            if lane and "naive" in result:
                result["naive"]["lane_events_per_s"] = lane["events_per_s"]
                ratio = lane["events_per_s"] / result["naive"]["events_per_s"]
                result["naive"]["ratio"] = round(ratio, 1)
        if "fanout" in parts:
            await run_part(result, "fanout", lambda: fanout(args, log, services, tmp, result))
        if "eventlog" in parts:
            print(f"== event log: {args.eventlog_events:,} events per append run", flush=True)
            await run_part(
                result, "eventlog", lambda: eventlog.main(args.eventlog_events, services.dsn)
            )
        if "freshness" in parts:
            rates = ",".join(
                ([f"{args.beside_rate:g} (beside unrelated writes)"] if args.beside_rate else [])
                + [args.rates]
            )
            print(f"== freshness: {rates} events/s, {args.freshness_seconds:g} s", flush=True)
            env = runner.runner_env(log, everything, services, args.lane_names)
            await run_part(
                result,
                "freshness",
                lambda: freshness.measure(
                    log,
                    services,
                    everything,
                    env,
                    args.rate_list,
                    args.freshness_seconds,
                    args.lane_names,
                    args.freshness_processes,
                    args.beside_rate,
                ),
            )
    finally:
        await clear(everything, services)
        if not args.keep:
            await drop_log(log)
        await log.store.close()
    result["machine"]["load_end"] = load_average()
    result["targets"] = check_targets(result)
    return result


def cli(argv: list[str] | None = None) -> None:
    args = parse(argv)
    result = anyio.run(main, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    console = Console(width=None if sys.stdout.isatty() else 150)
    render(result, console)
    console.print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    cli()
