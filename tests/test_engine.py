"""The training loop: real training on real data, every schedule through a whole run,
divergence stopped at the offending step, reproducible with a seed."""

from __future__ import annotations

import math

import pytest
import torch

from tests.test_schedules import sampled_params
from tuner.datasets import load_split
from tuner.engine import steps_per_epoch, train
from tuner.schedules import SCHEDULES
from tuner.space import TrialParams


def run(cfg, params: TrialParams, seed: int = 0, on_epoch=None):
    return train(cfg, load_split(cfg.dataset, cfg.split), params, seed, on_epoch)


def test_training_learns_iris(tiny_cfg) -> None:
    cfg = tiny_cfg(training={"epochs": 30, "batch_size": 16})
    result = run(cfg, TrialParams(0.01, "adam", "cosine", {}, {"min_lr_ratio": 0.01}))
    assert result.status == "complete"
    assert result.val_metric >= 0.9
    assert result.test_metric is not None and result.test_metric >= 0.8
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert len(result.lrs) == result.steps == 30 * steps_per_epoch(90, 16)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("batch_size", [7, 1000])  # partial last batch; batch > training set
def test_every_schedule_runs_a_whole_training(tiny_cfg, name: str, batch_size: int) -> None:
    cfg = tiny_cfg(training={"epochs": 3, "batch_size": batch_size})
    params = TrialParams(0.02, "sgd", name, {"momentum": 0.9, "nesterov": False},
                         sampled_params(name, 0))
    result = run(cfg, params)
    n_train = len(load_split(cfg.dataset, cfg.split).X_train)
    assert result.status == "complete"
    assert result.steps == 3 * math.ceil(n_train / batch_size)
    assert all(math.isfinite(v) and v > 0 for v in result.lrs)


def test_huge_learning_rate_diverges_within_the_first_epoch(tiny_cfg) -> None:
    cfg = tiny_cfg(training={"epochs": 5, "batch_size": 16})
    result = run(cfg, TrialParams(1e4, "sgd", "constant", {"momentum": 0.9, "nesterov": False}))
    assert result.status == "diverged"
    assert result.epochs == 1 and result.history == []
    assert result.divergence is not None
    assert result.divergence.reason in ("nan", "inf", "explosion")
    assert result.divergence.step <= steps_per_epoch(90, 16)


def test_callback_stops_the_run_as_pruned(tiny_cfg) -> None:
    cfg = tiny_cfg(training={"epochs": 5})
    seen = []
    result = run(cfg, TrialParams(0.01, "adam", "constant"),
                 on_epoch=lambda r: seen.append(r.epoch) or r.epoch == 2)
    assert result.status == "pruned" and seen == [1, 2] and result.epochs == 2
    assert result.test_metric is None  # the test split is only read for complete runs


def test_same_seed_same_run_other_seed_other_run(tiny_cfg) -> None:
    cfg = tiny_cfg()
    params = TrialParams(0.05, "sgd", "step", {"momentum": 0.9, "nesterov": True},
                         {"step_fraction": 0.3, "gamma": 0.5})
    a, b, c = run(cfg, params, 3), run(cfg, params, 3), run(cfg, params, 4)
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    assert [r.train_loss for r in a.history] != [r.train_loss for r in c.history]
    assert a.lrs == b.lrs


def test_regression_reports_rmse_in_target_units(tiny_cfg) -> None:
    cfg = tiny_cfg(dataset={"name": "diabetes"}, objective={"metric": "rmse"},
                   training={"epochs": 20, "batch_size": 32})
    result = run(cfg, TrialParams(0.01, "adam", "constant"))
    data = load_split(cfg.dataset, cfg.split)
    assert result.status == "complete"
    assert result.val_metric == pytest.approx(math.sqrt(result.val_loss) * data.target_scale)
    assert 30 < result.val_metric < 90  # diabetes targets: 25..346, sd ~77


def test_device_cuda_without_cuda_is_a_clear_error(tiny_cfg) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from tuner.errors import DeviceError

    cfg = tiny_cfg(training={"device": "cuda"})
    with pytest.raises(DeviceError, match='device = "cuda" but torch .* sees no CUDA'):
        run(cfg, TrialParams(0.01, "adam", "constant"))


def test_training_threads_default_to_one_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuner.engine import training_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert training_threads() == 1
    assert training_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert training_threads() == 2 and training_threads(4) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "many")  # not a count: the default
    assert training_threads() == 1
    with pytest.raises(ValueError, match=">= 1"):
        training_threads(0)


def test_tune_trains_on_the_threads_it_is_given(
    tiny_cfg, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.runner import run_tune

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        cfg = tiny_cfg(training={"epochs": 1})
        run_tune(cfg, sqlite_url, n_trials=1, progress=False, threads=2)
        assert torch.get_num_threads() == 2
        run_tune(cfg, sqlite_url, n_trials=2, progress=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
