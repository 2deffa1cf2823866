"""The fan-out's CPU accounting (bench/cpu.py): its arithmetic, and that /proc is read."""

from __future__ import annotations

import os

from bench.cpu import CpuSnapshot, between, snapshot


def _at(busy: float, total: float, postgres: float, runner: float) -> CpuSnapshot:
    services = {"postgres": postgres, "elasticsearch": 0.0, "redis": 0.0}
    return CpuSnapshot(busy, total, services, children_s=runner, self_s=1.0)


def test_the_floor_is_the_busy_cpu_over_the_cores_and_the_rest_is_what_no_part_used() -> None:
    cores = os.cpu_count() or 1
    used = between(_at(100, 400, 10, 5), _at(100 + 60 * cores, 400 + 80 * cores, 30, 25))
    assert used is not None
    assert used["floor_s"] == 60.0
    assert used["machine_busy_share"] == 0.75
    assert used["cpu_s"]["runner"] == 20.0 and used["cpu_s"]["postgres"] == 20.0
    assert used["cpu_s"]["rest"] == round(60 * cores - 40, 1)
    assert between(None, _at(1, 1, 1, 1)) is None


def test_a_snapshot_reads_this_machine() -> None:
    first = snapshot()
    sum(i * i for i in range(300_000))  # some CPU for the harness
    second = snapshot()
    assert first is not None and second is not None
    assert set(first.services_s) == {"postgres", "elasticsearch", "redis"}
    assert second.self_s > first.self_s
    assert second.total_s >= first.total_s
