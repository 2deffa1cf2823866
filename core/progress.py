"""A rich progress bar for a lane's rebuild: events done, rate, ETA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from core.lane import Lane

__all__ = ("lane_progress",)


@contextmanager
def lane_progress(lane: Lane, total: int, console: Console) -> Iterator[None]:
    """Show ``lane``'s progress towards ``total`` events while the block runs."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} ev/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(lane.name, total=max(total, 1), rate=0.0)

        def update(ln: Lane) -> None:
            elapsed = progress.tasks[task].elapsed or 1e-9
            progress.update(task, completed=ln.stats.events, rate=ln.stats.events / elapsed)

        previous = lane.on_progress
        lane.on_progress = update
        try:
            yield
        finally:
            lane.on_progress = previous
            progress.update(task, completed=lane.stats.events)
