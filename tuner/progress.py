"""The one progress bar style of tuner's long commands (tune, confirm): rich's Progress."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar"]


def progress_bar(console: Console, *, disable: bool = False) -> Progress:
    """A bar with description, count, elapsed time and a free ``status`` field per task.

    Use as a context manager; tasks need ``status=""`` in ``add_task``.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=disable,
        transient=False,
    )
