"""The search space: log-uniform scale parameters, namespaced names, conditional parameters."""

from __future__ import annotations

import optuna
import pytest
import torch

from tuner.schedules import SCHEDULES
from tuner.space import OPTIMIZERS, TrialParams, build_optimizer, suggest_params


def test_scale_parameters_are_log_uniform_and_names_namespaced(tiny_cfg) -> None:
    cfg = tiny_cfg()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_schedules = set()
    for _ in range(60):
        trial = study.ask()
        params = suggest_params(trial, cfg.space)
        dists = trial.distributions
        assert dists["lr"].log and (dists["lr"].low, dists["lr"].high) == cfg.space.lr
        assert dists["weight_decay"].log
        for name in dists:
            assert name in ("lr", "optimizer", "weight_decay", "schedule") or name.startswith(
                ("optimizer.", "schedule.")
            )
        for p in SCHEDULES[params.schedule].params:
            assert f"schedule.{p.name}" in dists
            assert dists[f"schedule.{p.name}"].log == p.log
        if params.optimizer == "sgd":
            assert {"optimizer.momentum", "optimizer.nesterov"} <= set(dists)
        else:
            assert "optimizer.momentum" not in dists
        seen_schedules.add(params.schedule)
        study.tell(trial, 0.5)
    assert seen_schedules == set(cfg.space.schedules)


def test_params_round_trip_through_optuna_names(tiny_cfg) -> None:
    cfg = tiny_cfg()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        params = suggest_params(trial, cfg.space)
        assert TrialParams.from_optuna_params(trial.params) == params
        assert params.to_optuna_params() == trial.params
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_from_its_spec(name: str) -> None:
    kwargs = {"momentum": 0.9, "nesterov": True} if OPTIMIZERS[name].momentum else {}
    params = TrialParams(0.01, name, "constant", {**kwargs, "weight_decay": 1e-4})
    opt = build_optimizer([torch.nn.Parameter(torch.ones(2))], params.optimizer_spec())
    assert type(opt).__name__ == OPTIMIZERS[name].torch_class
    assert opt.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_entry_describes_its_fused_kernel_and_stacked_rule(name: str) -> None:
    """The registry is the one description: its fused flag matches what torch builds, and the
    stacked optimizer reads its family from it."""
    from tuner._private import fused_update_ops
    from tuner.batched import MemberHyper
    from tuner.engine import build_fast_optimizer

    spec = OPTIMIZERS[name]
    params = TrialParams(0.01, name, "constant")
    opt = build_fast_optimizer([torch.nn.Parameter(torch.ones(2))], params.optimizer_spec())
    assert opt.param_groups[0].get("fused", False) is spec.fused
    assert (spec.torch_class in fused_update_ops()) is spec.fused
    assert MemberHyper.from_optimizer(opt).rule == spec.update_rule


def test_auto_bounds_need_the_range_test(tiny_cfg) -> None:
    cfg = tiny_cfg(space={"lr": "auto"})
    trial = optuna.create_study().ask()
    with pytest.raises(ValueError, match="LR range test"):
        suggest_params(trial, cfg.space)
    params = suggest_params(trial, cfg.space, lr_bounds=(1e-3, 1e-2))
    assert 1e-3 <= params.lr <= 1e-2
