"""Studies: storage resolution, sampler and pruner by name, the objective, and the run loop.

Data flows one way: the validated :class:`~tuner.config.StudyConfig` -> an Optuna study
(sampler, pruner, storage) -> the objective (suggest -> engine -> intermediate values) -> storage.
Running the same study file again resumes the study and tops it up to ``n_trials`` finished
(COMPLETE + PRUNED) trials.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.batched import train_one
from tuner.config import PrunerConfig, SamplerConfig, StudyConfig
from tuner.datasets import SplitData, is_registered_spec, registered_sha256
from tuner.engine import TrainResult, resolve_device
from tuner.errors import ConfigError, StorageError, TunerError
from tuner.models import study_split
from tuner.shared_reads import wrap as wrap_shared
from tuner.space import suggest_params
from tuner.storage import (
    check_storage_exists,
    make_storage,
    redact_url,
    resolve_storage_url,
    set_trial_attrs,
)

__all__ = [
    "FINISHED",
    "resolve_storage_url",
    "SAMPLERS",
    "PRUNERS",
    "make_sampler",
    "resume_seed",
    "make_pruner",
    "open_study",
    "load_existing_study",
    "record_result",
    "SERIES_ATTR",
    "trial_series",
    "make_objective",
    "count_finished",
    "redact_url",
    "trial_kind",
    "completed",
    "best_trial",
    "best_value",
    "nonfinite_trials",
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

optuna.logging.set_verbosity(optuna.logging.WARNING)
# multivariate/group TPE is marked experimental; the warning says nothing a user can act on
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def resume_seed(base: int, n_existing: int) -> int:
    """The sampler seed of a run that finds ``n_existing`` trials in its study.

    A fresh study (``n_existing == 0``) keeps ``base``; a resumed one gets a seed derived from
    both (:class:`numpy.random.SeedSequence`), so that it does not replay the draws of the runs
    before it, and the same sequence of runs still gives the same trials. In [0, 2**32).
    """
    if n_existing == 0:
        return base
    return int(np.random.SeedSequence([base, n_existing]).generate_state(1)[0])


class TrialIndexedQMCSampler(optuna.samplers.QMCSampler):
    """Optuna's QMC sampler (unscrambled Sobol) that takes point ``n - 1`` for trial ``n``.

    ``optuna.samplers.QMCSampler`` counts its points in a study attribute that it reads and
    writes back without a transaction (its own comment says so), so two workers asking at once
    get the same point and train the same configuration. Trial numbers are handed out by the
    storage, one per trial, so indexing by them gives every trial its own point, in every
    process; a resumed study continues the sequence where it stopped (skipping one point per
    trial that failed or was cancelled). Trial 0 is drawn by the independent sampler, as in
    Optuna, so a sequential study takes the same points as with Optuna's counter.
    """

    _number = 0  # the trial being sampled (tuner samples from one thread per process)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        self._number = trial.number
        return super().sample_relative(study, trial, search_space)

    def _find_sample_id(self, study: optuna.Study, search_space: dict[str, Any]) -> int:
        # overrides Optuna's shared counter (tests/test_resume.py checks that it is used)
        return max(0, self._number - 1)


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: ``build(section, seed)`` -> a fresh Optuna sampler.

    ``section`` is the validated ``[sampler]`` section; ``seed`` the sampler's seed.
    """

    name: str
    build: Callable[[SamplerConfig, int], optuna.samplers.BaseSampler]
    description: str


def _tpe(s: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=s.n_startup_trials,
        multivariate=True,
        group=True,  # the schedule's parameters are conditional on the schedule
        constant_liar=True,  # no effect unless trials run concurrently
    )


def _independent_tpe(s: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The independent sampler of ``gp`` and ``cmaes``: univariate TPE (each parameter on its
    own, from the trials that have it), so the parameters they do not model are still learnt
    rather than drawn at random; its first ``n_startup_trials`` finished trials are random."""
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=s.n_startup_trials, constant_liar=True
    )


class _PrunedAsComplete:
    """A read view of a study in which every PRUNED trial with a reported value reads as
    COMPLETE with its last reported value (what ``CmaEsSampler(consider_pruned_trials=True)``
    does for CMA-ES); everything else is the study's."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = False, states: Any = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        import copy

        wanted = None if states is None else tuple(states)
        as_complete = wanted is not None and TrialState.COMPLETE in wanted \
            and TrialState.PRUNED not in wanted
        ask = wanted + (TrialState.PRUNED,) if as_complete else wanted  # type: ignore[operator]
        out = []
        for t in self._study._get_trials(deepcopy=deepcopy, states=ask, use_cache=use_cache):
            if as_complete and t.state == TrialState.PRUNED:
                if not t.intermediate_values:
                    continue  # diverged in its first epoch: no value to learn from
                value = t.intermediate_values[max(t.intermediate_values)]
                if not math.isfinite(value):
                    continue
                t = copy.deepcopy(t)
                t.state, t.value = TrialState.COMPLETE, value
            out.append(t)
        return out


class PrunedAwareGPSampler(optuna.samplers.GPSampler):
    """Optuna's GPSampler that also learns from PRUNED trials, at their last reported value.

    GPSampler fits only COMPLETE trials and counts only them for ``n_startup_trials``; with
    successive halving about one trial in twenty completes, so it stayed in its start-up phase
    for a whole 600-epoch digits search on 7 seeds of 10 (``bench/bench_samplers.py``). A
    pruned trial's last validation value is from fewer epochs, and worse than the trials that
    went on at that rung, which is what the GP then learns of its region (as TPE and tuner's
    CMA-ES do).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # the parameters of every trial it fits, pruned ones included (as GPSampler's own
        # infer_relative_search_space, over COMPLETE and PRUNED trials)
        self._fitted_space = optuna.search_space.IntersectionSearchSpace(include_pruned=True)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, Any]:
        return {name: d for name, d in self._fitted_space.calculate(study).items()
                if not d.single()}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return super().sample_relative(
            _PrunedAsComplete(study), trial, search_space  # type: ignore[arg-type]
        )


def _gp(s: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    # GPSampler models the parameters every COMPLETE trial has (Optuna's intersection search
    # space: lr, weight_decay and the categorical optimizer and schedule, which it handles
    # natively); the conditional ones (optimizer.momentum/nesterov, schedule.*) and every
    # parameter of its first n_startup_trials finished trials go to the independent sampler.
    # That fallback is by design here, so Optuna's per-parameter warning is off.
    return PrunedAwareGPSampler(
        seed=seed,
        n_startup_trials=s.n_startup_trials,
        independent_sampler=_independent_tpe(s, seed),
        warn_independent_sampling=False,
    )


class UnconditionalCmaEsSampler(optuna.samplers.CmaEsSampler):
    """Optuna's CMA-ES on the float parameters that every trial of tuner's space has.

    CMA-ES models only float and int parameters of Optuna's intersection search space (the
    parameters all COMPLETE trials share), and cannot change its dimension once started: a
    conditional parameter in that intersection at the start (``optimizer.momentum`` while only
    SGD trials have completed) makes it fall back to the independent sampler for the rest of
    the study when the first other trial completes. tuner's conditional parameters are the
    namespaced ones (``optimizer.*``, ``schedule.*``, see :mod:`tuner.space`), so they are left
    out from the start: CMA-ES models ``lr`` and ``weight_decay`` (log-scaled, as sampled).
    """

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, Any]:
        space = super().infer_relative_search_space(study, trial)
        return {name: d for name, d in space.items() if "." not in name}


def _cmaes(s: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    return UnconditionalCmaEsSampler(
        seed=seed,
        n_startup_trials=s.n_startup_trials,
        independent_sampler=_independent_tpe(s, seed),  # optimizer, schedule, conditionals
        warn_independent_sampling=False,  # that fallback is by design (see above)
        # a pruned trial counts with its last validation value: with successive halving most
        # trials are pruned, and CMA-ES would otherwise wait for a population of COMPLETE ones
        consider_pruned_trials=True,
    )


SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("tpe", _tpe, "multivariate, grouped TPE with the constant liar"),
        SamplerSpec("random", lambda s, seed: optuna.samplers.RandomSampler(seed=seed),
                    "independent uniform draws"),
        SamplerSpec("qmc", lambda s, seed: TrialIndexedQMCSampler(
                        seed=seed, warn_independent_sampling=False),  # conditionals: random
                    "unscrambled Sobol points, point n - 1 for trial n"),
        SamplerSpec("gp", _gp, "Gaussian-process Bayesian optimization (logEI; qLogEI with "
                    "running trials)"),
        SamplerSpec("cmaes", _cmaes, "CMA-ES on lr and weight decay, univariate TPE for the rest"),
    )
}
"""``[sampler] name`` -> its :class:`SamplerSpec` (config's choices; tests/test_study.py checks
that the two agree)."""


@dataclass(frozen=True)
class PrunerSpec:
    """A registered pruner: ``build(section, epochs)`` -> a fresh Optuna pruner whose resource
    is the epoch (``epochs``: ``[training] epochs``, the most a trial runs)."""

    name: str
    build: Callable[[PrunerConfig, int], optuna.pruners.BasePruner]
    description: str


PRUNERS: dict[str, PrunerSpec] = {
    p.name: p
    for p in (
        PrunerSpec(
            "successive_halving",
            lambda p, epochs: optuna.pruners.SuccessiveHalvingPruner(
                min_resource=min(p.min_resource, epochs), reduction_factor=p.reduction_factor
            ),
            "one bracket of successive halving",
        ),
        PrunerSpec(
            "hyperband",
            lambda p, epochs: optuna.pruners.HyperbandPruner(
                min_resource=min(p.min_resource, epochs),
                max_resource=epochs,
                reduction_factor=p.reduction_factor,
            ),
            "Hyperband: brackets of successive halving",
        ),
        PrunerSpec(
            "median",
            lambda p, epochs: optuna.pruners.MedianPruner(
                n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
            ),
            "below the median of earlier trials at the same epoch",
        ),
        PrunerSpec("none", lambda p, epochs: optuna.pruners.NopPruner(), "never prunes"),
    )
}
"""``[pruner] name`` -> its :class:`PrunerSpec` (config's choices and ``PRUNER_KEYS``; checked
by tests/test_study.py)."""


def make_sampler(cfg: StudyConfig, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler (:data:`SAMPLERS`), seeded with ``seed`` (default ``[study]
    seed``).

    Parallel workers pass distinct seeds (``tuner.workers``); TPE uses the constant liar, so
    trials still running elsewhere count as bad results and workers spread out.
    """
    return SAMPLERS[cfg.sampler.name].build(cfg.sampler, cfg.study.seed if seed is None else seed)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """The configured pruner (:data:`PRUNERS`); its resource is the epoch.

    Successive halving is the default rather than Hyperband: Optuna's ``HyperbandPruner`` shows
    the sampler only the trials of the asking trial's bracket (``optuna.pruners._filter_study``),
    so with three brackets TPE models a third of the study and its ``n_startup_trials`` random
    trials are drawn per bracket, which makes it slower to a good trial than one bracket of
    successive halving (``bench/bench_quality.py``).
    """
    return PRUNERS[cfg.pruner.name].build(cfg.pruner, cfg.training.epochs)


def open_study(
    cfg: StudyConfig,
    storage_url: str,
    *,
    sampler_seed: int | None = None,
    storage_kwargs: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create the study or load it to resume (same name, same storage).

    The sampler is seeded with :func:`resume_seed` of the base seed and the number of trials
    already in the study: a fresh study draws exactly as ``[study] seed`` says, and a resumed
    one draws new points instead of replaying the start of the sampler's sequence (QMC also
    continues its sequence: Optuna keeps its index in the study). The same seed and the same
    sequence of runs give the same trials.

    Args:
        sampler_seed: the base seed, default ``[study] seed`` (parallel workers offset it).
        storage_kwargs: passed to ``make_storage`` (heartbeats: ``workers.heartbeat_kwargs``).
    """
    study = optuna.create_study(
        # reads shared by the sampler's and the pruner's calls (tuner.shared_reads)
        storage=wrap_shared(make_storage(storage_url, **(storage_kwargs or {}))),
        study_name=cfg.name,
        direction=cfg.direction,
        sampler=optuna.samplers.RandomSampler(),  # replaced below, once the trials are counted
        pruner=make_pruner(cfg),
        load_if_exists=True,
    )
    check_settings(study, cfg, storage_url)
    base = cfg.study.seed if sampler_seed is None else sampler_seed
    n_existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(cfg, resume_seed(base, n_existing))
    return study


SETTINGS_ATTR = "tuner:settings"
"""Study system attribute: the settings that make its trials comparable (see check_settings).

A system attribute, since optuna-dashboard shows user attributes as raw JSON (the study note
shows the settings as TOML); studies of older tuner versions hold it as a user attribute."""
SETTINGS_SECTIONS = ("dataset", "split", "model", "training", "objective", "space", "divergence")


def check_settings(study: optuna.Study, cfg: StudyConfig, storage_url: str) -> None:
    """Record the study's settings on first use; refuse to resume with different ones.

    Trials trained on other data, another model or budget, or sampled from another space
    cannot be ranked together (and Optuna refuses a changed categorical choice), so a resumed
    study must keep the sections in :data:`SETTINGS_SECTIONS`; ``[study]`` (trial count, seed,
    timeout), ``[sampler]`` and ``[pruner]`` may change.

    Raises:
        ConfigError: the stored settings differ; the message names the first differing key,
            both values, and how to start a separate study. Also when the study exists with
            another direction, or with trials tuner did not make (no settings recorded).
            Nothing is written then.
    """
    plain = cfg.to_dict()
    current = json.loads(json.dumps({k: plain[k] for k in SETTINGS_SECTIONS}))
    storage, study_id = study._storage, study._study_id
    where = f"the study '{cfg.name}' already in {redact_url(storage_url)}"
    directions = [d.name.lower() for d in study.directions]
    if directions != [cfg.direction]:
        raise ConfigError(
            f"{cfg.path}: {where} is to {' and '.join(directions)} ({len(directions)} "
            f"objective(s)), but [objective] {cfg.objective.metric} is to {cfg.direction}; "
            f"its trials would be ranked the wrong way. Give the study a new [study] name, or "
            f"use another --storage."
        )
    stored = storage.get_study_system_attrs(study_id).get(SETTINGS_ATTR)
    stored = stored if stored is not None else study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        made = len(study.get_trials(deepcopy=False))
        if made:
            raise ConfigError(
                f"{cfg.path}: {where} has {made} trial(s) that tuner did not make (it records "
                f"its settings on a study it starts): they cannot be ranked with tuner's. Give "
                f"the study a new [study] name, or use another --storage."
            )
        storage.set_study_system_attr(study_id, SETTINGS_ATTR, current)
        return
    if stored == current:
        return
    for section in SETTINGS_SECTIONS:
        old, new = stored.get(section, {}), current[section]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key) and section == "dataset" and key == "sha256" \
                    and isinstance(old.get(key), str) and isinstance(new.get(key), str):
                raise ConfigError(  # the same settings, but the data file changed
                    f"{cfg.path}: [dataset] path = {json.dumps(new.get('path'))} changed since "
                    f"the study '{cfg.name}' in {redact_url(storage_url)} started (sha256 "
                    f"{new[key][:12]}..., was {old[key][:12]}...); its trials were trained on "
                    f"the old data. Restore the file, or give the study a new [study] name, or "
                    f"use another --storage."
                )
            if old.get(key) != new.get(key) and section == "dataset" and key == "factory" \
                    and is_registered_spec(old.get(key)) and is_registered_spec(new.get(key)):
                raise ConfigError(  # tuner.tune(data=(X, y)) with other arrays
                    f"{cfg.path}: data=(X, y) differs from the arrays the study '{cfg.name}' in "
                    f"{redact_url(storage_url)} was started with (sha256 "
                    f"{registered_sha256(new[key])[:12]}..., was "
                    f"{registered_sha256(old[key])[:12]}...); its trials were trained on the "
                    f"other data. Pass the same arrays, or give the study a new [study] name, "
                    f"or use another storage."
                )
            if old.get(key) != new.get(key):
                raise ConfigError(
                    f"{cfg.path}: [{section}] {key} = {json.dumps(new.get(key))} differs from "
                    f"the study '{cfg.name}' already in {redact_url(storage_url)} "
                    f"({json.dumps(old.get(key))}); its trials could not be compared with new "
                    f"ones. Give the study a new [study] name, or use another --storage."
                )


def load_existing_study(cfg: StudyConfig, storage_url: str) -> optuna.Study:
    """Load a study that must already exist.

    Raises:
        StorageError: the storage has no study of that name (run ``tuner tune`` first).
    """
    check_storage_exists(storage_url)
    storage = make_storage(storage_url)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if cfg.name not in names:
        raise StorageError(
            f"study '{cfg.name}' is not in {redact_url(storage_url)} "
            f"(it has: {', '.join(names) or 'no study'}); run `tuner tune {cfg.path}` first."
        )
    return optuna.load_study(study_name=cfg.name, storage=storage, sampler=make_sampler(cfg),
                             pruner=make_pruner(cfg))


def count_finished(study: optuna.Study) -> int:
    """COMPLETE + PRUNED trials (diverged trials are PRUNED)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def trial_kind(trial: FrozenTrial) -> str:
    """'complete', 'pruned', 'diverged', 'failed', 'running' or 'waiting' for people."""
    if trial.state == TrialState.PRUNED:
        return "diverged" if trial.user_attrs.get("divergence") else "pruned"
    return {
        TrialState.COMPLETE: "complete",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }[trial.state]


def _finite_or_str(v: float | None) -> float | str | None:
    if v is None:
        return None
    return float(v) if math.isfinite(v) else str(v)


def record_result(trial: optuna.trial.BaseTrial, result: TrainResult, seed: int) -> None:
    """Write what a person needs to understand the trial into its user attributes.

    User attributes are short scalars (``outcome``: complete, pruned or diverged, ``seed``,
    ``val_metric``, ...) plus ``divergence`` on a diverged trial; the per-epoch series go to
    the system attribute :data:`SERIES_ATTR` (read them with :func:`trial_series`).
    """
    attrs: dict[str, Any] = {
        "outcome": result.status,
        "seed": seed,
        "epochs_run": result.epochs,
        "steps": result.steps,
        "seconds": round(result.seconds, 4),
        "engine": result.engine,
        "val_metric": _finite_or_str(result.val_metric),
        "val_loss": _finite_or_str(result.val_loss),
    }
    if result.test_metric is not None:
        attrs["test_metric"] = _finite_or_str(result.test_metric)
        attrs["test_loss"] = _finite_or_str(result.test_loss)
    if result.divergence is not None:
        attrs["divergence"] = result.divergence.to_attrs()
        attrs["pruned_reason"] = "diverged: " + result.divergence.message()
    elif result.status == "pruned":
        attrs["pruned_reason"] = (
            f"pruner: validation metric {result.val_metric:.4g} at epoch {result.epochs} "
            f"lagged behind other trials"
        )
    series = {
        "lr_per_epoch": [r.lr for r in result.history],
        "train_loss_per_epoch": [_finite_or_str(r.train_loss) for r in result.history],
    }
    system: dict[str, Any] = {SERIES_ATTR: series}
    folder = artifact_folder(getattr(trial, "storage", None))
    if folder is not None:  # optuna-dashboard lists it on the trial's page
        system.update(_write_series_artifact(folder, trial.number, series))
    # one transaction on a SQLite file, not one per attribute
    set_trial_attrs(trial, attrs, system_attrs=system)


SERIES_ATTR = "tuner:series"
"""Trial system attribute: the per-epoch series (``lr_per_epoch``, ``train_loss_per_epoch``).

Kept out of the user attributes, which optuna-dashboard shows as one table column each (a list
made every row of its trial table hundreds of pixels tall); the dashboard lists them per trial
as a JSON artifact instead (``tuner.dashboard_notes``)."""


ARTIFACTS_SUFFIX = ".artifacts"
"""Optuna artifact store of a file storage: the folder ``<storage file>.artifacts`` beside it."""


def artifact_folder(storage: Any) -> Path | None:
    """The artifact folder of an SQLite or journal file storage (``tuner.db.artifacts``).

    None for a database server (PostgreSQL, MySQL) or in memory: there the per-epoch series
    stay only in :data:`SERIES_ATTR` (``tuner report`` and the figures read them), since no
    folder is known to every process and to the dashboard.
    """
    from optuna.storages import JournalStorage
    from optuna.storages._cached_storage import _CachedStorage

    if isinstance(storage, _CachedStorage):
        storage = storage._backend
    file: Any = None
    if isinstance(storage, JournalStorage):
        file = getattr(storage._backend, "_file_path", None)
    elif storage is not None:
        file = getattr(storage, "_file", None)  # tuner.storage_guard.GuardedRDBStorage
    return None if file is None else Path(str(file) + ARTIFACTS_SUFFIX)


def _write_series_artifact(folder: Path, number: int, series: dict[str, Any]) -> dict[str, Any]:
    """Write the series as ``trial-N-series.json`` into the artifact store; its system
    attribute, exactly as ``optuna.artifacts.upload_artifact`` writes it (which would cost a
    transaction of its own per trial)."""
    import io
    import uuid

    from optuna.artifacts import FileSystemArtifactStore
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    folder.mkdir(parents=True, exist_ok=True)
    artifact_id = str(uuid.uuid4())
    body = json.dumps({"trial": number, "epoch": list(range(1, len(series["lr_per_epoch"]) + 1)),
                       **series}, indent=1)
    FileSystemArtifactStore(folder).write(artifact_id, io.BytesIO(body.encode()))
    meta = {"artifact_id": artifact_id, "filename": f"trial-{number}-series.json",
            "mimetype": "application/json", "encoding": None}
    return {ARTIFACTS_ATTR_PREFIX + artifact_id: json.dumps(meta)}


def trial_series(trial: FrozenTrial, name: str) -> list[Any]:
    """A per-epoch series of a trial (``lr_per_epoch``, ``train_loss_per_epoch``); [] if none.

    Reads :data:`SERIES_ATTR`, or the user attribute of the same name that studies recorded
    before it existed.
    """
    series = trial.system_attrs.get(SERIES_ATTR)
    if isinstance(series, dict) and name in series:
        return list(series[name] or [])
    return list(trial.user_attrs.get(name) or [])


@dataclass
class Objective:
    """The Optuna objective: suggest, train, report per epoch, record, return the metric.

    Diverged and pruned runs raise ``optuna.TrialPruned`` so they end PRUNED, not FAIL.
    """

    cfg: StudyConfig
    data: SplitData
    lr_bounds: tuple[float, float] | None = None
    device: Any = None
    on_result: Callable[[FrozenTrial | optuna.Trial, TrainResult], None] | None = None
    # passed to tuner.batched.train_one as ``stacked``: False asks for the autograd engine
    # (tuner.engine.train), e.g. to measure one engine against the other
    fast: bool = True

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest_params(trial, self.cfg.space, self.lr_bounds)
        seed = self.cfg.study.seed + trial.number

        def on_epoch(report: Any) -> bool:
            trial.report(report.val_metric, report.epoch)
            return trial.should_prune()

        result = train_one(self.cfg, self.data, params, seed, on_epoch, device=self.device,
                           stacked=self.fast)
        record_result(trial, result, seed)
        if self.on_result is not None:
            self.on_result(trial, result)
        if result.status == "diverged":
            raise optuna.TrialPruned(result.divergence.message())  # type: ignore[union-attr]
        if result.status == "pruned":
            raise optuna.TrialPruned(f"pruned at epoch {result.epochs}")
        return float(result.val_metric)  # type: ignore[arg-type]


def make_objective(
    cfg: StudyConfig, lr_bounds: tuple[float, float] | None = None
) -> Objective:
    """The objective for ``cfg`` (loads the split once; resolves the device up front).

    Raises:
        DeviceError: the configured device is not available.
    """
    try:
        device = resolve_device(cfg.training.device)
    except TunerError as exc:  # name the study file, as every other setting's message does
        raise type(exc)(f"{cfg.path}: {exc}") from None
    data = study_split(cfg)  # the split, and the model checked on it (names the study file)
    return Objective(cfg, data, lr_bounds, device)


def _finite_value(t: FrozenTrial) -> bool:
    return t.value is not None and math.isfinite(t.value)


def completed(study: optuna.Study) -> Sequence[FrozenTrial]:
    """COMPLETE trials with a finite value, best first: the one ranking behind "best".

    Every "best" in tuner (export, report, confirm, summary, the study note; the progress bar
    through :func:`best_value`) comes from here, never from Optuna's ``study.best_trial`` /
    ``best_value``, which rank a trial whose value is +inf (maximize) or -inf (minimize)
    first. Such trials are left out; :func:`nonfinite_trials` lists them. Ties keep trial
    order.
    """
    trials = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if _finite_value(t)
    ]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(trials, key=lambda t: t.value, reverse=reverse)  # type: ignore[arg-type,return-value]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial with a finite value (``completed(study)[0]``), or None.

    Use it instead of ``study.best_trial``, which may return a trial whose value is +-inf.
    """
    ranked = completed(study)
    return ranked[0] if ranked else None


def best_value(study: optuna.Study) -> float | None:
    """The value of :func:`best_trial`, or None (no finite COMPLETE trial yet).

    Use it instead of ``study.best_value`` (which may be +-inf, and raises on no trial).
    """
    best = best_trial(study)
    return None if best is None else float(best.value)  # type: ignore[arg-type]


def nonfinite_trials(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials whose value is not finite (+-inf; Optuna stores NaN as FAIL), in trial
    order. They are never ranked or chosen as best; summaries list them as such."""
    return [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not _finite_value(t)
    ]
