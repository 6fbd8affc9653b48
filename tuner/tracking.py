"""Optional MLflow logging of every trial ``tuner tune`` finishes (``pip install -e .[mlflow]``).

Turned on by ``tuner tune --mlflow`` (or ``--mlflow-uri URI``) or the study-file key
``[tracking] mlflow`` (``true`` or a URI/folder). Each trial this process tells (COMPLETE,
PRUNED, or FAIL with a NaN metric) becomes one MLflow run, in the experiment named after the study:

- params: the trial's parameters (``trial.params``);
- metrics: ``value`` (COMPLETE trials; Optuna's ``MLflowCallback`` name), and per epoch
  (``step`` = the 1-based epoch): ``val_<metric>`` (the intermediate values the pruner saw),
  ``lr`` (the rate of the epoch's first step) and ``train_loss``; the final ``val_loss`` and
  test figures where recorded;
- tags: as ``MLflowCallback`` writes them (``number``, ``state``, ``direction``, ``study``),
  plus ``outcome`` (complete/pruned/diverged), ``pruned_reason`` (the pruner's or the
  divergence's words), ``failed_reason`` and ``seed``;
- at the end of the run, the best configuration (the ``tuner export`` JSON) as the artifact
  ``best_config.json`` of the best trial's run, tagged ``best = true``.

Optuna's own ``optuna_integration.mlflow.MLflowCallback`` is not used: it is deprecated since
optuna-integration 4.9 (removal in 6.0), sets MLflow's process-wide tracking URI and
experiment, and logs only the final value, the params and the user attributes as tags. This
module writes through :class:`mlflow.tracking.MlflowClient` (no process-wide state), one
``log_batch`` per trial, with the same run names and tags.

With ``--workers N`` each worker process logs the trials it told; a trial is told by exactly
one process (``tuner.lifecycle``), so no run is logged twice. The experiment is created by the
``tune`` process before the workers start.

Where: a URI is used as given (``sqlite:///...``, ``http://host:5000``, ...); a folder (no
``://``) holds an SQLite store ``mlflow.db`` and the artifacts ``artifacts/``, relative to the
study file's folder (study file) or the working directory (``--mlflow-uri``). Default:
the folder ``mlruns`` next to the study file. (MLflow 3 refuses its ``file://`` store unless
``MLFLOW_ALLOW_FILE_STORE=true``; the SQLite store works offline with ``mlflow-skinny``.)
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import StudyConfig
from tuner.errors import TunerError

__all__ = [
    "BEST_ARTIFACT",
    "DEFAULT_FOLDER",
    "MlflowTracker",
    "TrackingError",
    "TrackingTarget",
    "require_mlflow",
    "resolve_tracking",
    "tracking_summary",
]

_log = logging.getLogger("tuner")

DEFAULT_FOLDER = "mlruns"  # next to the study file
DB_FILE = "mlflow.db"
ARTIFACT_FOLDER = "artifacts"
BEST_ARTIFACT = "best_config.json"
INSTALL_HINT = "MLflow logging needs the mlflow extra: pip install -e .[mlflow]"

# MLflow run status per Optuna state
_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED",
           TrialState.FAIL: "FAILED"}


class TrackingError(TunerError):
    """MLflow logging cannot start: the extra is missing, or the tracking store is unusable."""


@dataclass(frozen=True)
class TrackingTarget:
    """Where the runs go: a tracking URI and, for a local store, its artifact folder URI."""

    uri: str
    artifact_location: str | None = None


def resolve_tracking(cfg: StudyConfig, override: str | None = None) -> TrackingTarget | None:
    """The MLflow store for a study, or None when logging is off.

    Args:
        cfg: the study; ``[tracking] mlflow`` is false (off), true (the default folder) or a
            URI/folder (relative folders: to the study file's folder).
        override: ``--mlflow-uri`` (None: not given; ``""``: ``--mlflow``, the
            default folder); relative folders are taken from the working directory.
    """
    setting: bool | str = cfg.tracking.mlflow
    base = cfg.study_dir
    if override is not None:
        setting, base = (override or True), (Path.cwd() if override else cfg.study_dir)
    if setting is False:
        return None
    where = DEFAULT_FOLDER if setting is True else str(setting)
    if "://" in where:
        return TrackingTarget(where)
    folder = (base / Path(where).expanduser()).resolve()
    return TrackingTarget(f"sqlite:///{folder / DB_FILE}", (folder / ARTIFACT_FOLDER).as_uri())


def require_mlflow() -> None:
    """Raises TrackingError (one line: ``pip install -e .[mlflow]``) if mlflow is missing."""
    _import_mlflow()


def _import_mlflow() -> Any:
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise TrackingError(f"{INSTALL_HINT} ({exc})") from None
    return MlflowClient


class MlflowTracker:
    """Logs the trials of one study to one MLflow experiment (see the module docstring).

    Args:
        target: the store (:func:`resolve_tracking`).
        study_name: the experiment's name; created if missing.
        metric: the objective's metric name (``val_<metric>`` per epoch).

    Raises:
        TrackingError: mlflow is not installed, or the store cannot be opened.
    """

    def __init__(self, target: TrackingTarget, study_name: str, metric: str) -> None:
        client_cls = _import_mlflow()
        from mlflow.exceptions import MlflowException

        self.target = target
        self.metric = metric
        if target.artifact_location and target.uri.startswith("sqlite:///"):
            Path(target.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = client_cls(tracking_uri=target.uri)
            self.experiment_id = self._experiment(study_name, MlflowException)
        except MlflowException as exc:
            first = (str(exc.message).strip().splitlines() or [type(exc).__name__])[0]
            raise TrackingError(f"MLflow store {target.uri}: {first}") from None

    def _experiment(self, name: str, mlflow_exception: type[Exception]) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                name, artifact_location=self.target.artifact_location
            )
        except mlflow_exception:  # created meanwhile by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # --- per trial ------------------------------------------------------------------------

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Log one told trial; a failure to log is one warning line (the tuning goes on)."""
        try:
            self.log_trial(study, trial)
        except Exception as exc:  # noqa: BLE001 (tracking never stops a study)
            _log.warning("MLflow: trial %d not logged to %s (%s: %s)", trial.number,
                         self.target.uri, type(exc).__name__, str(exc).splitlines()[0])

    def log_trial(self, study: optuna.Study, trial: FrozenTrial) -> str:
        """Log ``trial`` as a new run; returns its run id."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        attrs = trial.user_attrs
        tags = {
            "number": str(trial.number),
            "state": trial.state.name,
            "direction": study.direction.name,
            "study": study.study_name,
            "datetime_start": str(trial.datetime_start),
            "datetime_complete": str(trial.datetime_complete),
        }
        for key in ("outcome", "pruned_reason", "failed_reason", "seed"):
            if key in attrs:
                tags[key] = str(attrs[key])
        tags = {k: v[:MAX_TAG_VAL_LENGTH] for k, v in tags.items()}
        ms = _timestamp(trial)
        metrics = [Metric(f"val_{self.metric}", float(v), ms, int(step))
                   for step, v in sorted(trial.intermediate_values.items()) if _finite(v)]
        from tuner.study import trial_series  # the series live in a system attribute

        for name, key in (("lr", "lr_per_epoch"), ("train_loss", "train_loss_per_epoch")):
            metrics += [Metric(name, float(v), ms, epoch)
                        for epoch, v in enumerate(trial_series(trial, key), start=1)
                        if _finite(v)]
        if trial.state == TrialState.COMPLETE and _finite(trial.value):
            metrics.append(Metric("value", float(trial.value), ms, 0))  # type: ignore[arg-type]
        for key in ("val_loss", "test_metric", "test_loss"):
            if _finite(attrs.get(key)):
                metrics.append(Metric(key, float(attrs[key]), ms, 0))
        params = [Param(k, str(v)) for k, v in trial.params.items()]
        run = self.client.create_run(
            self.experiment_id, run_name=str(trial.number),
            start_time=_timestamp(trial, start=True),
        )
        run_id = run.info.run_id
        self.client.log_batch(run_id, metrics=metrics, params=params,
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, _STATUS.get(trial.state, "FAILED"), end_time=ms)
        return run_id

    # --- end of the run -------------------------------------------------------------------

    def log_best(self, study: optuna.Study, cfg: StudyConfig, storage_url: str) -> str | None:
        """Attach the best configuration (``tuner export``'s JSON) to the best trial's run as
        :data:`BEST_ARTIFACT`; the run is logged first if missing (a trial of an earlier,
        untracked run). Returns the run id; None when the study has no COMPLETE trial or the
        logging failed (one warning line)."""
        from tuner.errors import NoCompletedTrialError
        from tuner.export import build_export, dumps_export

        try:
            data = build_export(study, cfg, storage_url)
        except NoCompletedTrialError:
            return None
        number = int(data["trial"])
        try:
            run_id = self._run_of(number)
            if run_id is None:
                trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
                run_id = self.log_trial(study, trial)
            for old in self.client.search_runs(
                [self.experiment_id], filter_string="tags.best = 'true'"
            ):
                if old.info.run_id != run_id:
                    self.client.set_tag(old.info.run_id, "best", "false")
            with tempfile.TemporaryDirectory(prefix="tuner-mlflow-") as tmp:
                path = Path(tmp) / BEST_ARTIFACT
                path.write_text(dumps_export(data, "json"))
                self.client.log_artifact(run_id, str(path))
            self.client.set_tag(run_id, "best", "true")
            return run_id
        except Exception as exc:  # noqa: BLE001 (tracking never fails a finished study)
            _log.warning("MLflow: the best configuration was not logged to %s (%s: %s)",
                         self.target.uri, type(exc).__name__, str(exc).splitlines()[0])
            return None

    def _run_of(self, number: int) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.number = '{number}'", max_results=1
        )
        return runs[0].info.run_id if runs else None


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _timestamp(trial: FrozenTrial, start: bool = False) -> int:
    """Milliseconds since the epoch of the trial's start or completion (now if unknown)."""
    import time

    when = trial.datetime_start if start else (trial.datetime_complete or trial.datetime_start)
    return int((when.timestamp() if when else time.time()) * 1000)


def tracking_summary(target: TrackingTarget) -> str:
    """One line for the console: where the runs went."""
    return f"MLflow: runs logged to {target.uri} (mlflow ui --backend-store-uri {target.uri})"

