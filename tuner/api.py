"""``tuner.tune``: run a study from Python (a notebook, a script) by the path ``tuner tune`` takes.

::

    import tuner
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    result = tuner.tune({"study": {"name": "digits"}, "training": {"epochs": 5}},
                        data=(X, y), n_trials=8, confirm=False)
    model = result.best.build_model()

:func:`run_tune_command` is the whole of ``tuner tune`` (the study's settings, the storage,
the trials, the summary, the confirmation); the command line (:mod:`tuner.cli`) and
:func:`tune` both call it, so they print the same and refuse the same mistakes. This module
imports neither torch nor Optuna until a study runs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from tuner.errors import ConfigError, NoCompletedTrialError

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from tuner.config import StudyConfig
    from tuner.confirm import Confirmation
    from tuner.load import BestConfig

__all__ = ["TuneOptions", "TuneResult", "TuneRun", "tune", "study_config", "run_tune_command",
           "check_max_seeds", "IN_MEMORY_STORAGE"]

IN_MEMORY_STORAGE = "sqlite:///:memory:"
"""The storage of a study given as a dict (or a StudyConfig of none) when neither ``storage``,
``$OPTUNA_STORAGE`` nor ``[study] storage`` names one: in memory, nothing written."""

MEMORY = "<memory>"  # tuner.config's ``where`` (and StudyConfig.path) of a dict


@dataclass(frozen=True)
class TuneOptions:
    """The options of ``tuner tune`` (the command line's flags, in snake_case), checked by
    :meth:`check`. Defaults as on the command line."""

    n_trials: int | None = None
    storage: str | None = None
    seed: int | None = None
    timeout: float | None = None
    workers: int = 1
    heartbeat: int = 10  # tuner.workers.DEFAULT_HEARTBEAT_S (not imported: it imports optuna)
    worker_index: int = 0
    batch_trials: int | None = None
    threads: int | None = None
    confirm: bool = True
    confirm_top: int = 3  # tuner.confirm.DEFAULT_TOP
    confirm_seeds: int = 3  # tuner.confirm.DEFAULT_SEEDS
    confirm_max_seeds: int | None = None
    mlflow: bool = False
    mlflow_uri: str | None = None
    progress: bool = True

    def check(self) -> None:
        """Raise ConfigError (``name = value is invalid: must be ...``) for a value the
        command line's parser would refuse (it checks its flags itself)."""
        ints = {  # name -> (lowest, highest)
            "n_trials": (1, None), "seed": (0, 2**31 - 1), "workers": (1, None),
            "heartbeat": (0, None), "worker_index": (0, None), "batch_trials": (1, None),
            "threads": (1, None), "confirm_top": (1, None), "confirm_seeds": (1, None),
            "confirm_max_seeds": (1, None),
        }
        optional = {"n_trials", "seed", "batch_trials", "threads", "confirm_max_seeds"}
        for name, (low, high) in ints.items():
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= low
                    and (high is None or value <= high)):
                bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise ConfigError(f"{name} = {value!r} is invalid: must be an integer {bound}"
                                  f"{' (or None)' if name in optional else ''}.")
        if self.timeout is not None and not (
                isinstance(self.timeout, int | float) and not isinstance(self.timeout, bool)
                and self.timeout > 0):
            raise ConfigError(f"timeout = {self.timeout!r} is invalid: must be a number of "
                              "seconds > 0 (or None).")
        for name in ("confirm", "mlflow", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} = {getattr(self, name)!r} is invalid: must be True "
                                  "or False.")
        for name in ("storage", "mlflow_uri"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str | os.PathLike) and str(value)):
                raise ConfigError(f"{name} = {value!r} is invalid: must be a non-empty string "
                                  "(or None).")


@dataclass(frozen=True)
class TuneRun:
    """What :func:`run_tune_command` did (the command line turns it into an exit status).

    Attributes:
        status: 'ok', 'interrupted' (Ctrl-C / SIGTERM; trials in training closed as FAIL) or
            'no complete' (no COMPLETE trial with a finite value: ``message`` says what to
            change).
    """

    status: str
    cfg: StudyConfig
    storage_url: str
    study: optuna.Study
    confirmation: Confirmation | None = None
    message: str = ""

    @property
    def exit_status(self) -> int:
        """``tuner tune``'s exit status: 0, 130 (interrupted) or 1 (no complete trial)."""
        return {"ok": 0, "interrupted": 130, "no complete": 1}[self.status]


@dataclass(frozen=True)
class TuneResult:
    """What :func:`tune` returns.

    Attributes:
        study: the ``optuna.Study`` (in its storage: resume it by calling :func:`tune` again).
        best: the best configuration, exactly what ``tuner.load_best`` returns for the
            study's export (the confirmed winner when confirmed, else the best single trial):
            ``build_model()``, ``params``, ``build_optimizer(...)``, ``build_scheduler(...)``,
            ``load_data()``.
        confirmation: the closing confirmation (:class:`tuner.confirm.Confirmation`: its
            ``payload``, ``winner``, ``changed_winner``), or None with ``confirm=False``.
        config: the validated study settings the run used (:class:`tuner.StudyConfig`).
    """

    study: optuna.Study
    best: BestConfig
    confirmation: Confirmation | None
    config: StudyConfig


def tune(
    config: str | os.PathLike[str] | Mapping[str, Any] | StudyConfig,
    *,
    data: tuple[Any, Any] | None = None,
    model: Callable[..., Any] | None = None,
    n_trials: int | None = None,
    storage: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    heartbeat: int = 10,
    worker_index: int = 0,
    batch_trials: int | None = None,
    threads: int | None = None,
    confirm: bool = True,
    confirm_top: int = 3,
    confirm_seeds: int = 3,
    confirm_max_seeds: int | None = None,
    mlflow: bool = False,
    mlflow_uri: str | None = None,
    progress: bool = True,
) -> TuneResult:
    """Run (or resume) a study until it has ``n_trials`` finished trials, then confirm the top
    trials, as ``tuner tune`` does; the keywords are its flags (``--n-trials`` is
    ``n_trials``; ``--no-confirm`` is ``confirm=False``).

    Args:
        config: a study file (path), a dict with the sections of one (``{"study": {"name":
            ...}, "training": {...}}``), or a validated :class:`tuner.StudyConfig`.
        data: ``(X, y)`` instead of ``[dataset]``: X (n_samples, n_features) numbers, y
            (n_samples,) labels or targets; numpy arrays, torch tensors, pandas objects or
            lists. Checked, split, stratified and scaled as a data file is (labels become
            classes 0..C-1 in sorted order); the task is the config's ``[dataset] task``, else
            what the labels make obvious, else what ``[objective] metric`` implies. The
            study records the arrays' SHA-256 (``tuner.datasets.register_data``). The config's
            other ``[dataset]`` keys are replaced.
        model: ``model(n_features, n_outputs, **kwargs) -> torch.nn.Module`` instead of
            ``[model]`` (the config's ``[model] kwargs`` table, if any, are the kwargs); its
            output is (batch, n_outputs) logits or regression values.
        n_trials: finished (complete + pruned) trials to reach; default ``[study] n_trials``.
        storage: an Optuna storage URL or a file path. Default: ``$OPTUNA_STORAGE``, then
            ``[study] storage``, then ``tuner.db`` next to a study file; for a dict, in memory
            (nothing written: pass ``storage="tuner.db"`` to keep and resume the study).
        progress: False prints nothing (no progress bar, no summary; a note, such as a
            worker process that failed while the study still reached its target, comes as a
            ``RuntimeWarning``); True prints what ``tuner tune`` prints.
        The others: as ``tuner tune --help`` says (``seed``, ``timeout`` in seconds,
        ``workers``, ``heartbeat`` in seconds, ``worker_index``, ``batch_trials``, ``threads``,
        ``confirm``, ``confirm_top``, ``confirm_seeds``, ``confirm_max_seeds``, ``mlflow``,
        ``mlflow_uri``). ``workers`` > 1 cannot be combined with ``data`` or ``model``
        (worker processes start afresh and do not see this process's objects).

    Returns:
        A :class:`TuneResult`: ``.study``, ``.best``, ``.confirmation``, ``.config``.

    Raises:
        ConfigError: a mistake in the config, the data, the model or an option (one line, as
            the command line prints it; nothing is written).
        StorageError, DeviceError, TrackingError: the storage, the device or MLflow cannot be
            used (before any trial starts).
        NoCompletedTrialError: no trial completed (every one was pruned, diverged or failed);
            the message says what to change; the trials are in the storage.
        KeyboardInterrupt: interrupted (Ctrl-C, a notebook's interrupt): the trials in
            training were closed as FAIL; calling ``tune`` again with a storage resumes.
    """
    from rich.console import Console

    options = TuneOptions(
        n_trials=n_trials, storage=None if storage is None else os.fspath(storage), seed=seed,
        timeout=timeout, workers=workers, heartbeat=heartbeat, worker_index=worker_index,
        batch_trials=batch_trials, threads=threads, confirm=confirm, confirm_top=confirm_top,
        confirm_seeds=confirm_seeds, confirm_max_seeds=confirm_max_seeds, mlflow=mlflow,
        mlflow_uri=mlflow_uri, progress=progress,
    )
    options.check()
    console = Console(quiet=not progress)
    run = run_tune_command(lambda: study_config(config, data=data, model=model), options,
                           console, cli=False)
    if run.status == "interrupted":
        raise KeyboardInterrupt
    if run.status == "no complete":
        raise NoCompletedTrialError(run.message)
    from tuner.export import build_export
    from tuner.load import BestConfig

    best = BestConfig(build_export(run.study, run.cfg, run.storage_url))
    return TuneResult(run.study, best, run.confirmation, run.cfg)


# ---------------------------------------------------------------------------------------------
# The study's settings from a path, a dict or a StudyConfig, with data= and model= in place.


def study_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | StudyConfig,
    *,
    data: tuple[Any, Any] | None = None,
    model: Callable[..., Any] | None = None,
) -> StudyConfig:
    """The validated settings of ``config`` (a study file, a dict of its sections or a
    StudyConfig), with ``[dataset]`` replaced by ``data=(X, y)`` and ``[model]`` by
    ``model=callable`` where given (see :func:`tune`).

    Raises:
        ConfigError: one line naming the file (``<memory>`` for a dict), the key, the bad value
            and what is allowed; or starting ``data=(X, y):`` / ``model = ...`` for those.
    """
    from tuner.config import StudyConfig, parse_study_config, read_study_file

    if isinstance(config, StudyConfig):
        if data is None and model is None:
            return config
        return _replace_in_config(config, data, model)
    if isinstance(config, str | os.PathLike):
        where = os.fspath(config)
        raw = read_study_file(where)
    elif isinstance(config, Mapping):
        where, raw = MEMORY, copy.deepcopy(dict(config))
    else:
        raise ConfigError(
            f"config = {type(config).__name__} is invalid: must be a study file path, a dict "
            f"of its sections ({{'study': {{'name': ...}}, ...}}) or a tuner.StudyConfig."
        )
    if data is not None:
        given = raw.get("dataset")
        task = given.get("task") if isinstance(given, dict) else None
        raw["dataset"] = _data_section(data, task, raw.get("objective"), where)
    elif "dataset" not in raw:
        raise ConfigError(f"{where}: section [dataset] is missing: give it, or pass "
                          f"data=(X, y).")
    if model is not None:
        raw["model"] = _model_section(model, raw.get("model"))
    return parse_study_config(raw, where)


def _replace_in_config(cfg: StudyConfig, data: Any, model: Any) -> StudyConfig:
    """``cfg`` with its dataset and/or model replaced, validated as a study file would be
    (through a study of just those sections and the objective)."""
    from tuner.config import parse_study_config
    from tuner.models import model_dict

    objective = {"metric": cfg.objective.metric}
    sections: dict[str, Any] = {
        "study": {"name": cfg.name},
        "objective": objective,
        "dataset": (_data_section(data, None, objective, cfg.path) if data is not None
                    else cfg.to_dict()["dataset"]),
        "model": (_model_section(model, {"kwargs": dict(model_dict(cfg.model).get("kwargs")
                                                          or {})})
                  if model is not None else model_dict(cfg.model)),
    }
    mini = parse_study_config(sections, cfg.path)
    return replace(cfg, dataset=mini.dataset if data is not None else cfg.dataset,
                   model=mini.model if model is not None else cfg.model)


def _data_section(data: Any, task: Any, objective: Any, where: str) -> dict[str, Any]:
    """The ``[dataset]`` table of ``data=(X, y)``: the factory spec of the registered arrays
    and the task (given, else obvious from the labels, else left to ``[objective] metric``)."""
    from tuner.config import METRICS
    from tuner.datasets import register_data, registered_task

    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise ConfigError(
            f"data = {type(data).__name__} is invalid: must be a pair (X, y): X (n_samples, "
            f"n_features) numbers, y (n_samples,) labels or targets."
        )
    spec = register_data(data[0], data[1])
    section: dict[str, Any] = {"factory": spec}
    task = task if task is not None else registered_task(spec)
    if task is not None:
        section["task"] = task  # parse_study_config checks a given one
        return section
    metric = objective.get("metric") if isinstance(objective, Mapping) else None
    if METRICS.get(metric, ("any",))[0] == "any":
        raise ConfigError(
            f'{where}: data=(X, y): the task is not obvious (y holds integers with more than '
            f'two distinct values); set [dataset] task = "classification" or "regression" in '
            f'the config, or [objective] metric = "accuracy" or "rmse".'
        )
    return section


def _is_module(obj: Any) -> bool:
    """True for a ``torch.nn.Module`` instance (torch is imported only if it already is)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _model_section(model: Any, given: Any) -> dict[str, Any]:
    """The ``[model]`` table of ``model=callable``: its registered spec, and the config's
    ``[model] kwargs`` table (the callable's keyword arguments) if it has one."""
    from tuner.models import register_model_factory

    if _is_module(model):
        raise ConfigError(
            f"model = {type(model).__name__}(...) is a built model; pass the function that "
            f"builds one, model=fn with fn(n_features, n_outputs, **kwargs) -> torch.nn.Module "
            f"(each trial needs fresh weights)."
        )
    section: dict[str, Any] = {"factory": register_model_factory(model)}
    if isinstance(given, Mapping) and "kwargs" in given:
        section["kwargs"] = given["kwargs"]
    return section


def _in_process_only(cfg: StudyConfig) -> str | None:
    """What of ``cfg`` only this process can load (arrays, a callable), or None."""
    from tuner.datasets import is_registered_spec
    from tuner.models import OBJECT_PREFIX

    if is_registered_spec(cfg.dataset.factory):
        return "data=(X, y)"
    factory = getattr(cfg.model, "factory", None)
    if isinstance(factory, str) and factory.startswith(OBJECT_PREFIX + ":"):
        return "model="
    return None


# ---------------------------------------------------------------------------------------------
# ``tuner tune``: shared by the command line and tune().


def check_max_seeds(max_seeds: int | None, seeds: int, flag: str, seeds_flag: str) -> int | None:
    """``max_seeds`` checked against ``seeds`` (ConfigError naming the flags if below)."""
    if max_seeds is not None and max_seeds < seeds:
        raise ConfigError(
            f"{flag} {max_seeds} is below {seeds_flag} {seeds}: it must be >= {seeds_flag} "
            "(the seeds every candidate gets before close calls get more)."
        )
    return max_seeds


def run_tune_command(
    load: Callable[[], StudyConfig],
    options: TuneOptions,
    console: Console,
    *,
    cli: bool = True,
) -> TuneRun:
    """``tuner tune``: load the settings, run the trials with a progress bar, print the
    summary, and confirm the top trials.

    Args:
        load: returns the validated settings (called after the options are checked, before
            torch is imported).
        options: the command's options.
        console: where the header, the summary and the confirmation go (the progress bars go
            to stderr, or nowhere when ``console`` is quiet).
        cli: word messages for the command line (``--confirm-max-seeds``, "run the same
            command") rather than for :func:`tune` (``confirm_max_seeds``, "call tune again").

    Raises:
        TunerError: a mistake or an unusable storage, device or MLflow store, before any trial.
    """
    flag = (lambda name: "--" + name.replace("_", "-")) if cli else (lambda name: name)
    check_max_seeds(options.confirm_max_seeds, options.confirm_seeds, flag("confirm_max_seeds"),
                    flag("confirm_seeds"))  # a mistake stops before the trials, not after
    cfg = load()  # first: a bad study file is reported before torch is imported

    from rich.console import Console

    from tuner.storage import (
        STORAGE_ENV,
        check_shareable,
        is_in_memory,
        redact_url,
        resolve_storage_url,
    )

    if options.seed is not None:
        cfg = replace(cfg, study=replace(cfg.study, seed=options.seed))
    if (options.storage is None and cfg.path == MEMORY and not cfg.study.storage
            and not os.environ.get(STORAGE_ENV)):
        url = IN_MEMORY_STORAGE  # a dict: no study file to keep tuner.db next to
    else:
        url = resolve_storage_url(cfg, options.storage)
    local = _in_process_only(cfg)
    if options.workers > 1:
        if local is not None:
            raise ConfigError(
                f"{'--workers ' if cli else 'workers = '}{options.workers} cannot use {local}: "
                f"worker processes start afresh (not as copies of this process) and do not "
                f"see its objects; use one worker (batch_trials trains several trials at "
                f"once), or save X and y to a .npz file ([dataset] path) and put the model "
                f'function in a module ([model] factory = "module:function").'
            )
        check_shareable(url)  # before anything starts: workers cannot share memory
    from tuner.tracking import require_mlflow, resolve_tracking, tracking_summary

    tracking = resolve_tracking(
        cfg, options.mlflow_uri if options.mlflow_uri is not None
        else ("" if options.mlflow else None)
    )
    if tracking is not None:
        require_mlflow()  # one line naming the extra, before anything starts
    if options.workers > 1:  # it imports torch for the workers while this process loads
        from tuner.workers import start_worker_server

        start_worker_server(options.workers, options.threads)

    from tuner import collector
    from tuner.runner import run_tune  # torch
    from tuner.study import completed
    from tuner.summary import print_summary

    collector.settle()  # the program: collections from here on skip what was imported

    again = "run the same command" if cli else "call tuner.tune again with the same arguments"
    bars = Console(quiet=True) if console.quiet else None  # None: run_tune's stderr bar
    console.print(f"study [bold]{cfg.name}[/bold] from {cfg.path} -> {redact_url(url)}")
    outcome = run_tune(
        cfg, url, n_trials=options.n_trials, timeout=options.timeout, console=bars,
        progress=options.progress, workers=options.workers, heartbeat_s=options.heartbeat,
        worker_index=options.worker_index, batch_trials=options.batch_trials,
        threads=options.threads, tracking=tracking,
    )
    study = outcome.study
    if outcome.interrupted and not study.trials:
        console.print(f"[yellow]Interrupted before any trial started; {again} to "
                      "start.[/yellow]")
        return TuneRun("interrupted", cfg, url, study)
    print_summary(study, cfg, console)
    where = f" --storage {redact_url(url)}" if options.storage else ""
    commands = completed(study) and not is_in_memory(url) and cfg.path != MEMORY and not local
    console.print(
        f"{outcome.finished_after - outcome.finished_before} trials finished in "
        f"{outcome.seconds:.1f} s ({outcome.finished_after} in the study). "
        + (f"Export: tuner export {cfg.path}{where}   Dashboard: tuner dashboard "
           f"{cfg.path}{where}" if commands else "")
    )
    if tracking is not None:
        console.print(tracking_summary(tracking), markup=False)
    for note in outcome.notes:
        console.print(f"[yellow]note: {note}[/yellow]")
        if console.quiet and not cli:  # tuner.tune(progress=False) prints nothing: warn
            import warnings

            warnings.warn(f"tuner: {note}", RuntimeWarning, stacklevel=3)
    if outcome.interrupted:
        closed = (
            f"the {outcome.closed} trial(s) in training were closed as FAIL (user attribute "
            f"failed_reason)" if outcome.closed else "no trial was in training"
        )
        console.print(f"[yellow]Interrupted: {closed}; {again} to resume.[/yellow]")
        return TuneRun("interrupted", cfg, url, study)
    if not completed(study):
        from rich.markup import escape

        from tuner.confirm import no_complete_message

        message = no_complete_message(study, "confirm or export")
        console.print(f"[yellow]{escape(message)}[/yellow]")
        return TuneRun("no complete", cfg, url, study, message=message)
    confirmation = _confirm(study, cfg, options, console, bars) if options.confirm else None
    return TuneRun("ok", cfg, url, study, confirmation)


def _confirm(study: optuna.Study, cfg: StudyConfig, options: TuneOptions, console: Console,
             bars: Console | None) -> Confirmation:
    """``tuner tune``'s closing step: confirm the top trials with fresh seeds (issue 4)."""
    from tuner.confirm import print_confirmation, run_confirm
    from tuner.dashboard_notes import refresh_study_note

    confirmation = run_confirm(
        study, cfg, top=options.confirm_top, seeds=options.confirm_seeds,
        max_seeds=options.confirm_max_seeds, console=bars, progress=options.progress,
    )
    print_confirmation(confirmation, console)
    refresh_study_note(study, cfg)  # the study note (optuna-dashboard) shows the confirmation
    return confirmation


def options_from(namespace: Any) -> TuneOptions:
    """:class:`TuneOptions` from ``tuner tune``'s parsed arguments (``--no-confirm`` and
    ``--no-progress`` as ``confirm`` and ``progress``)."""
    values = {f.name: getattr(namespace, f.name) for f in fields(TuneOptions)
              if hasattr(namespace, f.name)}
    return TuneOptions(**values, confirm=not namespace.no_confirm,
                       progress=not namespace.no_progress)

