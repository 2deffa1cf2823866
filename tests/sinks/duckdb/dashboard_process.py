"""A dashboard process for the reliability tests: opens the current snapshot read-only in a
loop, checks that each read is one whole flush, and prints a JSON summary at the end.

``python -m tests.sinks.duckdb.dashboard_process PATH SECONDS LANE``

Per read, in one connection to one snapshot: the order totals equal the sum of their line
amounts, item counts equal line quantities, no line lacks its order, and the checkpoint never
goes back. Every exception is recorded, not raised: the test asserts there were none.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from sinks.duckdb import open_current

ORDERS = (
    "SELECT count(*), coalesce(sum(total_amount), 0)::VARCHAR, coalesce(sum(item_count), 0) "
    "FROM order_analytics"
)
LINES = (
    "SELECT coalesce(sum(subtotal), 0)::VARCHAR, coalesce(sum(quantity), 0), "
    "count(*) FILTER (WHERE o.id IS NULL) FROM order_lines l "
    "LEFT JOIN order_analytics o ON o.id = l.id"
)
CHECKPOINT = "SELECT transaction_id, global_position FROM projectionist_checkpoints WHERE lane = ?"


def read_once(path: str, lane: str) -> dict[str, Any]:
    started = time.monotonic()
    con = open_current(path, timeout=2.0)
    opened = time.monotonic() - started
    try:
        orders, total, items = con.execute(ORDERS).fetchall()[0]
        line_total, quantity, orphans = con.execute(LINES).fetchall()[0]
        found = con.execute(CHECKPOINT, [lane]).fetchall()
    finally:
        con.close()
    return {
        "open_seconds": opened,
        "checkpoint": list(found[0]) if found else None,
        "orders": orders,
        "total": total,
        "whole": total == line_total and items == quantity and orphans == 0,
        "detail": [total, line_total, items, quantity, orphans],
    }


def main(path: str, seconds: float, lane: str) -> None:
    deadline = time.monotonic() + seconds
    reads, failures, broken, latencies, opens = 0, [], [], [], []
    seen: dict[str, dict[str, Any]] = {}
    order: list[list[int] | None] = []
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            found = read_once(path, lane)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            continue
        latencies.append(time.monotonic() - started)
        opens.append(found["open_seconds"])
        reads += 1
        if not found["whole"]:
            broken.append(found)
        if not order or order[-1] != found["checkpoint"]:
            order.append(found["checkpoint"])
        if found["checkpoint"] is not None:
            key = "/".join(map(str, found["checkpoint"]))
            seen[key] = {"orders": found["orders"], "total": found["total"]}
    latencies.sort()
    summary = {
        "reads": reads,
        "failures": failures[:20],
        "failure_count": len(failures),
        "broken": broken[:20],
        "max_seconds": latencies[-1] if latencies else None,
        "p99_seconds": latencies[int(len(latencies) * 0.99)] if latencies else None,
        "median_seconds": latencies[len(latencies) // 2] if latencies else None,
        "open_max_seconds": max(opens, default=None),
        "checkpoint_order": order,
        "by_checkpoint": seen,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
