"""Secrets planted in every address never appear in output, whatever fails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.cli.test_commands import BIN, cli

pytestmark = pytest.mark.reliability

SECRET = "Pl4nted-S3cret"


def _config(tmp_path: Path, sink: str, projection: str) -> None:
    (tmp_path / "projectionist.toml").write_text(
        f'[[lanes]]\nprojection = "projections.orders:{projection}"\nsink = "{sink}"\n'
    )


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sink", "projection", "variable", "address"),
    [
        ("redis", "OrderCache", "PROJECTIONIST_REDIS_URL", f"redis://user:{SECRET}@127.0.0.1:1/0"),
        (
            "elasticsearch",
            "OrderSearch",
            "PROJECTIONIST_ELASTICSEARCH_URL",
            f"http://elastic:{SECRET}@127.0.0.1:1",
        ),
    ],
)
def test_unreachable_store_with_a_password_shows_none(
    postgres_dsn: str, tmp_path: Path, sink: str, projection: str, variable: str, address: str
) -> None:
    _config(tmp_path, sink, projection)
    env = {"PROJECTIONIST_POSTGRES_DSN": postgres_dsn, variable: address}
    for args in (("status",), ("status", "--json")):
        result = cli(*args, env=env, cwd=tmp_path, timeout=120)
        assert result.returncode != 0, (args, result.stdout)
        assert SECRET not in result.stdout + result.stderr, args
    # A runner retries a store that is down for ever: read what it logged meanwhile.
    with pytest.raises(subprocess.TimeoutExpired) as running:
        cli("run", env=env, cwd=tmp_path, timeout=15)
    parts = (running.value.stdout, running.value.stderr)
    logged = "".join(p.decode() if isinstance(p, bytes) else (p or "") for p in parts)
    assert "failed (attempt 1" in logged  # the error path was taken
    assert SECRET not in logged


def test_bad_settings_with_passwords_show_none(tmp_path: Path) -> None:
    env = {
        "PROJECTIONIST_POSTGRES_DSN": f"postgresql://u:{SECRET}@127.0.0.1:1/db",
        "PROJECTIONIST_REDIS_URL": f"redis://u:{SECRET}@127.0.0.1:1/0",
        "PROJECTIONIST_METRICS_PORT": "not-a-port",
    }
    result = cli("status", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "metrics_port" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def _planted(
    namespace: str, postgres_dsn: str, redis_url: str, es_url: str, *, wrong_redis: bool
) -> str:
    """A configuration with a planted secret in every address and secret setting, and a lane
    on each error path: a wrong password on live Postgres, dead Postgres, Redis and
    Elasticsearch, healthy lanes beside them (one with an API key live Elasticsearch ignores),
    and with ``wrong_redis`` a wrong password on live Redis (which a runner refuses at start)."""
    pg_wrong = _with_password(postgres_dsn, "projectionist", f"{SECRET}-pg%21sink")
    redis_wrong = _with_password(redis_url, "someone", f"{SECRET}-redis-acl")
    lanes: tuple[tuple[str, str, str], ...] = (
        ("OrderSummary", "postgres", ""),
        ("OrderSummary", "pg_wrong", ""),
        ("OrderDetail", "pg_dead", ""),
        ("OrderDetail", "redis", f'key_prefix = "{namespace}dead"'),
        ("OrderSearch", "es_live", ""),
        ("OrderSearch", "elasticsearch", ""),
    )
    es_live = f'url = "{es_url}", index_prefix = "{namespace}_", api_key = "{SECRET}-es-key"'
    sinks = {
        "postgres": ("postgres", ""),
        "pg_wrong": ("postgres", f'dsn = "{pg_wrong}"'),
        "pg_dead": ("postgres", f'dsn = "postgresql://u:{SECRET}-pg-dead@127.0.0.1:1/db"'),
        "redis_wrong": ("redis", f'url = "{redis_wrong}"'),
        "redis": ("redis", f'password = "{SECRET}-redis-field"'),
        "es_live": ("elasticsearch", es_live),
        "elasticsearch": ("elasticsearch", f'username = "elastic", password = "{SECRET}-es-pw"'),
    }
    if wrong_redis:
        lanes += (("OrderCache", "redis_wrong", f'key_prefix = "{namespace}wrong"'),)
    else:
        del sinks["redis_wrong"]
    lines = [f'event_store_schema = "{namespace}"', f'read_model_schema = "{namespace}_rm"']
    for name, (factory, options) in sinks.items():
        lines += [f"[sinks.{name}]", f'factory = "sinks.factories:{factory}"']
        lines += [f"options = {{ {options} }}"] if options else []
    for projection, sink, options in lanes:
        lines += [
            "[[lanes]]",
            f'projection = "projections.orders:{projection}"',
            f'sink = "{sink}"',
        ]
        lines += [f"options = {{ {options} }}"] if options else []
    return "\n".join(lines) + "\n"


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.elasticsearch
def test_metrics_health_status_and_logs_show_no_planted_secret(
    postgres_dsn: str,
    redis_url: str,
    elasticsearch_url: str,
    namespace: str,
    tmp_path: Path,
    leave_no_trace: None,
) -> None:
    config = tmp_path / "projectionist.toml"
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")},
        "PROJECTIONIST_POSTGRES_DSN": postgres_dsn,
        "PROJECTIONIST_REDIS_URL": f"redis://u:{SECRET}-redis-url@127.0.0.1:1/0",
        "PROJECTIONIST_ELASTICSEARCH_URL": f"http://elastic:{SECRET}-es-url@127.0.0.1:1",
        "PROJECTIONIST_METRICS_PORT": str(port),
    }
    failing = ("pg_wrong", "pg_dead", "redis", "elasticsearch")
    seen: dict[str, str] = {}
    config.write_text(
        _planted(namespace, postgres_dsn, redis_url, elasticsearch_url, wrong_redis=True)
    )
    refused = cli("run", env=env, cwd=tmp_path, timeout=120)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "check username/password" in refused.stderr
    seen["run refused at start"] = refused.stdout + refused.stderr
    config.write_text(
        _planted(namespace, postgres_dsn, redis_url, elasticsearch_url, wrong_redis=False)
    )
    with (tmp_path / "stderr").open("w+") as logged:
        runner = subprocess.Popen(
            [str(BIN), "run"], env=env, cwd=tmp_path, stdout=logged, stderr=logged
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and runner.poll() is None:
                time.sleep(1)
                with contextlib.suppress(OSError):
                    seen["/metrics"] = _get(f"http://127.0.0.1:{port}/metrics")[1]
                    if all(_on_error_path(seen["/metrics"], sink) for sink in failing):
                        break
            else:
                logged.seek(0)
                pytest.fail(f"not every lane took its error path: {logged.read()[-3000:]}")
            for path in ("/healthz", "/readyz"):
                code, body = _get(f"http://127.0.0.1:{port}{path}")
                seen[path] = f"{code} {body}"
            for args in (("status",), ("status", "--json")):
                status = cli(*args, env=env, cwd=tmp_path, timeout=120)
                seen[" ".join(args)] = status.stdout + status.stderr
        finally:
            runner.send_signal(signal.SIGTERM)
            runner.wait(timeout=60)
        logged.seek(0)
        seen["runner log"] = logged.read()
    assert seen["/healthz"] == "200 ok\n"
    assert seen["/readyz"].startswith("503"), seen["/readyz"]  # a lane halted: not ready
    leaks = {where: text.count(SECRET) for where, text in seen.items() if SECRET in text}
    print(
        f"\nsecrets: 8 planted across {len(failing)} failing lanes and a healthy one; "
        f"found in {', '.join(seen)}: {sum(leaks.values())}"
    )
    assert not leaks, leaks


def _on_error_path(metrics: str, sink: str) -> bool:
    """The lane on ``sink`` retried at least once, or halted."""
    for line in metrics.splitlines():
        if f'@{sink}"' not in line:
            continue
        if line.startswith("projectionist_retries_total") and not line.endswith(" 0.0"):
            return True
        if 'state="halted"' in line and line.endswith(" 1.0"):
            return True
    return False
