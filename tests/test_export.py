"""The export rebuilds the trained run's optimizer and schedule in plain PyTorch."""

from __future__ import annotations

import json

import pytest
import torch

from tuner.errors import NoCompletedTrialError
from tuner.export import export_best
from tuner.runner import run_tune
from tuner.schedules import SCHEDULES
from tuner.study import make_objective, open_study


def plain_pytorch_lrs(export: dict, metrics_per_epoch: list[float]) -> list[float]:
    """What a user writes without tuner: torch + the JSON alone."""
    model = torch.nn.Linear(2, 2)
    o = export["optimizer"]
    optimizer = getattr(torch.optim, o["class"])(model.parameters(), **o["kwargs"])

    def build(spec: dict):
        cls = getattr(torch.optim.lr_scheduler, spec["class"])
        if "schedulers" in spec:
            parts = [build(p) for p in spec["schedulers"]]
            return cls(optimizer, schedulers=parts, milestones=spec["milestones"])
        return cls(optimizer, **spec["kwargs"])

    scheduler = build(export["scheduler"])
    lrs = []
    for epoch in range(export["epochs"]):
        for _ in range(export["steps_per_epoch"]):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if export["scheduler"]["interval"] == "step":
                scheduler.step()
        if export["scheduler"]["interval"] == "epoch":
            scheduler.step(metrics_per_epoch[epoch])
    return lrs


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_export_rebuilds_the_same_lr_at_every_step(tiny_cfg, sqlite_url, schedule: str):
    cfg = tiny_cfg(space={"lr": [1e-3, 3e-2], "schedules": [schedule]},
                   training={"epochs": 4, "batch_size": 16})
    trained: dict[int, list[float]] = {}
    objective = make_objective(cfg)
    objective.on_result = lambda trial, result: trained.__setitem__(trial.number, result.lrs)
    study = open_study(cfg, sqlite_url)
    study.optimize(objective, n_trials=2)
    path = export_best(study, cfg, sqlite_url)
    export = json.loads(path.read_text())
    assert export["scheduler"]["interval"] == ("epoch" if schedule == "plateau" else "step")
    best = study.best_trial
    metrics = [best.intermediate_values[e] for e in range(1, cfg.training.epochs + 1)]
    assert plain_pytorch_lrs(export, metrics) == pytest.approx(trained[best.number], rel=1e-12)
    assert export["value"] == best.value and export["trial"] == best.number


def test_export_without_a_complete_trial_writes_nothing(tiny_cfg, sqlite_url, tmp_path):
    cfg = tiny_cfg(space={"lr": [1e4, 1e5], "optimizers": ["sgd"]})
    run_tune(cfg, sqlite_url, n_trials=2, progress=False)
    out = tmp_path / "best.json"
    with pytest.raises(NoCompletedTrialError, match="no complete trial"):
        export_best(open_study(cfg, sqlite_url), cfg, sqlite_url, out)
    assert not out.exists()
    assert list(tmp_path.glob("*.json*")) == []


def test_export_redacts_storage_passwords(tiny_cfg, sqlite_url):
    from tuner.export import build_export

    cfg = tiny_cfg()
    outcome = run_tune(cfg, sqlite_url, n_trials=1, progress=False)
    data = build_export(outcome.study, cfg, "postgresql://alice:s3cret@db:5432/tuner")
    assert "s3cret" not in json.dumps(data)
    assert data["storage"] == "postgresql://alice:***@db:5432/tuner"
