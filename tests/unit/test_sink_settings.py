"""A ``[sinks.X]`` section adds to the default sinks; it does not replace them all."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import DEFAULT_SINKS, Settings

DSN = "postgresql://u@127.0.0.1:1/db"


def settings(sinks: dict[str, Any]) -> Settings:
    return Settings(postgres_dsn=DSN, sinks=sinks)  # type: ignore[arg-type]


def test_a_section_for_one_default_sink_keeps_the_others() -> None:
    s = settings({"postgres": {"options": {"pool_size": 10}}})
    assert set(s.sinks) == set(DEFAULT_SINKS)
    assert s.sinks["postgres"].factory == DEFAULT_SINKS["postgres"].factory
    assert s.sinks["postgres"].options == {"pool_size": 10}
    assert s.sinks["redis"] == DEFAULT_SINKS["redis"]


def test_a_new_sink_is_added_and_needs_its_factory() -> None:
    s = settings({"reporting": {"factory": "sinks.factories:postgres"}})
    assert set(s.sinks) == {*DEFAULT_SINKS, "reporting"}
    with pytest.raises(ValueError, match="factory"):
        settings({"reporting": {"options": {}}})


def test_the_environment_sets_one_sinks_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROJECTIONIST_SINKS__POSTGRES__OPTIONS", '{"pool_size": 3}')
    s = Settings(postgres_dsn=DSN)  # type: ignore[arg-type]
    assert s.sinks["postgres"].options == {"pool_size": 3} and set(s.sinks) == set(DEFAULT_SINKS)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u@h1:5432,h2:5433/db",  # a failover list: asyncpg tries each
        "postgresql:///db?host=/var/run/postgresql",
        "postgres://u@[::1]:5432/db",
        "postgresql:///db",
    ],
)
def test_postgres_urls_the_driver_takes_are_accepted(dsn: str) -> None:
    assert Settings(postgres_dsn=dsn).postgres_dsn.get_secret_value() == dsn  # type: ignore[arg-type]


def test_a_misspelled_variable_is_warned_about_with_the_setting_it_meant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from core.settings import warn_unknown_variables

    environ = {
        "PROJECTIONIST_METRIC_PORT": "9100",  # METRICS_PORT
        "PROJECTIONIST_POSTGRES_DSN": DSN,
        "PROJECTIONIST_SINKS__POSTGRES__OPTIONS": "{}",
        "PROJECTIONIST_CONFIG": "/dev/null",
        "PROJECTIONIST_REDIS_SERVER": "/usr/bin/redis-server",
        "OTHER_METRIC_PORT": "1",
    }
    with caplog.at_level("WARNING", logger="projectionist.settings"):
        assert warn_unknown_variables(environ) == ["PROJECTIONIST_METRIC_PORT"]
    assert "did you mean PROJECTIONIST_METRICS_PORT?" in caplog.text
