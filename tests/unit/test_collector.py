"""core.app.tune_collector: the garbage collector of a process that runs lanes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from core.app import tune_collector
from core.errors import ConfigurationError
from core.settings import load_settings

DSN = "postgresql://u@127.0.0.1:5432/db"


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_young_threshold_is_set_and_what_is_alive_is_frozen(collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(load_settings(postgres_dsn=DSN))
    assert gc.get_threshold() == (20_000, 10, 10)
    assert gc.get_freeze_count() > 10_000  # modules, classes, functions: out of every pass


def test_zero_keeps_pythons_threshold(collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(load_settings(postgres_dsn=DSN, gc_young_threshold=0))
    assert gc.get_threshold() == (700, 10, 10)


def test_a_negative_threshold_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="gc_young_threshold"):
        load_settings(postgres_dsn=DSN, gc_young_threshold=-1)
