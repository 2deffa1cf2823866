"""The benchmark's report: the machine and versions it ran on, the issue's targets checked
against the figures (met or missed), and the tables printed on the terminal."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
from elasticsearch import AsyncElasticsearch
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from bench.places import Services

__all__ = ("check_targets", "machine", "render", "versions")

ROOT = Path(__file__).resolve().parent.parent
CATCH_UP_RATIO = 0.8
NAIVE_RATIO = 50.0
FAN_OUT_RATIO = 1.5
IMMEDIATE_P99_MS = 100.0
SEARCH_P99_MS = 500.0 + 250.0
"""The search lane's refresh interval (500ms, its default option) plus 250 ms."""
PEAK_RSS_MB = 300.0
TARGET_RATE = 2_000.0
"""The append rate the freshness targets are set at."""


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "platform": platform.platform()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(
            (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")),
            platform.processor(),
        )
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        info["ram_gb"] = round(int(mem.split()[1]) / 1024 / 1024, 1)
    except OSError:
        info["cpu"] = platform.processor()
    return info


def _commit() -> str | None:
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return git.stdout.strip() or None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def versions(services: Services) -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "duckdb": duckdb.__version__}
    out["projectionist"] = importlib.metadata.version("projectionist")
    out["commit"] = _commit()
    conn = await asyncpg.connect(services.dsn)
    try:
        out["postgres"] = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    redis = Redis.from_url(services.redis_url)
    try:
        out["redis"] = (await redis.info("server"))["redis_version"]
    finally:
        await redis.aclose()
    es = AsyncElasticsearch(services.elasticsearch_url)
    try:
        nodes = await es.nodes.info(node_id="_local", filter_path="nodes.*.version")
        out["elasticsearch"] = ", ".join(n["version"] for n in nodes["nodes"].values())
    finally:
        await es.close()
    return out


def _target(what: str, figure: float | None, target: str, met: bool | None) -> dict[str, Any]:
    return {"what": what, "figure": figure, "target": target, "met": met}


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue that this run measured, with the figure and met/missed."""
    out = []
    for lane in result.get("catchup", {}).values():
        ratio = lane["ratio"]
        out.append(
            _target(
                f"{lane['lane']} catch-up / {lane['judged_ceiling']} ceiling",
                ratio,
                f">= {CATCH_UP_RATIO}",
                ratio >= CATCH_UP_RATIO,
            )
        )
    naive = result.get("naive")
    if naive and naive.get("ratio") is not None:
        ratio = naive["ratio"]
        out.append(
            _target("order_summary catch-up / naive", ratio, f">= {NAIVE_RATIO:g}x", ratio >= 50)
        )
    fanout = result.get("fanout")
    if fanout:
        ratio = fanout["ratio"]
        out.append(
            _target(
                f"all lanes / {fanout['slowest']} alone", ratio, f"<= {FAN_OUT_RATIO}", ratio <= 1.5
            )
        )
        rss = fanout["all"]["peak_rss_mb"]
        out.append(
            _target(
                f"peak RSS, all lanes, {result['log']['events']:,} events",
                rss,
                f"< {PEAK_RSS_MB:g} MB",
                rss < PEAK_RSS_MB,
            )
        )
        spread = fanout.get("spread")
        if spread:
            n = spread["processes"]
            ratio = fanout["ratio_spread"]
            out.append(
                _target(
                    f"all lanes in {n} processes / {fanout['slowest']} alone",
                    ratio,
                    f"<= {FAN_OUT_RATIO}",
                    ratio <= FAN_OUT_RATIO,
                )
            )
            rss = spread["peak_rss_mb"]
            out.append(
                _target(
                    f"peak RSS, all lanes in {n} processes (sum), "
                    f"{result['log']['events']:,} events",
                    rss,
                    f"< {PEAK_RSS_MB:g} MB",
                    rss < PEAK_RSS_MB,
                )
            )
    for phase in result.get("freshness", {}).get("phases", []):
        if phase["target_rate"] != TARGET_RATE:
            continue
        for lane, got in phase["lanes"].items():
            limit = SEARCH_P99_MS if lane == "order_search" else IMMEDIATE_P99_MS
            p99 = got.get("p99_ms")
            met = p99 is not None and p99 <= limit and not got["missing"]
            out.append(
                _target(
                    f"{lane} freshness p99 at {phase['achieved_rate']:,} ev/s",
                    p99,
                    f"<= {limit:g} ms",
                    met,
                )
            )
    return out


def _mark(met: bool | None) -> str:
    return "-" if met is None else ("[green]met[/green]" if met else "[red]missed[/red]")


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else str(value)


def render(result: dict[str, Any], console: Console) -> None:
    m, v, log = result["machine"], result["versions"], result["log"]
    console.rule("[bold]Projectionist benchmark")
    console.print(
        f"{m['cores']} cores, {m.get('ram_gb')} GB, {m.get('cpu')}; load {m['load_start']} at "
        f"start, {m.get('load_end')} at end (a shared machine: compare ratios, not rates)\n"
        f"Python {v['python']}, PostgreSQL {v['postgres']}, Redis {v['redis']}, "
        f"Elasticsearch {v['elasticsearch']}, DuckDB {v['duckdb']}, projectionist "
        f"{v['projectionist']} ({v['commit']})\n"
        f"log: {log['events']:,} events, {log['orders']:,} orders, seed {log['seed']}"
        + (f"; appended at {log['append_rate']:,} ev/s" if log.get("append_rate") else "")
    )
    _catchup(result, console)
    _bound(result, console)
    _baselines(result, console)
    _freshness(result, console)
    _eventlog(result, console)
    targets = Table(title="Targets (issue 10)")
    for col in ("what", "figure", "target", ""):
        targets.add_column(col)
    for t in result["targets"]:
        targets.add_row(t["what"], _n(t["figure"], 2), t["target"], _mark(t["met"]))
    console.print(targets)
    for part, why in result.get("not_measured", {}).items():
        console.print(f"[yellow]not measured[/yellow] {part}: {why}")


def _catchup(result: dict[str, Any], console: Console) -> None:
    if not result.get("catchup"):
        return
    table = Table(title="Catch-up from the start vs the store's raw ceiling (same run)")
    for col in ("lane", "strategy", "s", "events/s", "ceiling", "ceiling ev/s", "ratio", "≥0.8"):
        table.add_column(col, justify="right" if col not in ("lane", "strategy") else "left")
    for lane in result["catchup"].values():
        for i, (method, c) in enumerate(lane["ceilings"].items()):
            judged = method == lane["judged_ceiling"]
            table.add_row(
                lane["lane"] if i == 0 else "",
                lane["strategy"] if i == 0 else "",
                _n(lane["seconds"], 1) if i == 0 else "",
                _n(lane["events_per_s"]) if i == 0 else "",
                method,
                _n(c["events_per_s"]),
                f"{c['ratio']:.3f}",
                _mark(c["ratio"] >= CATCH_UP_RATIO) if judged else "(info)",
            )
    console.print(table)


def _bound(result: dict[str, Any], console: Console) -> None:
    bound = result.get("bound")
    if not bound:
        return
    table = Table(
        title=(
            "The bound: a bare Python loop's order summary vs the same ceiling "
            f"(upsert_1000, {_n(bound['ceiling_events_per_s'])} ev/s)"
        )
    )
    for col in ("pass", "s", "events/s", "ratio alone", "with the write", "≥0.8 possible"):
        table.add_column(col, justify="left" if col == "pass" else "right")
    for name, p in bound["passes"].items():
        table.add_row(
            name.replace("_", " + "),
            _n(p["seconds"], 2),
            _n(p["events_per_s"]),
            f"{p['ratio_alone']:.2f}",
            f"{p['ratio_with_write']:.2f}",
            "yes" if p["ratio_alone"] >= CATCH_UP_RATIO else "no",
        )
    console.print(table)


def _baselines(result: dict[str, Any], console: Console) -> None:
    table = Table(title="Baselines, fan-out and memory")
    for col in ("figure", "value", "compared with", "ratio", "target", ""):
        table.add_column(col)
    naive = result.get("naive")
    if naive:
        covered = f"first {naive['events']:,} events" if naive["partial"] else "whole log"
        table.add_row(
            f"naive order_summary ({covered})",
            f"{_n(naive['events_per_s'])} ev/s",
            f"lane {_n(naive.get('lane_events_per_s'))} ev/s",
            _n(naive.get("ratio"), 1),
            f">= {NAIVE_RATIO:g}x",
            _mark(None if naive.get("ratio") is None else naive["ratio"] >= NAIVE_RATIO),
        )
    fan = result.get("fanout")
    if fan:
        alone = fan["alone"]
        table.add_row(
            "all lanes, one runner (rebuild)",
            f"{_n(fan['all']['seconds'], 1)} s",
            f"{fan['slowest']} alone {_n(alone['seconds'], 1)} s",
            f"{_n(fan['ratio'], 2)} ({_n(fan.get('ratio_after_startup'), 2)} after start-up)",
            f"<= {FAN_OUT_RATIO}",
            _mark(fan["ratio"] <= FAN_OUT_RATIO),
        )
        used = fan["all"].get("cpu")
        if used:
            table.add_row(
                "all lanes: the machine's busy CPU / cores",
                f"{_n(used['floor_s'], 1)} s",
                f"busy {used['machine_busy_share']:.0%}; CPU s: "
                + ", ".join(f"{k} {_n(v, 1)}" for k, v in used["cpu_s"].items()),
                _n(used["floor_s"] / alone["seconds"], 2),
                "-",
                "",
            )
        rss = fan["all"]["peak_rss_mb"]
        early = fan["all"].get("peak_rss_mb_by_100k")
        table.add_row(
            "peak RSS of the runner, all lanes",
            f"{_n(rss, 1)} MB",
            f"{_n(early, 1)} MB by 100k events" if early else "-",
            "-",
            f"< {PEAK_RSS_MB:g} MB",
            _mark(rss < PEAK_RSS_MB),
        )
        spread = fan.get("spread")
        if spread:
            n = spread["processes"]
            table.add_row(
                f"all lanes, run --processes {n} (rebuild)",
                f"{_n(spread['seconds'], 1)} s",
                f"{fan['slowest']} alone {_n(alone['seconds'], 1)} s",
                _n(fan["ratio_spread"], 2),
                f"<= {FAN_OUT_RATIO}",
                _mark(fan["ratio_spread"] <= FAN_OUT_RATIO),
            )
            peaks = " + ".join(_n(p, 1) for p in spread["runner_peak_rss_mb"])
            table.add_row(
                f"peak RSS, run --processes {n} (sum)",
                f"{_n(spread['peak_rss_mb'], 1)} MB",
                f"supervisor {_n(spread['supervisor_peak_rss_mb'], 1)} + runners {peaks}",
                "-",
                f"< {PEAK_RSS_MB:g} MB",
                _mark(spread["peak_rss_mb"] < PEAK_RSS_MB),
            )
    if table.row_count:
        console.print(table)


def _freshness(result: dict[str, Any], console: Console) -> None:
    fresh = result.get("freshness")
    if not fresh:
        return
    processes = fresh.get("processes", 1)
    runner = f"run --processes {processes}" if processes > 1 else "one runner"
    poll = fresh["poll_interval_ms"]
    table = Table(title=f"Freshness: append commit -> visible ({runner}, poll {poll:g} ms)")
    for col in ("load", "lane", "p50 ms", "p95 ms", "p99 ms", "max ms", "missing", "target", ""):
        table.add_column(col)
    for phase in fresh["phases"]:
        load = (
            f"{phase['target_rate']:,.0f} ev/s asked, {phase['achieved_rate']:,} achieved"
            f" (runner cpu {phase['runner_cpu_share']:.0%})"
        )
        if (unrelated := phase.get("unrelated_writes")) is not None:
            load += (
                f", beside {unrelated['transactions']:,} unrelated write transactions"
                f" (one every {unrelated['every_ms']:g} ms, open {unrelated['held_ms']:g} ms)"
            )
        for i, (lane, got) in enumerate(phase["lanes"].items()):
            limit = SEARCH_P99_MS if lane == "order_search" else IMMEDIATE_P99_MS
            judged = phase["target_rate"] == TARGET_RATE
            p99 = got.get("p99_ms")
            met = p99 is not None and p99 <= limit and not got["missing"]
            table.add_row(
                load if i == 0 else "",
                lane,
                _n(got.get("p50_ms"), 1),
                _n(got.get("p95_ms"), 1),
                _n(p99, 1),
                _n(got.get("max_ms"), 1),
                str(got["missing"]),
                f"<= {limit:g}" if judged else "-",
                _mark(met) if judged else "",
            )
    console.print(table)
    for lane, why in fresh.get("not_measured", {}).items():
        console.print(f"{lane}: not measured ({why})")


def _eventlog(result: dict[str, Any], console: Console) -> None:
    log = result.get("eventlog")
    if not log:
        return
    table = Table(title=f"Event log ({log['events']:,} events per append run)")
    for col in ("operation", "events/s", "notes"):
        table.add_column(col)
    for a in log["append"]:
        table.add_row(
            f"append, {a['writers']} writer(s)",
            _n(a["events_per_s"]),
            f"{a['batch']} events per append",
        )
    for r in log["read"]:
        table.add_row(
            f"read, page {r['page']:,}",
            _n(r["store_read"]["events_per_s"]),
            f"envelopes; raw fetch {_n(r['raw_fetch']['events_per_s'])}, "
            f"raw text {_n(r['raw_text']['events_per_s'])}",
        )
    console.print(table)
