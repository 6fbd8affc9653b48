"""The functional engine (torch.func lockstep of any nn.Module) computes what one-at-a-time
training computes, and the engine routing sends each model kind to the right engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import optuna
import pytest
import torch
from test_batched import assert_same_run, params_for
from torch import nn

from tuner.batched import (
    FUNCTIONAL_MIN_K,
    BatchedTrainer,
    FunctionalTrainer,
    FunctionalUnsupported,
    OneAtATimeTrainer,
    autograd_reason,
    choose_engine,
    functional_min_k,
    make_trainer,
    train_one,
)
from tuner.config import StudyConfig
from tuner.datasets import SplitData, load_split
from tuner.engine import TrainResult, train
from tuner.schedules import SCHEDULES
from tuner.space import OPTIMIZERS, TrialParams

CPU = torch.device("cpu")


def small_cnn(n_features: int, n_outputs: int) -> nn.Module:
    """The issue's CNN: (B, 64) as (B, 1, 8, 8) -> two conv blocks -> Linear."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, n_outputs),
    )


def batch_norm_mlp(n_features: int, n_outputs: int) -> nn.Module:
    """A model with buffers (BatchNorm's running statistics, updated by the forward pass)."""
    return nn.Sequential(
        nn.Linear(n_features, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, n_outputs)
    )


class DataDependent(nn.Module):
    """A forward pass with Python control flow on a tensor's value: vmap cannot run it."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out if out.sum() > 0 else -out


def lockstep(
    cfg: StudyConfig,
    data: SplitData,
    runs: list[tuple[TrialParams, int]],
    builder: Callable[[int, int], nn.Module] | None = None,
    on_epoch: list | None = None,
) -> list[TrainResult]:
    trainer = FunctionalTrainer(cfg, data, builder=builder)
    callbacks = on_epoch or [None] * len(runs)
    members = [trainer.add(p, s, cb) for (p, s), cb in zip(runs, callbacks, strict=True)]
    while trainer.members:
        trainer.run_epoch()
    return [m.result for m in members]


def assert_matches_engine(cfg, data, runs, builder=None, results=None) -> None:  # noqa: ANN001
    results = results or lockstep(cfg, data, runs, builder)
    for (params, seed), result in zip(runs, results, strict=True):
        assert_same_run(train(cfg, data, params, seed, builder=builder), result)


def digits_cfg(tiny_cfg: Callable[..., StudyConfig], **overrides) -> StudyConfig:  # noqa: ANN003
    # 3 digit classes (about 540 images of 8x8), 5 steps of 64 rows per epoch
    return tiny_cfg(dataset={"name": "digits", "n_class": 3}, training={"epochs": 2,
                    "batch_size": 64}, **overrides)


# ---------------------------------------------------------------------------------------------
# Equivalence with tuner.engine.train, member by member.


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_functional_mlp_matches_one_at_a_time(
    tiny_cfg: Callable[..., StudyConfig], optimizer: str, schedule: str
) -> None:
    # the study's MLP (dropout 0), 3 epochs of 6 steps, the last one partial
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    runs = [(params_for(optimizer, schedule), 3), (params_for("adam", "cosine", lr=1e-2), 4)]
    results = lockstep(cfg, data, runs)
    assert_matches_engine(cfg, data, runs, results=results)
    assert results[0].status == "complete" and len(results[0].lrs) == 18


def test_functional_cnn_matches_one_at_a_time(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = digits_cfg(tiny_cfg)
    data = load_split(cfg.dataset, cfg.split)
    runs = [
        (params_for("adam", "cosine"), 0),
        (params_for("sgd", "warmup_cosine"), 1),
        (params_for("rmsprop", "one_cycle"), 2),
        (params_for("adamw", "plateau"), 3),
    ]
    assert_matches_engine(cfg, data, runs, small_cnn)


def test_functional_model_with_buffers_matches_one_at_a_time(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    # each member's BatchNorm running statistics are its own; validation uses them
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    runs = [(params_for("adam", "step"), 0), (params_for("sgd", "exponential"), 1)]
    assert_matches_engine(cfg, data, runs, batch_norm_mlp)


@pytest.mark.parametrize("metric", ["rmse", "loss"])
def test_functional_regression_matches_one_at_a_time(
    tiny_cfg: Callable[..., StudyConfig], metric: str
) -> None:
    cfg = tiny_cfg(dataset={"name": "diabetes"}, objective={"metric": metric})
    data = load_split(cfg.dataset, cfg.split)
    runs = [(params_for("sgd", "plateau", lr=0.01), 0), (params_for("adamw", "one_cycle"), 1)]
    assert_matches_engine(cfg, data, runs)


def test_members_leave_at_their_own_epoch(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    calm = (params_for("adam", "constant"), 0)
    pruned = (params_for("sgd", "cosine"), 1)
    wild = (params_for("sgd", "constant", lr=1e4), 2)
    results = lockstep(cfg, data, [calm, pruned, wild], on_epoch=[
        None, lambda r: r.epoch == 2, None])
    assert [r.status for r in results] == ["complete", "pruned", "diverged"]
    assert [r.epochs for r in results] == [3, 2, 1]
    assert results[2].steps < 6 and results[2].steps == results[2].divergence.step
    assert results[1].test_metric is None
    for run, result in zip([calm, wild], [results[0], results[2]], strict=True):
        assert_same_run(train(cfg, data, *run), result)
    alone = train(cfg, data, *pruned, on_epoch=lambda r: r.epoch == 2)
    assert_same_run(alone, results[1])


def test_members_join_at_epoch_boundaries(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = digits_cfg(tiny_cfg)
    data = load_split(cfg.dataset, cfg.split)
    trainer = FunctionalTrainer(cfg, data, builder=small_cnn)
    first = trainer.add(params_for("rmsprop", "exponential"), 0)
    trainer.run_epoch()
    late = trainer.add(params_for("sgd", "step"), 1)
    ended: list = []
    while trainer.members:
        ended += trainer.run_epoch()
    assert ended == [first, late]
    assert_same_run(train(cfg, data, params_for("rmsprop", "exponential"), 0, builder=small_cnn),
                    first.result)
    assert_same_run(train(cfg, data, params_for("sgd", "step"), 1, builder=small_cnn),
                    late.result)


# ---------------------------------------------------------------------------------------------
# Dropout: each member its own masks, reproducibly.


class UserDropout(nn.Module):
    """A user's module with two nn.Dropout layers, called in another order than registered."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.late = nn.Dropout(0.2)
        self.first = nn.Linear(n_features, 16)
        self.early = nn.Dropout(0.4)
        self.second = nn.Linear(16, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.late(self.early(self.first(x).relu())))


class FunctionalDropout(nn.Module):
    """Dropout as a function call in forward: no module the trainer can give its masks."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.first = nn.Linear(n_features, 16)
        self.second = nn.Linear(16, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x).relu()
        return self.second(nn.functional.dropout(h, 0.3, self.training))


@pytest.mark.parametrize("builder", [None, UserDropout], ids=["mlp", "user"])
def test_dropout_members_match_one_at_a_time(
    tiny_cfg: Callable[..., StudyConfig], builder: Callable | None
) -> None:
    # every nn.Dropout draws each member's masks as the one-at-a-time run draws them
    cfg = tiny_cfg(model={"hidden": [16, 8], "dropout": 0.3})
    data = load_split(cfg.dataset, cfg.split)
    runs = [(params_for("adam", "cosine"), 0), (params_for("sgd", "step"), 1),
            (params_for("rmsprop", "one_cycle"), 2)]
    assert_matches_engine(cfg, data, runs, builder)


def test_dropout_masks_follow_the_members_seed(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = tiny_cfg(model={"dropout": 0.3})
    data = load_split(cfg.dataset, cfg.split)
    params = params_for("adam", "constant")
    twins = lockstep(cfg, data, [(params, 5), (params, 5)])
    assert replace(twins[0], seconds=0.0) == replace(twins[1], seconds=0.0)
    other_seed = lockstep(cfg, data, [(params, 5), (params, 6)])
    assert other_seed[0].history[0].train_loss != other_seed[1].history[0].train_loss
    # whatever runs beside it
    assert_same_run(twins[0], other_seed[0], rtol=1e-6)


def test_other_random_ops_draw_per_member_and_reproducibly(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    params = params_for("adam", "cosine")

    def run(disturb: int) -> list[TrainResult]:
        trainer = FunctionalTrainer(cfg, data, builder=FunctionalDropout)
        assert trainer.dropouts == []  # F.dropout: vmap's per-member draws
        members = [trainer.add(params, 0), trainer.add(params, 0)]  # twins
        while trainer.members:
            torch.rand(disturb)  # the caller draws from torch's generator between epochs
            state = torch.get_rng_state()
            trainer.run_epoch()
            assert torch.equal(torch.get_rng_state(), state)  # and finds it as it left it
        return [replace(m.result, seconds=0.0) for m in members]

    first = run(0)
    assert run(5) == first  # reproducible
    assert first[0].history[0].train_loss != first[1].history[0].train_loss  # own draws


# ---------------------------------------------------------------------------------------------
# Models torch.func cannot run, and builders that do not build one architecture.


def test_a_model_vmap_cannot_run_is_refused_up_front_and_trains_one_at_a_time(
    tiny_cfg: Callable[..., StudyConfig], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    with pytest.raises(FunctionalUnsupported, match="torch.func cannot train the model"):
        FunctionalTrainer(cfg, data, builder=DataDependent)
    trainer = make_trainer(cfg, data, CPU, batch_trials=4, builder=DataDependent)
    assert isinstance(trainer, OneAtATimeTrainer)
    assert "trials run one at a time: torch.func cannot" in caplog.text
    member = trainer.add(params_for("adam", "constant"), 0)
    trainer.run_epoch()
    alone = train(cfg, data, params_for("adam", "constant"), 0, builder=DataDependent)
    assert replace(member.result, seconds=0.0) == replace(alone, seconds=0.0)


def test_frozen_parameters_are_refused(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)

    def frozen_first_layer(n_features: int, n_outputs: int) -> nn.Module:
        model = nn.Sequential(nn.Linear(n_features, 8), nn.ReLU(), nn.Linear(8, n_outputs))
        model[0].requires_grad_(False)
        return model

    with pytest.raises(FunctionalUnsupported, match=r"\['0.weight', '0.bias'\] are frozen"):
        FunctionalTrainer(cfg, data, builder=frozen_first_layer)


def test_a_builder_must_build_one_architecture(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    widths = iter([8, 8, 9])  # the template, the first member, then another width

    def builder(n_features: int, n_outputs: int) -> nn.Module:
        return nn.Sequential(nn.Linear(n_features, next(widths)), nn.ReLU())

    trainer = FunctionalTrainer(cfg, data, builder=builder)
    trainer.add(params_for("adam", "constant"), 0)
    with pytest.raises(ValueError, match="the builder made parameters"):
        trainer.add(params_for("adam", "constant"), 1)


# ---------------------------------------------------------------------------------------------
# Routing: one decision (autograd_reason / choose_engine), per model kind.


def test_routing_per_model_kind(
    tiny_cfg: Callable[..., StudyConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, with_dropout = tiny_cfg(), tiny_cfg(model={"dropout": 0.2})
    data = load_split(cfg.dataset, cfg.split)
    min_k = functional_min_k(with_dropout, CPU)
    assert min_k is not None and min_k > 1  # one at a time wins alone (bench_models)
    # the built-in MLP without dropout: the stacked engine at every K
    for k in (1, min_k):
        assert choose_engine(cfg, batch_trials=k, device=CPU).name == "stacked"
        assert isinstance(make_trainer(cfg, data, CPU, batch_trials=k), BatchedTrainer)
    # anything else (dropout, a builder's model): torch.func lockstep from min_k trials on
    for chosen, builder in ((with_dropout, None), (cfg, batch_norm_mlp)):
        below = choose_engine(chosen, batch_trials=min_k - 1, device=CPU, builder=builder)
        assert below.name == "autograd" and f"from {min_k} trials" in below.why
        assert autograd_reason(chosen, batch_trials=min_k - 1, device=CPU, builder=builder)
        assert autograd_reason(chosen, batch_trials=min_k, device=CPU, builder=builder) is None
        engine = choose_engine(chosen, batch_trials=min_k, device=CPU, builder=builder)
        assert engine.name == "functional" and engine.why == below.why.split(", and ")[0]
        trainer = make_trainer(chosen, data, CPU, batch_trials=min_k, builder=builder)
        assert type(trainer) is FunctionalTrainer
        assert isinstance(make_trainer(chosen, data, CPU, batch_trials=1, builder=builder),
                          OneAtATimeTrainer)
    # a model kind of the registry (the CNN) routes by its own entry
    cnn = replace(cfg, model=replace(cfg.model, name="cnn"))
    assert functional_min_k(cnn, CPU) == FUNCTIONAL_MIN_K["cnn"]
    k_cnn = FUNCTIONAL_MIN_K["cnn"]
    assert choose_engine(cnn, batch_trials=k_cnn, device=CPU).name == "functional"
    assert choose_engine(cnn, batch_trials=k_cnn - 1, device=CPU).name == "autograd"
    # asking for the autograd engine, or for the trained module, still wins
    assert choose_engine(with_dropout, batch_trials=8, stacked=False).name == "autograd"
    assert choose_engine(with_dropout, batch_trials=8, keep_model=True).name == "autograd"
    # a model kind plugs in with one entry: lockstep never pays off for it here
    monkeypatch.setitem(FUNCTIONAL_MIN_K, "mlp", None)
    reason = autograd_reason(with_dropout, batch_trials=8, device=CPU)
    assert reason is not None and "slower than one trial at a time" in reason
    # a builder's model is a user's model: the "factory" kind
    monkeypatch.setitem(FUNCTIONAL_MIN_K, "factory", 2)
    assert choose_engine(cfg, batch_trials=2, device=CPU, builder=small_cnn).name == "functional"
    # on an accelerator lockstep shares the kernel launches: from 2 trials
    assert functional_min_k(with_dropout, torch.device("cuda")) == 2
    # the configured device decides, without being checked (an export on a machine without it)
    on_gpu = replace(with_dropout, training=replace(with_dropout.training, device="cuda:1"))
    assert functional_min_k(on_gpu) == 2 and autograd_reason(on_gpu)


def test_train_one_with_a_builder_is_the_engine_run(tiny_cfg: Callable[..., StudyConfig]) -> None:
    cfg = digits_cfg(tiny_cfg)
    data = load_split(cfg.dataset, cfg.split)
    params = params_for("adamw", "warmup_cosine")
    alone = train(cfg, data, params, 3, builder=small_cnn)
    ran = train_one(cfg, data, params, 3, builder=small_cnn)
    assert replace(ran, seconds=0.0) == replace(alone, seconds=0.0)


def test_a_dropout_study_trains_in_torch_func_lockstep(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    from tuner.lifecycle import ObjectiveWork, run_lifecycle
    from tuner.study import make_objective

    cfg = tiny_cfg(model={"dropout": 0.2})
    k = functional_min_k(cfg, CPU)
    objective = make_objective(cfg)
    work = ObjectiveWork(objective, k)
    assert type(work.trainer) is FunctionalTrainer and work.capacity == k
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    seen: list[int] = []
    objective.on_result = lambda trial, result: seen.append(len(result.history))
    assert run_lifecycle(study, work, target=k + 2) == k + 2
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert len(seen) == k + 2 and all(1 <= n <= cfg.training.epochs for n in seen)


def test_a_dropout_study_in_lockstep_gives_the_one_at_a_time_values(
    tiny_cfg: Callable[..., StudyConfig],
) -> None:
    from tuner.batched_runner import run_batched
    from tuner.study import make_objective

    cfg = tiny_cfg(model={"dropout": 0.2})  # no pruner: every trial runs its epochs
    values = {}
    for batch in (1, functional_min_k(cfg, CPU)):
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1)
        )
        run_batched(study, make_objective(cfg), target=5, batch_trials=batch)
        values[batch] = {t.number: t.user_attrs["val_loss"] for t in study.trials}
        # each trial records what trained it (the export's loop.engine)
        assert {t.user_attrs["engine"] for t in study.trials} == {
            "torch" if batch == 1 else "functional"}
    one, lockstep_values = values.values()
    assert lockstep_values.keys() == one.keys() and len(one) == 5
    compared = 0
    for number, loss in one.items():
        if isinstance(loss, float):  # a diverged trial records no validation loss
            assert lockstep_values[number] == pytest.approx(loss, rel=1e-4)
            compared += 1
    assert compared >= 3
