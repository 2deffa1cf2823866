"""Secrets planted in every address never appear in output, whatever fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.test_commands import cli

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
