"""Measurement behind README "Does tuning help?" (digits): tune and confirm one study as
`tuner tune` does, then train every COMPLETE trial's configuration (and the LR finder +
one-cycle baseline) on: the study's split with 3 confirmation seeds (validation accuracy and
loss), 5 re-drawn train / validation partitions of train + validation (one seed each), and 5
evaluation seeds (test metric); writes JSON for rules.py.

    PYTHONPATH=. python bench/choice/candidates.py studies/digits_mlp.toml STUDY_SEED OUT.json
    OVR='{"split": {"seed": 3}}' ...   # any study-file fields replaced (JSON)
"""
# ruff: noqa: E402 (torch's thread count is set before tuner is imported)

import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import torch
from rich.console import Console

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
from sklearn.model_selection import train_test_split

from tuner.batched import make_trainer
from tuner.config import load_study_config
from tuner.confirm import run_confirm
from tuner.datasets import load_split
from tuner.lr_find import lr_range_test
from tuner.runner import run_tune
from tuner.space import TrialParams
from tuner.study import completed

study_path, seed, outp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = load_study_config(study_path)
cfg = replace(cfg, study=replace(cfg.study, seed=seed))
for sec, vals in json.loads(os.environ.get("OVR", "{}")).items():
    cfg = replace(cfg, **{sec: replace(getattr(cfg, sec), **vals)})
import time

_t0 = time.perf_counter()
tmp = tempfile.mkdtemp(prefix="choice-x-")
tcfg = replace(cfg, path=str(Path(tmp) / "s.toml"))
quiet = Console(file=open(os.devnull, "w"))
out = run_tune(tcfg, f"sqlite:///{tmp}/t.db", console=quiet, progress=False)
tune_s = time.perf_counter() - _t0
conf = run_confirm(out.study, tcfg, console=quiet, progress=False)
ranked = completed(out.study)
data = load_split(cfg.dataset, cfg.split)
ecfg = replace(cfg, divergence=replace(cfg.divergence, factor=1e9))
arms = {f"#{t.number}": TrialParams.from_optuna_params(t.params) for t in ranked}
try:
    sugg = lr_range_test(cfg, "adam", data=data).suggestion()
    arms["onecycle"] = TrialParams(
        sugg,
        "adam",
        "one_cycle",
        {},
        {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
    )
except Exception as e:
    print("no lr find", e)


def resampled(data, r):
    X = torch.cat([data.X_train, data.X_val])
    y = torch.cat([data.y_train, data.y_val])
    idx = np.arange(len(X))
    strat = y.numpy() if data.task == "classification" else None
    tr, va = train_test_split(idx, test_size=len(data.X_val), random_state=r, stratify=strat)
    tr, va = torch.as_tensor(tr), torch.as_tensor(va)
    return replace(data, X_train=X[tr], y_train=y[tr], X_val=X[va], y_val=y[va])


def run(d, members, c=cfg):
    tr = make_trainer(c, d)
    h = [(a, s, tr.add(arms[a], s)) for a, s in members]
    while tr.members:
        tr.run_epoch()
    return [(a, s, m.result) for a, s, m in h]


def rec(r):
    return {
        "status": r.status,
        "val": r.val_metric,
        "vloss": r.val_loss,
        "test": r.test_metric,
        "tloss": r.test_loss,
    }


res = {a: {"orig": [], "resamp": [], "eval": []} for a in arms}
for a, _s, r in run(data, [(a, s) for a in arms for s in (10000, 10001, 10002)]):
    res[a]["orig"].append(rec(r))
for k in range(5):
    d = resampled(data, 40000 + k)
    for a, _s, r in run(d, [(a, 10000 + k) for a in arms]):
        res[a]["resamp"].append(rec(r))
for a, _s, r in run(data, [(a, 20000 + i) for a in arms for i in range(5)], ecfg):
    res[a]["eval"].append(rec(r))
json.dump(
    {
        "study": study_path,
        "seed": seed,
        "winner": f"#{conf.winner}",
        "single": [t.value for t in ranked],
        "ranked": [f"#{t.number}" for t in ranked],
        "n_trials": len(out.study.trials),
        "describe": {a: p.describe() for a, p in arms.items()},
        "direction": cfg.direction,
        "res": res,
        "confirm_s": conf.seconds,
        "tune_s": tune_s,
        "ovr": os.environ.get("OVR", ""),
    },
    open(outp, "w"),
)
print("done", study_path, seed, conf.winner)
