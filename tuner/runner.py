"""``tuner tune``: run a study to its requested number of finished trials, with a progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tuner.batched import DEFAULT_BATCH_TRIALS, batch_unsupported_reason
from tuner.batched_runner import run_batched
from tuner.config import StudyConfig
from tuner.study import FINISHED, count_finished, make_objective, open_study, trial_kind

__all__ = ["TuneOutcome", "run_tune"]


@dataclass(frozen=True)
class TuneOutcome:
    """What a ``tune`` run did: the study, trials finished before and now, wall seconds."""

    study: optuna.Study
    finished_before: int
    finished_after: int
    seconds: float


def run_tune(
    cfg: StudyConfig,
    storage_url: str,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    console: Console | None = None,
    progress: bool = True,
    batch_trials: int | None = None,
) -> TuneOutcome:
    """Create or resume the study and run trials until ``n_trials`` have finished.

    Args:
        cfg: the validated study.
        storage_url: an Optuna storage URL (see ``study.resolve_storage_url``).
        n_trials: finished trials to reach (default ``[study] n_trials``); a resumed study is
            topped up, never run past it.
        timeout: seconds after which no new trial starts (default ``[study] timeout``).
        console: where the progress bar goes.
        progress: False for no progress bar.
        batch_trials: trials trained in lockstep as one batched model (default
            ``DEFAULT_BATCH_TRIALS`` where the model can be batched; 1 = one at a time).

    Raises:
        StorageError, DeviceError, ConfigError: before any trial starts.
    """
    target = n_trials if n_trials is not None else cfg.study.n_trials
    timeout = timeout if timeout is not None else cfg.study.timeout
    objective = make_objective(cfg)  # data and device first: nothing is written if they fail
    study = open_study(cfg, storage_url)
    before = count_finished(study)
    started = time.perf_counter()
    console = console or Console(stderr=True)
    batch_trials = _resolve_batch_trials(cfg, batch_trials, console)  # issue 6: batched trials

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task(cfg.name, total=target, completed=min(before, target), status="")

        def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done = count_finished(study)
            try:
                best = f"best {study.best_value:.4g}"
            except ValueError:
                best = "no complete trial yet"
            bar.update(
                task,
                completed=min(done, target),
                status=f"#{trial.number} {trial_kind(trial)} | {best}",
            )
            if done >= target and batch_trials == 1:
                study.stop()

        if before < target and batch_trials > 1:
            run_batched(
                study, objective, target=target, batch_trials=batch_trials, timeout=timeout,
                on_trial=lambda trial: on_trial(study, trial),
            )
        elif before < target:
            study.optimize(
                objective,
                n_trials=None,
                timeout=timeout,
                callbacks=[on_trial],
                catch=(),
            )
    return TuneOutcome(study, before, count_finished(study), time.perf_counter() - started)


def _resolve_batch_trials(cfg: StudyConfig, requested: int | None, console: Console) -> int:
    """Batched trials by default; one at a time where the model cannot be batched."""
    reason = batch_unsupported_reason(cfg)
    if reason is None:
        return requested if requested is not None else DEFAULT_BATCH_TRIALS
    if requested is not None and requested > 1:
        console.print(f"[yellow]--batch-trials {requested} ignored: {reason}; "
                      f"trials run one at a time.[/yellow]")
    return 1


def remaining(study: optuna.Study, target: int) -> int:
    """Trials still to finish to reach ``target``."""
    return max(0, target - len(study.get_trials(deepcopy=False, states=FINISHED)))
