"""Batched trials compute what one-at-a-time training computes (tuner.batched, batched_runner)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tuner.batched import (
    ACTIVATION_GRADS,
    DEFAULT_BATCH_TRIALS,
    BatchedTrainer,
    MemberHyper,
    StackedOptimizer,
    batch_unsupported_reason,
    train_batched,
    train_one,
)
from tuner.batched_runner import run_batched
from tuner.config import StudyConfig
from tuner.datasets import load_split
from tuner.engine import TrainResult, train
from tuner.models import ACTIVATIONS
from tuner.runner import _resolve_batch_trials, run_tune
from tuner.schedules import SCHEDULES, Schedule
from tuner.space import OPTIMIZERS, TrialParams, build_optimizer
from tuner.study import FINISHED, make_objective, open_study

OPTIMIZER_KWARGS = {
    "sgd": {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "adam": {"weight_decay": 1e-4},
    "adamw": {"weight_decay": 1e-3},
    "rmsprop": {"weight_decay": 1e-5},
}
LRS = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3}


def mid_params(schedule: Schedule) -> dict[str, float | int]:
    """Each schedule parameter at the middle of its range (geometric middle for log ones)."""
    out: dict[str, float | int] = {}
    for p in schedule.params:
        mid = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
        out[p.name] = round(mid) if p.integer else mid
    return out


def params_for(optimizer: str, schedule: str, lr: float | None = None) -> TrialParams:
    return TrialParams(
        lr if lr is not None else LRS[optimizer],
        optimizer,
        schedule,
        OPTIMIZER_KWARGS[optimizer],
        mid_params(SCHEDULES[schedule]),
    )


def assert_same_run(one: TrainResult, batched: TrainResult, rtol: float = 1e-4) -> None:
    """Same status, steps and learning rates; losses and metrics within rounding noise."""
    assert batched.status == one.status
    assert batched.epochs == one.epochs and batched.steps == one.steps
    assert batched.lrs == one.lrs  # identical, not close: the same schedulers stepped alike
    assert len(batched.history) == len(one.history)
    for a, b in zip(one.history, batched.history, strict=True):
        assert (b.epoch, b.steps, b.lr) == (a.epoch, a.steps, a.lr)
        assert b.train_loss == pytest.approx(a.train_loss, rel=rtol, abs=1e-6)
        assert b.val_loss == pytest.approx(a.val_loss, rel=rtol, abs=1e-6)
        assert b.val_metric == pytest.approx(a.val_metric, rel=rtol, abs=1e-6)
    if one.test_metric is None:
        assert batched.test_metric is None
    else:
        assert batched.test_metric == pytest.approx(one.test_metric, rel=rtol, abs=1e-6)
    assert (batched.divergence is None) == (one.divergence is None)
    if one.divergence is not None:
        assert batched.divergence.step == one.divergence.step  # type: ignore[union-attr]
        assert batched.divergence.reason == one.divergence.reason  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# The stacked optimizer against torch.optim, step by step.


def torch_hyper_sets() -> list[tuple[str, dict]]:
    """(torch class, kwargs) covering every option the search space can produce."""
    return [
        ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
        ("SGD", {"momentum": 0.8, "nesterov": False, "weight_decay": 0.0}),
        ("SGD", {"momentum": 0.0}),
        ("Adam", {"weight_decay": 1e-3}),
        ("Adam", {}),
        ("AdamW", {"weight_decay": 1e-2}),
        ("AdamW", {}),  # torch's default weight decay 0.01
        ("RMSprop", {"weight_decay": 1e-4}),
        ("RMSprop", {}),
    ]


# fused=True: SGD, Adam and AdamW through torch's fused kernels (compared with torch.optim's
# fused optimizers); fused=False: the stacked update rules (compared with the single-tensor ones)
FUSED = pytest.mark.parametrize("fused", [True, False], ids=["fused", "stacked"])


@FUSED
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_stacked_optimizer_matches_torch_optim_step_by_step(name: str, fused: bool) -> None:
    cls = OPTIMIZERS[name].torch_class
    sets = [(c, kw) for c, kw in torch_hyper_sets() if c == cls]
    check_stacked_against_torch(sets, fused)


@FUSED
def test_stacked_optimizer_with_every_class_in_one_stack(fused: bool) -> None:
    check_stacked_against_torch(torch_hyper_sets(), fused)


@FUSED
@pytest.mark.parametrize("index", range(len(torch_hyper_sets())))
def test_stacked_optimizer_with_one_member(index: int, fused: bool) -> None:
    # a one-member segment passes its coefficients to the kernels as floats
    check_stacked_against_torch([torch_hyper_sets()[index]], fused)


@FUSED
def test_stacked_optimizer_with_members_sharing_their_hyperparameters(fused: bool) -> None:
    # shared coefficients are floats too; the learning rates still differ per member
    check_stacked_against_torch([("SGD", {"momentum": 0.9, "nesterov": True})] * 2, fused)
    check_stacked_against_torch([("Adam", {"weight_decay": 1e-3})] * 3, fused)
    check_stacked_against_torch([("RMSprop", {})] * 2, fused)


def test_the_fused_kernels_are_used_where_torch_has_them() -> None:
    p = torch.zeros(2, 3)
    hypers = [MemberHyper("Adam"), MemberHyper("RMSprop")]
    assert StackedOptimizer(p, hypers).fused  # torch 2.13 on the CPU has them
    assert [s.fused for s in StackedOptimizer(p, hypers)._segments] == [True, False]
    assert not any(s.fused for s in StackedOptimizer(p, hypers, fused=False)._segments)


def test_without_working_fused_kernels_the_stacked_rules_are_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tuner.batched._optimizer as stacked

    def no_kernel(*args, **kwargs):  # an operator without a kernel for the device
        raise NotImplementedError("no CPU kernel")

    monkeypatch.setattr(stacked, "_FUSED_WORKS", {})
    monkeypatch.setitem(stacked._FUSED_OPS, "AdamW", no_kernel)
    assert not StackedOptimizer(torch.zeros(1, 3), [MemberHyper("AdamW")]).fused
    check_stacked_against_torch([("AdamW", {"weight_decay": 1e-2})], fused=False)


def check_stacked_against_torch(
    sets: list[tuple[str, dict]], fused: bool, steps: int = 6
) -> None:
    gen = torch.Generator().manual_seed(0)
    k, p = len(sets), 37
    init = torch.randn(k, p, generator=gen)
    refs = [torch.nn.Parameter(init[i].clone()) for i in range(k)]
    base_lrs = [0.01 * (i + 1) for i in range(k)]
    impl = [
        {"fused": True} if fused and c != "RMSprop" else {"foreach": False} for c, _ in sets
    ]
    torch_opts = [
        build_optimizer([refs[i]], {"class": c, "kwargs": {"lr": lr, **kw, **how}})
        for i, ((c, kw), lr, how) in enumerate(zip(sets, base_lrs, impl, strict=True))
    ]
    stacked = init.clone().requires_grad_(True)
    opt = StackedOptimizer(
        stacked, [MemberHyper.from_optimizer(o) for o in torch_opts], fused=fused
    )
    for step in range(steps):
        grads = torch.randn(k, p, generator=gen)
        lrs = [lr * (0.7**step) for lr in base_lrs]  # a schedule: the LR changes every step
        for i, o in enumerate(torch_opts):
            o.param_groups[0]["lr"] = lrs[i]
            refs[i].grad = grads[i].clone()
            o.step()
        stacked.grad = grads.clone()
        opt.step(lrs)
        expected = torch.stack([r.detach() for r in refs])
        torch.testing.assert_close(stacked.detach(), expected, rtol=1e-6, atol=1e-7)


def test_member_hyper_reads_torch_defaults_and_rejects_unsupported_options() -> None:
    w = [torch.nn.Parameter(torch.zeros(2))]
    assert MemberHyper.from_optimizer(torch.optim.AdamW(w, lr=0.1)).weight_decay == 0.01
    assert MemberHyper.from_optimizer(torch.optim.RMSprop(w, lr=0.1)).alpha == 0.99
    with pytest.raises(ValueError, match="amsgrad"):
        MemberHyper.from_optimizer(torch.optim.Adam(w, lr=0.1, amsgrad=True))
    with pytest.raises(ValueError, match="Adagrad"):
        MemberHyper.from_optimizer(torch.optim.Adagrad(w, lr=0.1))


# ---------------------------------------------------------------------------------------------
# Whole runs: batched against the one-at-a-time engine.


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_batched_training_matches_one_at_a_time(
    tiny_cfg: Callable[..., StudyConfig], optimizer: str, schedule: str
) -> None:
    # 3 epochs of 6 steps (90 training rows, batch 16: the last batch is partial)
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    runs = [(params_for(optimizer, schedule), 3), (params_for("adam", "cosine", lr=1e-2), 4)]
    batched = train_batched(cfg, data, runs)
    for (params, seed), result in zip(runs, batched, strict=True):
        assert_same_run(train(cfg, data, params, seed), result)
    assert batched[0].status == "complete" and len(batched[0].lrs) == 18


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_batched_matches_one_at_a_time_for_every_activation_and_depth(
    tiny_cfg: Callable[..., StudyConfig], activation: str
) -> None:
    cfg = tiny_cfg(model={"hidden": [12, 8], "activation": activation}, training={"epochs": 2})
    data = load_split(cfg.dataset, cfg.split)
    runs = [(params_for("adam", "cosine"), 0), (params_for("sgd", "step"), 1)]
    for (params, seed), result in zip(runs, train_batched(cfg, data, runs), strict=True):
        assert_same_run(train(cfg, data, params, seed), result)


def test_every_activation_has_a_batched_derivative() -> None:
    assert sorted(ACTIVATION_GRADS) == sorted(ACTIVATIONS)


@pytest.mark.parametrize("rows", [7, 40])  # 40: narrow layers use the transposed products
@pytest.mark.parametrize("dataset", ["iris", "diabetes"])  # cross-entropy, MSE
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_written_out_backward_equals_autograd(
    tiny_cfg: Callable[..., StudyConfig], activation: str, dataset: str, rows: int
) -> None:
    metric = {"iris": "accuracy", "diabetes": "rmse"}[dataset]
    cfg = tiny_cfg(
        dataset={"name": dataset},
        model={"hidden": [12, 8], "activation": activation},
        objective={"metric": metric},
    )
    data = load_split(cfg.dataset, cfg.split)
    trainer = BatchedTrainer(cfg, data)
    for seed in range(3):
        trainer.add(params_for("adam", "constant"), seed)
    trainer._layout()
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(len(data.X_train), (3, rows), generator=generator)
    x, y = data.X_train[idx], data.y_train[idx]
    losses = trainer._train_step(x, y)
    flat = trainer.flat.detach().clone().requires_grad_(True)
    expected = trainer._losses(trainer.forward(flat, x), y)
    expected.sum().backward()
    assert torch.allclose(losses, expected.detach(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(trainer.flat.grad, flat.grad, rtol=1e-4, atol=1e-6)
    assert flat.grad.abs().sum() > 0  # a gradient that can fail the comparison


def test_train_one_uses_the_stacked_engine_where_it_can(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    from dataclasses import replace

    from tuner.batched import OneAtATimeTrainer, autograd_reason, make_trainer

    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    params = params_for("adamw", "warmup_cosine")
    assert_same_run(train(cfg, data, params, 3), train_one(cfg, data, params, 3))
    with_dropout = tiny_cfg(model={"dropout": 0.2})
    assert autograd_reason(cfg) is None and isinstance(make_trainer(cfg, data), BatchedTrainer)
    for chosen, kwargs in ((with_dropout, {}), (cfg, {"stacked": False}),
                           (cfg, {"keep_model": True})):
        assert autograd_reason(chosen, **kwargs)
        assert isinstance(make_trainer(chosen, data, **kwargs), OneAtATimeTrainer)
    # the autograd engine's trainer gives tuner.engine.train's run exactly
    alone = replace(train(with_dropout, data, params, 3), seconds=0.0)
    assert replace(train_one(with_dropout, data, params, 3), seconds=0.0) == alone


@pytest.mark.parametrize("metric", ["rmse", "loss"])
def test_batched_regression_matches_one_at_a_time(
    tiny_cfg: Callable[..., StudyConfig], metric: str
) -> None:
    cfg = tiny_cfg(dataset={"name": "diabetes"}, objective={"metric": metric})
    data = load_split(cfg.dataset, cfg.split)
    runs = [(params_for("sgd", "plateau", lr=0.01), 0), (params_for("adamw", "one_cycle"), 1)]
    for (params, seed), result in zip(runs, train_batched(cfg, data, runs), strict=True):
        assert_same_run(train(cfg, data, params, seed), result)


def test_members_stop_on_their_own_pruning_callback(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    runs = [(params_for("adam", "constant"), 0), (params_for("sgd", "cosine"), 1)]
    batched = train_batched(cfg, data, runs, [lambda r: r.epoch == 2, None])
    assert batched[0].status == "pruned" and batched[0].epochs == 2
    assert batched[0].test_metric is None
    assert batched[1].status == "complete" and batched[1].epochs == 3
    assert_same_run(train(cfg, data, *runs[1]), batched[1])


def test_a_diverging_member_stops_without_disturbing_the_others(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    calm = [(params_for("sgd", "cosine"), 0), (params_for("adam", "step"), 1)]
    wild = (params_for("sgd", "constant", lr=1e4), 2)
    with_wild = train_batched(cfg, data, [calm[0], wild, calm[1]])
    without = train_batched(cfg, data, calm)
    diverged = with_wild[1]
    assert diverged.status == "diverged" and diverged.epochs == 1
    assert diverged.divergence is not None and diverged.steps == diverged.divergence.step
    assert diverged.steps < 6 and len(diverged.lrs) == diverged.steps  # stopped mid-epoch
    assert_same_run(train(cfg, data, *wild), diverged)
    for alone, alongside in zip(without, [with_wild[0], with_wild[2]], strict=True):
        assert alongside.status == "complete"
        assert_same_run(alone, alongside, rtol=1e-6)


def test_members_join_at_epoch_boundaries_with_their_own_epoch_count(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    trainer = BatchedTrainer(cfg, data)
    first = trainer.add(params_for("rmsprop", "exponential"), 0)
    trainer.run_epoch()
    late = trainer.add(params_for("sgd", "warmup_cosine"), 1)  # takes a slot one epoch later
    ended: list = []
    while trainer.members:
        ended += trainer.run_epoch()
    assert ended == [first, late]
    assert_same_run(train(cfg, data, params_for("rmsprop", "exponential"), 0), first.result)
    assert_same_run(train(cfg, data, params_for("sgd", "warmup_cosine"), 1), late.result)


def test_engine_deferred_divergence_check_gives_the_same_result(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    # check_every_step=False is what accelerators use: one loss read-back per epoch
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    for params in (params_for("sgd", "constant", lr=1e4), params_for("adam", "plateau")):
        now = train(cfg, data, params, 0, check_every_step=True)
        later = train(cfg, data, params, 0, check_every_step=False)
        assert (later.status, later.steps, later.lrs, later.history) == (
            now.status, now.steps, now.lrs, now.history
        )
        assert later.divergence == now.divergence


def test_only_batchable_models_are_batched(
    tiny_cfg: Callable[..., StudyConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from tuner.batched import FUNCTIONAL_MIN_K

    assert batch_unsupported_reason(tiny_cfg()) is None
    with_dropout = tiny_cfg(model={"dropout": 0.2})
    assert "dropout" in (batch_unsupported_reason(with_dropout) or "")
    console = Console(record=True, width=200)
    # below the K from which torch.func lockstep pays off, such a model runs one at a time
    assert _resolve_batch_trials(with_dropout, 2, 1, console) == 1
    assert "--batch-trials 2 ignored" in console.export_text()
    # from there on, in lockstep (tests/test_functional.py)
    assert _resolve_batch_trials(with_dropout, 4, 1, console) == 4
    assert "Trials run 4 at a time in lockstep with torch.func" in console.export_text()
    monkeypatch.setitem(FUNCTIONAL_MIN_K, "mlp", None)  # a kind lockstep never pays off for
    assert _resolve_batch_trials(with_dropout, None, 1, console) == 1  # the default says why
    assert "Trials run one at a time: dropout" in console.export_text()
    assert _resolve_batch_trials(tiny_cfg(), None, 1, console) == DEFAULT_BATCH_TRIALS > 1
    assert console.export_text() == ""  # the stacked default goes without saying (export_text
    # returns what was printed since the last call)
    assert _resolve_batch_trials(tiny_cfg(), 1, 1, console) == 1
    # each worker process batches its trials too (--workers N --batch-trials K compose)
    assert _resolve_batch_trials(tiny_cfg(), None, 2, console) == DEFAULT_BATCH_TRIALS
    assert _resolve_batch_trials(tiny_cfg(), 3, 2, console) == 3
    with pytest.raises(ValueError, match="dropout"):
        BatchedTrainer(with_dropout, load_split(with_dropout.dataset, with_dropout.split))


# ---------------------------------------------------------------------------------------------
# Batched studies: exact top-up, the same user attributes and states as one at a time.


def study_cfg(tiny_cfg: Callable[..., StudyConfig]) -> StudyConfig:
    return tiny_cfg(
        training={"epochs": 4},
        pruner={"name": "hyperband", "min_resource": 1, "reduction_factor": 2},
        space={"lr": [1e-3, 0.3]},
    )


DIVERGING = {"lr": 1e4, "optimizer": "sgd", "optimizer.momentum": 0.9,
             "optimizer.nesterov": False, "weight_decay": 1e-5, "schedule": "constant"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Fixed parameter lr")  # the enqueued diverging trial
def test_batched_study_reaches_exactly_n_trials_and_records_like_one_at_a_time(
    tiny_cfg: Callable[..., StudyConfig], tmp_path
) -> None:
    cfg = study_cfg(tiny_cfg)
    attrs_by_path = {}
    for batch in (1, 3):
        url = f"sqlite:///{tmp_path / f'batch{batch}.db'}"
        open_study(cfg, url).enqueue_trial(DIVERGING)
        out = run_tune(cfg, url, n_trials=7, batch_trials=batch, progress=False)
        assert out.finished_after == 7
        out = run_tune(cfg, url, n_trials=11, batch_trials=batch, progress=False)
        trials = out.study.get_trials()
        assert len(trials) == 11 and all(t.state in FINISHED for t in trials)
        wild = trials[0]
        assert wild.state == TrialState.PRUNED
        assert wild.user_attrs["outcome"] == "diverged"
        assert wild.user_attrs["divergence"]["reason"] in ("nan", "inf", "explosion")
        assert wild.user_attrs["pruned_reason"].startswith("diverged: ")
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert complete and all(t.value == t.user_attrs["val_metric"] for t in complete)
        attrs_by_path[batch] = {
            kind: sorted(t.user_attrs) for t in trials for kind in [t.user_attrs["outcome"]]
        }
    assert attrs_by_path[3] == {k: v for k, v in attrs_by_path[1].items() if k in attrs_by_path[3]}
    assert "complete" in attrs_by_path[3] and "diverged" in attrs_by_path[3]


def test_batched_trial_values_equal_one_at_a_time_for_the_same_trials(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    cfg = replace(study_cfg(tiny_cfg), pruner=tiny_cfg().pruner)  # no pruning
    values = {}
    for batch in (1, 4):
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1)
        )
        objective = make_objective(cfg)
        if batch == 1:
            study.optimize(objective, n_trials=5)
        else:
            run_batched(study, objective, target=5, batch_trials=batch)
        values[batch] = {t.number: t.user_attrs["val_loss"] for t in study.trials}
    assert values[4].keys() == values[1].keys()
    for number, loss in values[1].items():
        if isinstance(loss, float):
            assert values[4][number] == pytest.approx(loss, rel=1e-4)


def test_a_failure_marks_the_running_trials_failed(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = study_cfg(tiny_cfg)
    study = optuna.create_study(direction="maximize")
    objective = make_objective(cfg)
    finished = []

    def fail_on_second(trial, result) -> None:  # noqa: ANN001
        finished.append(trial.number)
        if len(finished) == 2:
            raise RuntimeError("boom")

    objective.on_result = fail_on_second
    with pytest.raises(RuntimeError, match="boom"):
        run_batched(study, objective, target=6, batch_trials=3)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.FAIL in states


@pytest.mark.slow
def test_cli_batch_trials_flag_runs_a_batched_study(tmp_path, capsys) -> None:
    from tuner.cli import main

    study = tmp_path / "cli.toml"
    study.write_text(
        '[study]\nname = "cli_batched"\nn_trials = 5\n[dataset]\nname = "iris"\n'
        '[model]\nhidden = [8]\n[training]\nepochs = 2\nbatch_size = 32\n'
        '[space]\nlr = [1e-3, 0.1]\n[pruner]\nname = "none"\n'
    )
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["tune", str(study), "--storage", url, "--batch-trials", "3", "--no-progress"]) == 0
    trials = optuna.load_study(study_name="cli_batched", storage=url).get_trials()
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    with pytest.raises(SystemExit):
        main(["tune", str(study), "--batch-trials", "0"])
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("dropout", [0.0, 0.2], ids=["stacked", "engine"])
def test_the_one_at_a_time_lifecycle_trains_exactly_as_train_one(
    tiny_cfg: Callable[..., StudyConfig], dropout: float
) -> None:
    """K = 1 of the lockstep loop is train_one, bit for bit (issue 12: one lifecycle)."""
    from tuner.lifecycle import ObjectiveWork, run_lifecycle

    cfg = replace(study_cfg(tiny_cfg), pruner=tiny_cfg().pruner)  # no pruning
    cfg = replace(cfg, model=replace(cfg.model, dropout=dropout))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(1))
    objective = make_objective(cfg)
    results: dict[int, TrainResult] = {}
    objective.on_result = lambda trial, result: results.__setitem__(trial.number, result)
    assert run_lifecycle(study, ObjectiveWork(objective, 1), target=4) == 4
    for trial in study.trials:
        params = TrialParams.from_optuna_params(trial.params)
        alone = train_one(cfg, objective.data, params, cfg.study.seed + trial.number)
        ran = results[trial.number]
        assert (ran.status, ran.epochs, ran.steps, ran.lrs) == (
            alone.status, alone.epochs, alone.steps, alone.lrs)
        assert [(r.train_loss, r.val_loss, r.val_metric) for r in ran.history] == [
            (r.train_loss, r.val_loss, r.val_metric) for r in alone.history]
        assert (ran.test_loss, ran.test_metric) == (alone.test_loss, alone.test_metric)
