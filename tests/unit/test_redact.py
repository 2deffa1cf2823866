"""Secrets never reach a message: passwords in a URL's user info and in its query."""

from __future__ import annotations

import pytest

from core.errors import ConfigurationError
from core.redact import redact_text, redact_url
from core.settings import Settings
from sinks.factories import postgres


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:Hunter2@db/app", "postgresql://bob:***@db/app"),
        ("postgresql://bob@db/app?password=Hunter2", "postgresql://bob@db/app?password=***"),
        (
            "postgresql://bob@db/app?sslmode=require&PASSWORD=Hunter2&x=1",
            "postgresql://bob@db/app?sslmode=require&PASSWORD=***&x=1",
        ),
        ("redis://:Hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("http://es:9200/?api_key=Hunter2", "http://es:9200/?api_key=***"),
    ],
)
def test_a_password_in_a_url_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(f"connecting to {url} failed") == f"connecting to {shown} failed"


def test_a_mistyped_sink_option_is_not_echoed() -> None:
    """``pasword = "..."`` is an unknown option: its value may be the secret it was meant to
    be, so it is shown masked."""
    settings = Settings(postgres_dsn="postgresql://u@127.0.0.1:1/db")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"pasword") as caught:
        postgres("postgres", settings, {"pasword": "Hunter2"})
    assert "Hunter2" not in str(caught.value)
