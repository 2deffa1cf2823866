"""Shared pytest configuration: the anyio backend, the real services, per-test namespaces."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.services import (
    resolve,
    start_elasticsearch,
    start_postgres,
    start_redis,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="run the long reliability and storm runs")
    parser.addoption(
        "--storm-events", type=int, default=0, help="events for the long writer storm (1000000)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    long_runs = [item for item in items if "slow" in item.keywords]
    if long_runs:
        config.hook.pytest_deselected(items=long_runs)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def _containers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def postgres_dsn(_containers: ExitStack) -> str:
    """The real Postgres (``PROJECTIONIST_POSTGRES_DSN``)."""
    return resolve("PROJECTIONIST_POSTGRES_DSN", start_postgres, _containers)


@pytest.fixture(scope="session")
def redis_url(_containers: ExitStack) -> str:
    """The real Redis (``PROJECTIONIST_REDIS_URL``)."""
    return resolve("PROJECTIONIST_REDIS_URL", start_redis, _containers)


@pytest.fixture(scope="session")
def elasticsearch_url(_containers: ExitStack) -> str:
    """The real Elasticsearch (``PROJECTIONIST_ELASTICSEARCH_URL``)."""
    return resolve("PROJECTIONIST_ELASTICSEARCH_URL", start_elasticsearch, _containers)


@pytest.fixture(scope="session")
def duckdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for real DuckDB files, beside ``PROJECTIONIST_DUCKDB_PATH`` when it is set."""
    configured = os.environ.get("PROJECTIONIST_DUCKDB_PATH")
    if configured:
        folder = Path(configured).parent / "tests"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("duckdb")


@pytest.fixture
def namespace() -> str:
    """A unique lower-case name for this test's schemas, indices and key prefixes."""
    return "t" + uuid.uuid4().hex[:12]
