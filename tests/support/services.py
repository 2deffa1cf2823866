"""Where the tests find the real services: the environment first, else testcontainers when a
Docker engine answers, else a failure that says how to start them. Never a silent skip."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest

HOW_TO_START = (
    "start the services with `scripts/services up` and load their addresses with "
    "`. .local/services.env` (or run `make test`, which does both), or set {var} yourself"
)


def docker_engine_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


def resolve(var: str, start: Callable[[ExitStack], str] | None, stack: ExitStack) -> str:
    """The service address from ``var``, else a started container, else ``pytest.fail``."""
    value = os.environ.get(var)
    if value:
        return value
    if start is not None and docker_engine_available():
        return start(stack)
    pytest.fail(f"{var} is not set and no Docker engine answers: " + HOW_TO_START.format(var=var))


def start_postgres(stack: ExitStack) -> str:
    from testcontainers.postgres import PostgresContainer

    container: Any = stack.enter_context(PostgresContainer("postgres:17", driver=None))
    return str(container.get_connection_url())


def start_redis(stack: ExitStack) -> str:
    from testcontainers.redis import RedisContainer

    container: Any = stack.enter_context(RedisContainer("redis:7.4"))
    host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0"


def start_elasticsearch(stack: ExitStack) -> str:
    from testcontainers.elasticsearch import ElasticSearchContainer

    container: Any = stack.enter_context(
        ElasticSearchContainer("docker.elastic.co/elasticsearch/elasticsearch:9.1.5")
    )
    return str(container.get_url())
