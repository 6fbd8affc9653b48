"""One measured variant in a fresh process (called by _common.run_variant).

Usage: ``python bench/_variants.py VARIANT STUDY PARAMS.json STORAGE REPEATS RESULT.json TMPDIR``

VARIANT: ``reference`` (bench/reference_dataloader.py), ``bare`` (a bare PyTorch loop, below),
``tuner-1`` (tuner, one trial at a time: the stacked engine with one member, as ``tuner tune
--batch-trials 1`` trains an MLP), ``tuner-1-torch`` (one trial at a time through
``tuner.engine.train``, autograd and ``torch.optim``: how tuner trains models it cannot stack,
e.g. with dropout), ``tuner-K`` (tuner, batched trials, the default K) or ``tuner-K<n>`` (n trials
in lockstep).
STORAGE: ``memory`` (Optuna's in-memory storage) or ``sqlite`` (a SQLite file in TMPDIR opened
as tuner opens its default storage; tuner variants then run through ``run_tune``).

Every variant trains the enqueued configurations of PARAMS.json once each, in order, with the
same seeds (study seed + trial number). The clock covers the trials only: the interpreter start,
imports, the data split and torch's one-time lazy imports (paid by a warm-up step) are outside.
The run is repeated REPEATS times in the process (a fresh study each time); the fastest counts
(the least disturbed by other load), and every time is kept in ``all_seconds``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import equal_work_cfg, set_threads  # noqa: E402

from tuner.batched import DEFAULT_BATCH_TRIALS  # noqa: E402
from tuner.batched_runner import run_batched  # noqa: E402
from tuner.config import StudyConfig  # noqa: E402
from tuner.datasets import SplitData, load_split  # noqa: E402
from tuner.engine import build_fast_optimizer, step_scheduler, steps_per_epoch  # noqa: E402
from tuner.runner import run_tune  # noqa: E402
from tuner.schedules import build_scheduler  # noqa: E402
from tuner.space import TrialParams  # noqa: E402
from tuner.storage import make_storage  # noqa: E402
from tuner.study import make_objective, make_pruner, make_sampler, open_study  # noqa: E402


def warm_up(cfg: StudyConfig) -> None:
    """Pay torch's one-time costs (lazy imports on the first optimizer, first kernels)."""
    data = load_split(cfg.dataset, cfg.split)
    model = torch.nn.Linear(data.n_features, data.n_outputs)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        model(data.X_train[:64]).sum().backward()
        opt.step()


def bare_loop(cfg: StudyConfig, data: SplitData, params: TrialParams, seed: int) -> float:
    """One configuration in a bare PyTorch loop: what tuner's engine does per step, without
    tuner (no divergence guard, no reports, no Optuna). Returns the validation metric."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width = data.n_features
    for hidden in cfg.model.hidden:
        layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
        width = hidden
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, data.n_outputs))
    optimizer = build_fast_optimizer(model.parameters(), params.optimizer_spec())  # fused
    n, batch = len(data.X_train), cfg.training.batch_size
    spe = steps_per_epoch(n, batch)
    mode = "max" if cfg.objective.direction == "maximize" else "min"
    spec = params.scheduler_spec(spe * cfg.training.epochs, spe, mode)
    scheduler = build_scheduler(optimizer, spec)
    loss_fn = F.cross_entropy if data.task == "classification" else F.mse_loss
    metric = math.nan
    for _ in range(cfg.training.epochs):
        order = torch.randperm(n, generator=generator)
        X, y = data.X_train[order], data.y_train[order]
        for b in range(spe):
            loss = loss_fn(model(X[b * batch : (b + 1) * batch]), y[b * batch : (b + 1) * batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if spec["interval"] == "step":
                scheduler.step()
        with torch.inference_mode():
            out = model(data.X_val)
            if cfg.objective.metric == "accuracy":
                metric = float((out.argmax(dim=1) == data.y_val).float().mean())
            else:
                metric = float(loss_fn(out, data.y_val))
        if spec["interval"] == "epoch":
            step_scheduler(scheduler, metric if math.isfinite(metric) else None)
    with torch.inference_mode():
        model(data.X_test)
    return metric


def run_once(
    variant: str, cfg: StudyConfig, enqueue: list[dict[str, Any]], url: str | None
) -> dict:
    """Train the enqueued configurations once; wall seconds and what was trained."""
    n = len(enqueue)
    out: dict[str, Any] = {}
    if variant == "bare":
        data = load_split(cfg.dataset, cfg.split)
        started = time.perf_counter()
        values = [
            bare_loop(cfg, data, TrialParams.from_optuna_params(p), cfg.study.seed + i)
            for i, p in enumerate(enqueue)
        ]
        out["seconds"] = time.perf_counter() - started
        out["epochs"] = n * cfg.training.epochs
        out["values"] = values
        return out
    if variant == "reference":
        from reference_dataloader import run

        out["seconds"] = run(cfg, n, make_storage(url) if url else None, enqueue)
        out["epochs"] = n * cfg.training.epochs
        return out
    if variant.startswith("tuner-1"):
        batch = 1
    elif variant.startswith("tuner-K") and variant[7:].isdigit():
        batch = int(variant[7:])
    else:
        batch = DEFAULT_BATCH_TRIALS
    fast = variant != "tuner-1-torch"
    if url is None:
        objective = make_objective(cfg)
        objective.fast = fast
        study = optuna.create_study(
            direction=cfg.direction, sampler=make_sampler(cfg), pruner=make_pruner(cfg)
        )
        for p in enqueue:
            study.enqueue_trial(p)
        started = time.perf_counter()
        if batch == 1:
            study.optimize(objective, n_trials=n)
        else:
            run_batched(study, objective, target=n, batch_trials=batch)
        out["seconds"] = time.perf_counter() - started
    else:
        study = open_study(cfg, url)
        for p in enqueue:
            study.enqueue_trial(p)
        if not fast:  # run_tune builds its own objective: have it use tuner.engine.train
            import tuner.runner

            def torch_objective(*args: Any, **kwargs: Any) -> Any:
                objective = make_objective(*args, **kwargs)
                objective.fast = False
                return objective

            tuner.runner.make_objective = torch_objective
        started = time.perf_counter()
        study = run_tune(
            cfg, url, n_trials=n, batch_trials=batch, progress=False,
            threads=torch.get_num_threads(),  # what set_threads chose, as for the other variants
        ).study
        out["seconds"] = time.perf_counter() - started
    trials = study.get_trials(deepcopy=False)
    out["epochs"] = sum(t.user_attrs.get("epochs_run", 0) for t in trials)
    out["states"] = sorted({t.user_attrs.get("outcome", t.state.name) for t in trials})
    out["values"] = [t.value for t in trials]
    return out


def main() -> None:
    variant, study_name, pfile, storage_kind, repeats, rfile, tmp = sys.argv[1:8]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    set_threads()
    cfg = equal_work_cfg(study_name)
    enqueue: list[dict[str, Any]] = json.loads(Path(pfile).read_text())
    warm_up(cfg)
    runs = []
    for r in range(int(repeats)):
        url = None if storage_kind == "memory" else f"sqlite:///{Path(tmp) / f'bench{r}.db'}"
        runs.append(run_once(variant, cfg, enqueue, url))
    best = min(runs, key=lambda x: x["seconds"])
    best["all_seconds"] = [x["seconds"] for x in runs]
    best["variant"], best["trials"] = variant, len(enqueue)
    Path(rfile).write_text(json.dumps(best))


if __name__ == "__main__":
    main()
