"""Helpers for the trust / export / report tests: tiny studies with chosen trials, no server."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from conftest import tiny_study_dict
from optuna.trial import TrialState

from tuner.config import StudyConfig, parse_study_config
from tuner.engine import TrainResult
from tuner.schedules import SCHEDULES
from tuner.space import TrialParams, suggest_params
from tuner.study import Objective, make_objective

FAKE_PASSWORD = "s3cr3t-pw"
FAKE_PG_URL = f"postgresql://tuner_user:{FAKE_PASSWORD}@db.example.org:5432/studies"


def make_cfg(folder: Path, **overrides: Any) -> StudyConfig:
    """The tiny iris study (conftest.tiny_study_dict) with its study file in ``folder``."""
    path = str(folder / "tiny.toml")
    return replace(parse_study_config(tiny_study_dict(**overrides), path), path=path)


def mid_params(schedule: str) -> dict[str, Any]:
    """A schedule's parameters in the middle of their ranges (plateau: reduces quickly)."""
    if schedule == "plateau":
        return {"factor": 0.5, "patience": 1}
    out: dict[str, Any] = {}
    for p in SCHEDULES[schedule].params:
        if p.integer:
            out[p.name] = int(round((p.low + p.high) / 2))
        elif p.log:
            out[p.name] = math.sqrt(p.low * p.high)
        else:
            out[p.name] = (p.low + p.high) / 2
    return out


def fixed_params(schedule: str, lr: float = 0.05, optimizer: str = "sgd") -> TrialParams:
    kwargs: dict[str, Any] = {"weight_decay": 1e-4}
    if optimizer == "sgd":
        kwargs = {"momentum": 0.9, "nesterov": True, **kwargs}
    return TrialParams(lr, optimizer, schedule, kwargs, mid_params(schedule))


def run_trial(study: optuna.Study, objective: Objective, params: TrialParams) -> TrainResult:
    """Run one real trial of ``study`` with ``params`` (enqueued); returns its TrainResult."""
    captured: list[TrainResult] = []
    objective.on_result = lambda _trial, result: captured.append(result)
    study.enqueue_trial(params.to_optuna_params())
    study.optimize(objective, n_trials=1, catch=())
    objective.on_result = None
    return captured[0]


def trained_study(cfg: StudyConfig, params_list: list[TrialParams]) -> optuna.Study:
    """An in-memory study with one real trial per entry of ``params_list``."""
    study = optuna.create_study(study_name=cfg.name, direction=cfg.direction)
    objective = make_objective(cfg)
    for params in params_list:
        run_trial(study, objective, params)
    return study


def add_told_trial(study: optuna.Study, cfg: StudyConfig, params: TrialParams, value: float,
                   state: TrialState = TrialState.COMPLETE,
                   divergence: dict[str, Any] | None = None) -> int:
    """Add a trial with ``params`` whose value (or state) is told, not trained; a
    ``divergence`` record marks a pruned trial as diverged, as the objective does."""
    study.enqueue_trial(params.to_optuna_params())
    trial = study.ask()
    suggest_params(trial, cfg.space)
    trial.set_user_attr("seed", cfg.study.seed + trial.number)
    if divergence is not None:
        trial.set_user_attr("divergence", divergence)
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
    else:
        trial.report(value, 1)
        study.tell(trial, state=state)
    return trial.number


def all_pruned_study(cfg: StudyConfig, storage: str | None = None, n: int = 3) -> optuna.Study:
    """A study whose trials were all pruned by the pruner."""
    study = optuna.create_study(study_name=cfg.name, direction=cfg.direction, storage=storage)
    for i in range(n):
        add_told_trial(study, cfg, fixed_params("constant", lr=0.01 * (i + 1)), 0.3,
                       TrialState.PRUNED)
    return study


def toml_text(data: dict[str, dict[str, Any]]) -> str:
    """A study dict as TOML (numbers, strings, booleans and flat lists are enough here)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines: list[str] = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def write_study_file(folder: Path, **overrides: Any) -> Path:
    path = folder / "tiny.toml"
    path.write_text(toml_text(tiny_study_dict(**overrides)), encoding="utf-8")
    return path
