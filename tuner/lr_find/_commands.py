"""The LR range test's two entry points: ``tuner tune`` with ``[space] lr = "auto"``
(:func:`resolve_lr_bounds`) and ``tuner lr-find`` (:func:`run_lr_find_command`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.lr_find._bounds import (
    ATTR_KEY,
    SWEEP_ATTR_PREFIX,
    AutoBounds,
    auto_bounds,
    bounds_attrs,
    record_attr,
    recorded_attrs,
    recorded_bounds,
)
from tuner.lr_find._curve import MAX_LR, MIN_LR, STEPS, LRFindError
from tuner.lr_find._output import (
    SWEEP_PAGE,
    sweep_figure,
    sweep_table,
    write_sweep_figure,
    write_sweep_png,
)
from tuner.lr_find._sweep import lr_range_tests
from tuner.space import OPTIMIZERS

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go
    from rich.console import Console

    from tuner.config import StudyConfig

__all__ = ["resolve_lr_bounds", "default_figure_path", "run_lr_find_command"]

def resolve_lr_bounds(
    cfg: StudyConfig,
    storage_url: str,
    *,
    console: Console | None = None,
) -> tuple[float, float] | None:
    """The ``lr`` bounds of a study whose ``[space] lr`` is ``"auto"``; None otherwise.

    A study that recorded its bounds (a resumed study) reuses them: no new sweep. Otherwise the
    LR range test runs for each optimizer in ``[space] optimizers`` (before the study is created
    or touched, so that a failing sweep writes nothing), then the study gets, in its user
    attributes, ``lr_find`` (the bounds, the rule, each optimizer's rates, the enqueued trials)
    and ``lr_find.sweep.<optimizer>`` (each whole sweep), and one enqueued trial per usable
    optimizer at its suggested rate, the optimizer with the lowest sweep loss first (for SGD
    also the sweep's momentum 0.9 without Nesterov; the other parameters are sampled).

    Args:
        cfg: the validated study.
        storage_url: the study's Optuna storage URL.
        console: where the table of the sweeps goes (default: stderr).

    Raises:
        LRFindError: no optimizer gives a suggestion. StorageError, DeviceError, ConfigError.
    """
    if cfg.space.lr != "auto":
        return None
    from rich.console import Console

    from tuner.study import open_study

    console = console or Console(stderr=True)
    existing = _existing_study(cfg, storage_url)
    if existing is not None:
        found = recorded_bounds(existing)
        if found is not None:
            console.print(
                f'lr = "auto": reusing the bounds recorded by the LR range test: '
                f"[{found[0]:.3g}, {found[1]:.3g}]"
            )
            swept = set(recorded_attrs(existing)[ATTR_KEY].get("optimizers", {}))
            if swept != set(cfg.space.optimizers):
                console.print(
                    f"[yellow]note:[/yellow] they come from sweeps of {', '.join(sorted(swept))}"
                    f"; [space] optimizers is now {', '.join(cfg.space.optimizers)} (a new "
                    f"study name sweeps again)"
                )
            return found
    console.print(
        f'lr = "auto": LR range test for {", ".join(cfg.space.optimizers)} '
        f"({STEPS} mini-batches at most each, lr {MIN_LR:g} .. {MAX_LR:g})"
    )
    with console.status("LR range test ...") as status:
        sweeps = lr_range_tests(
            cfg, on_sweep=lambda s: status.update(f"LR range test: {s.optimizer} done")
        )
    bounds = auto_bounds(sweeps)
    study = open_study(cfg, storage_url)
    found = recorded_bounds(study)  # another process may have been faster
    if found is not None:
        return found
    for s in sweeps:
        record_attr(study, SWEEP_ATTR_PREFIX + s.optimizer, s.to_attrs())
    attrs = bounds_attrs(cfg, bounds)
    for params in attrs["enqueued"]:
        study.enqueue_trial(params, skip_if_exists=True)
    record_attr(study, ATTR_KEY, attrs)  # last: its presence means "recorded"
    console.print(sweep_table(sweeps, bounds))
    console.print(
        f"enqueued {len(attrs['enqueued'])} trial(s) at the suggested rates: "
        + ", ".join(f"{p['optimizer']} {p['lr']:.3g}" for p in attrs["enqueued"])
    )
    for name, reason in bounds.failed.items():
        console.print(f"[yellow]note:[/yellow] no suggestion for {name}: {reason}")
    return bounds.low, bounds.high


def _existing_study(cfg: StudyConfig, storage_url: str) -> optuna.Study | None:
    import optuna

    from tuner.storage import make_storage, storage_file

    file = storage_file(storage_url)
    if file is not None and not file.exists():
        return None
    storage = make_storage(storage_url)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if cfg.name not in names:
        return None
    return optuna.load_study(study_name=cfg.name, storage=storage)



def default_figure_path(cfg: StudyConfig) -> Path:
    """``reports/<study name>.lr_find.html`` in the study file's folder (git-ignored)."""
    return cfg.study_dir / "reports" / f"{cfg.name}.lr_find.html"


def _write_png_beside(fig: go.Figure, html_path: Path, console: Console) -> None:
    """The plot's PNG copy next to its page (``.png`` for ``.html``); a missing Chromium or a
    failed rendering is a warning on stderr (the page is written)."""
    from tuner.outputs import OutputError
    from tuner.report import find_browser

    png = html_path.with_suffix(".png")
    browser = find_browser()
    if browser is None:
        print("tuner: warning: no Chromium found for the PNG copy ($TUNER_CHROMIUM, "
              "$BROWSER_PATH or chromium on the PATH); wrote the HTML only", file=sys.stderr)
        return
    try:
        console.print(f"wrote {write_sweep_png(fig, png, browser)}")
    except (LRFindError, OutputError) as exc:
        print(f"tuner: warning: no PNG copy: {exc}", file=sys.stderr)


def run_lr_find_command(
    cfg: StudyConfig,
    *,
    optimizers: Sequence[str] | None = None,
    out: Path | None = None,
    min_lr: float | None = None,
    max_lr: float | None = None,
    steps: int | None = None,
    console: Console | None = None,
) -> int:
    """``tuner lr-find``: sweep, print the rates and the sweep time, write the plot (HTML, and
    a PNG copy beside it when a Chromium is found).

    Returns 0, or 2 when a sweep gives no suggestion (its reason is printed on stderr; the
    table and the plot are still written, they show why).

    Raises:
        LRFindError: an unknown optimizer, an invalid sweep range, or an ``out`` not ending
            in ``.html`` (before any sweep).
        OutputError: ``out`` is a folder or a file that is not an lr-find page (before any
            sweep; it is left untouched).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tuner.outputs import check_file_target

    console = console or Console()
    path = out or default_figure_path(cfg)
    check_file_target(path, SWEEP_PAGE)  # before the sweep, not after it
    if path.suffix.lower() != ".html":  # X.png would hold HTML, and the PNG copy would clash
        raise LRFindError(
            f"--out {path} is invalid: the plot is a self-contained HTML page, so its name "
            f"must end in .html (the PNG copy is written beside it, with .png)."
        )
    names = list(optimizers) if optimizers else list(cfg.space.optimizers)
    for name in names:
        if name not in OPTIMIZERS:
            raise LRFindError(
                f"--optimizer {name!r} is invalid: must be one of {', '.join(OPTIMIZERS)}."
            )
    kwargs: dict[str, Any] = {
        "min_lr": MIN_LR if min_lr is None else min_lr,
        "max_lr": MAX_LR if max_lr is None else max_lr,
        "steps": STEPS if steps is None else steps,
    }
    if not kwargs["min_lr"] < kwargs["max_lr"]:
        raise LRFindError(
            f"--min-lr {kwargs['min_lr']:g} and --max-lr {kwargs['max_lr']:g} are invalid: "
            f"need min-lr < max-lr."
        )
    console.print(
        f"LR range test of study [bold]{cfg.name}[/bold] ({cfg.path}): {', '.join(names)}; "
        f"lr {kwargs['min_lr']:g} .. {kwargs['max_lr']:g} over {kwargs['steps']} mini-batches "
        f"of {cfg.training.batch_size} at most"
    )
    with Progress(
        TextColumn("[bold]LR range test"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), console=console, transient=True,
    ) as bar:
        task = bar.add_task("sweep", total=len(names), status="")
        sweeps = lr_range_tests(
            cfg, names, on_sweep=lambda s: bar.update(task, advance=1, status=s.optimizer),
            **kwargs,
        )
    try:
        bounds: AutoBounds | None = auto_bounds(sweeps)
    except LRFindError:
        bounds = None
    console.print(sweep_table(sweeps, bounds))
    path = write_sweep_figure(sweep_figure(sweeps, bounds), path)
    if bounds is not None:
        console.print(
            f'lr = "auto" would search [{bounds.low:.3g}, {bounds.high:.3g}] and start with '
            + ", ".join(f"{k} at {v:.3g}" for k, v in bounds.suggestions.items())
        )
    console.print(f"wrote {path}")
    _write_png_beside(sweep_figure(sweeps, bounds), path, console)
    failed = [s for s in sweeps if s.analyze().reason is not None]
    for s in failed:
        print(f"tuner: error: no suggested rate for {s.optimizer}: {s.analyze().reason}",
              file=sys.stderr)
    return 2 if failed else 0
