"""Helpers of the reliability tests that run ``projectionist`` as a subprocess: the
services' addresses and a configuration with a lane in each of the four stores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from core.settings import Settings, load_settings

__all__ = ("ALL_STORES", "BIN", "LANES", "ROOT", "Services", "projectionist", "write_config")

ALL_STORES = (
    pytest.mark.reliability,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.elasticsearch,
    pytest.mark.duckdb,
)
"""The marks of a reliability test that needs all four stores."""
BIN = Path(sys.executable).with_name("projectionist")
ROOT = Path(__file__).resolve().parents[2]
"""Put on the runners' ``PYTHONPATH``, so projections in ``tests`` (the canary) import."""

LANES: tuple[tuple[str, str], ...] = (
    ("projections.orders:OrderSummary", "postgres"),
    ("projections.orders:OrderCache", "redis"),
    ("projections.orders:OrderSearch", "elasticsearch"),
    ("projections.orders:OrderAnalytics", "duckdb"),
)
"""One order read model in each store: ``(projection, sink)``."""


def write_config(
    path: Path,
    namespace: str,
    duckdb_file: Path,
    lanes: tuple[tuple[str, str], ...] = LANES,
    policy: str = "park",
) -> None:
    """Four sinks under ``namespace``, one lane per ``(projection, sink)`` with ``policy``."""
    lines = [
        f'event_store_schema = "{namespace}"',
        f'read_model_schema = "{namespace}_rm"',
        f'duckdb_path = "{duckdb_file}"',
        "[sinks.postgres]",
        'factory = "sinks.factories:postgres"',
        "[sinks.redis]",
        'factory = "sinks.factories:redis"',
        "[sinks.elasticsearch]",
        'factory = "sinks.factories:elasticsearch"',
        f'options = {{ index_prefix = "{namespace}_" }}',
        "[sinks.duckdb]",
        'factory = "sinks.factories:duckdb"',
    ]
    for projection, sink in lanes:
        name = projection.rpartition(":")[2].lower()
        lines += [
            "[[lanes]]",
            f'projection = "{projection}"',
            f'sink = "{sink}"',
            f'policy = "{policy}"',
            'strategy = { kind = "immediate", max_batch = 200, catch_up_batch = 400 }',
        ]
        if sink == "redis":
            lines.append(f'options = {{ key_prefix = "{namespace}{name}" }}')
    path.write_text("\n".join(lines) + "\n")


class Services(NamedTuple):
    dsn: str
    redis: str
    elasticsearch: str

    def env(self, config: Path) -> dict[str, str]:
        """A runner's environment: these addresses and ``config``, nothing else of ours."""
        return {
            "PROJECTIONIST_CONFIG": str(config),
            "PROJECTIONIST_POSTGRES_DSN": self.dsn,
            "PROJECTIONIST_REDIS_URL": self.redis,
            "PROJECTIONIST_ELASTICSEARCH_URL": self.elasticsearch,
        }

    def settings(self, config: Path, namespace: str, duckdb_file: Path) -> Settings:
        """What a runner on ``config`` uses (addresses and names given explicitly: the test
        process's own environment holds other ``PROJECTIONIST_*`` values, which win over it)."""
        saved = os.environ.get("PROJECTIONIST_CONFIG")
        os.environ["PROJECTIONIST_CONFIG"] = str(config)
        try:
            return load_settings(
                postgres_dsn=self.dsn,
                redis_url=self.redis,
                elasticsearch_url=self.elasticsearch,
                duckdb_path=duckdb_file,
                event_store_schema=namespace,
                read_model_schema=f"{namespace}_rm",
            )
        finally:
            if saved is None:
                del os.environ["PROJECTIONIST_CONFIG"]
            else:
                os.environ["PROJECTIONIST_CONFIG"] = saved


def projectionist(
    env: dict[str, str], *args: str, timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``projectionist ARGS`` to its end, its output captured (never raises on its exit code)."""
    return subprocess.run(
        [str(BIN), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
