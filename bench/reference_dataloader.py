"""The usual way to tune a learning rate with Optuna and PyTorch: the baseline of bench_engine.py.

One trial at a time (``study.optimize``); each trial builds an ``nn.Sequential``, a
``torch.optim`` optimizer and a ``torch.optim.lr_scheduler`` schedule, and trains with a
``DataLoader(TensorDataset(...), shuffle=True)``, evaluating on a validation ``DataLoader`` after
every epoch under ``torch.no_grad()``, reporting to the trial, as the Optuna and PyTorch
tutorials write it. No divergence guard.

So that it trains exactly the configurations tuner trains, it borrows three things from tuner,
none of them in the hot loop: the split (``tuner.datasets.load_split``: the same rows, scaled
alike), the parameter names (``tuner.space.suggest_params``: the benchmark enqueues the same
trials) and the schedule's sizing (``tuner.schedules.build_scheduler`` from the same spec).

Run alone: ``python bench/reference_dataloader.py studies/digits_mlp.toml --n-trials 4``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tuner.config import StudyConfig, load_study_config
from tuner.datasets import load_split
from tuner.schedules import build_scheduler
from tuner.space import suggest_params


def make_objective(cfg: StudyConfig) -> Any:
    data = load_split(cfg.dataset, cfg.split)
    train_set = TensorDataset(data.X_train, data.y_train)
    val_set = TensorDataset(data.X_val, data.y_val)
    classification = data.task == "classification"
    loss_fn = nn.CrossEntropyLoss() if classification else nn.MSELoss()
    epochs, batch_size = cfg.training.epochs, cfg.training.batch_size
    steps_per_epoch = -(-len(train_set) // batch_size)
    mode = "max" if cfg.objective.direction == "maximize" else "min"

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, cfg.space)
        torch.manual_seed(cfg.study.seed + trial.number)
        layers: list[nn.Module] = []
        width = data.n_features
        for hidden in cfg.model.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        model = nn.Sequential(*layers, nn.Linear(width, data.n_outputs))
        spec = params.optimizer_spec()
        optimizer = getattr(torch.optim, spec["class"])(model.parameters(), **spec["kwargs"])
        sched_spec = params.scheduler_spec(epochs * steps_per_epoch, steps_per_epoch, mode)
        scheduler = build_scheduler(optimizer, sched_spec)
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
        val_loader = DataLoader(val_set, batch_size=batch_size)

        for epoch in range(epochs):
            model.train()
            for xb, yb in train_loader:
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
                if sched_spec["interval"] == "step":
                    scheduler.step()

            model.eval()
            total_loss, correct, count = 0.0, 0, 0
            with torch.no_grad():
                for xb, yb in val_loader:
                    out = model(xb)
                    total_loss += loss_fn(out, yb).item() * len(xb)
                    if classification:
                        correct += (out.argmax(dim=1) == yb).sum().item()
                    count += len(xb)
            val_loss = total_loss / count
            if cfg.objective.metric == "accuracy":
                value = correct / count
            elif cfg.objective.metric == "rmse":
                value = val_loss**0.5 * data.target_scale
            else:
                value = val_loss
            if sched_spec["interval"] == "epoch":
                scheduler.step(value)
            trial.report(value, epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    return objective


def run(
    cfg: StudyConfig,
    n_trials: int,
    storage: Any = None,
    enqueue: list[dict[str, Any]] | None = None,
) -> float:
    """Run the study the usual way; returns wall seconds of ``study.optimize``."""
    objective = make_objective(cfg)  # data loaded before the clock starts, as for tuner
    study = optuna.create_study(
        storage=storage,
        direction=cfg.direction,
        sampler=optuna.samplers.RandomSampler(seed=cfg.study.seed),
        pruner=optuna.pruners.NopPruner(),
    )
    for params in enqueue or []:
        study.enqueue_trial(params)
    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="study file, e.g. studies/digits_mlp.toml")
    parser.add_argument("--n-trials", type=int, default=4)
    parser.add_argument("--storage", help="Optuna storage URL (default: in memory)")
    parser.add_argument("--params", help="JSON list of trial parameters to enqueue")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    enqueue = json.loads(open(args.params).read()) if args.params else None
    seconds = run(load_study_config(args.study), args.n_trials, args.storage, enqueue)
    print(f"{args.n_trials} trials in {seconds:.2f} s")


if __name__ == "__main__":
    main()
