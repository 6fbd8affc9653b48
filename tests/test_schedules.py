"""Contract tests over every registered schedule: it builds, steps through a whole run, and the
learning rate stays finite and positive, whatever the run's length."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch

from tuner.schedules import SCHEDULER_CLASSES, SCHEDULES, build_scheduler

NAMES = sorted(SCHEDULES)
# (epochs, steps per epoch): a one-step run, a batch larger than the training set (1 step per
# epoch), short runs where pct_start x total hits 1, and an ordinary run
SIZES = [(1, 1), (3, 1), (1, 2), (2, 5), (1, 10), (4, 7), (20, 20)]


def sampled_params(name: str, seed: int) -> dict:
    """A point from the schedule's own search space, drawn through a real Optuna trial."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    return {p.name: p.suggest(trial) for p in SCHEDULES[name].params}


def lrs_of_run(spec: dict, lr: float, epochs: int, spe: int, metrics=None) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = build_scheduler(opt, spec)
    seen = []
    for epoch in range(epochs):
        for _ in range(spe):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            if spec["interval"] == "step":
                sched.step()
        if spec["interval"] == "epoch":
            sched.step(metrics[epoch] if metrics else 1.0)
    return seen


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("epochs", "spe"), SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_schedule_steps_through_a_whole_run(name: str, epochs: int, spe: int, seed: int) -> None:
    params = sampled_params(name, seed)
    lr = 0.05
    spec = SCHEDULES[name].spec(params, lr, epochs * spe, spe, mode="max")
    json.dumps(spec)  # plain JSON types: this is what the export writes
    lrs = lrs_of_run(spec, lr, epochs, spe)
    assert len(lrs) == epochs * spe
    assert all(math.isfinite(v) and v > 0 for v in lrs), lrs
    assert max(lrs) <= lr * (1 + 1e-9)


def test_every_spec_names_an_allowed_class() -> None:
    for name in NAMES:
        spec = SCHEDULES[name].spec(sampled_params(name, 0), 0.1, 100, 10)
        parts = spec.get("schedulers", [spec])
        for part in parts:
            assert part["class"] in SCHEDULER_CLASSES


def test_shapes_follow_their_definitions() -> None:
    total, lr = 100, 0.1
    cosine = lrs_of_run(SCHEDULES["cosine"].spec({"min_lr_ratio": 0.01}, lr, total, 10), lr, 10, 10)
    assert cosine[0] == pytest.approx(lr)
    assert cosine[50] == pytest.approx(0.001 + (lr - 0.001) * 0.5, rel=1e-6)
    warm = SCHEDULES["warmup_cosine"].spec(
        {"warmup_fraction": 0.1, "min_lr_ratio": 0.01}, lr, total, 10
    )
    assert warm["milestones"] == [10]
    w = lrs_of_run(warm, lr, 10, 10)
    assert w[0] == pytest.approx(lr * 0.01)
    assert w[10] == pytest.approx(lr)  # the peak right after warmup
    assert all(a <= b for a, b in zip(w[:10], w[1:11], strict=True))  # rising during warmup
    one = lrs_of_run(
        SCHEDULES["one_cycle"].spec(
            {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4}, lr, total, 10
        ), lr, 10, 10,
    )
    assert one[0] == pytest.approx(lr / 25)
    assert max(one) == pytest.approx(lr, rel=1e-3)
    assert one.index(max(one)) in (29, 30)
    exp = lrs_of_run(SCHEDULES["exponential"].spec({"final_lr_ratio": 0.01}, lr, total, 10),
                     lr, 10, 10)
    assert exp[-1] * (0.01 ** (1 / total)) == pytest.approx(lr * 0.01)
    step = SCHEDULES["step"].spec({"step_fraction": 0.25, "gamma": 0.5}, lr, total, 10)
    s = lrs_of_run(step, lr, 10, 10)
    assert s[24] == pytest.approx(lr) and s[25] == pytest.approx(lr * 0.5)


def test_plateau_steps_per_epoch_on_the_metric_in_the_objective_direction() -> None:
    spec = SCHEDULES["plateau"].spec({"factor": 0.5, "patience": 1}, 0.1, 50, 5, mode="max")
    assert spec["interval"] == "epoch" and spec["kwargs"]["mode"] == "max"
    # accuracy stops improving after epoch 2; epochs 3 and 4 are bad, more than patience=1,
    # so the LR halves from epoch 5 on
    lrs = lrs_of_run(spec, 0.1, 6, 5, metrics=[0.5, 0.6, 0.6, 0.6, 0.6, 0.6])
    per_epoch = lrs[::5]
    assert per_epoch[:4] == [0.1, 0.1, 0.1, 0.1]
    assert per_epoch[4] == pytest.approx(0.05)
    # in a minimizing study a falling loss is an improvement: no reduction
    spec_min = SCHEDULES["plateau"].spec({"factor": 0.5, "patience": 1}, 0.1, 50, 5, mode="min")
    falling = lrs_of_run(spec_min, 0.1, 6, 5, metrics=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    assert set(falling) == {0.1}


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        SCHEDULES["cosine"].spec({"min_lr_ratio": 0.1}, 0.1, 0, 1)
    with pytest.raises(ValueError, match="lr must be finite"):
        SCHEDULES["cosine"].spec({"min_lr_ratio": 0.1}, float("nan"), 10, 1)
    with pytest.raises(ValueError, match="unknown scheduler class 'LambdaLR'"):
        build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                        {"class": "LambdaLR", "kwargs": {}})
