"""The whole tuner procedure (tune + confirm) of digits_mlp with some study-file fields replaced,
on several [split] seeds; the winner's test accuracy over 5 evaluation seeds per split.

    PYTHONPATH=. python bench/choice/procedure_over_splits.py \
        NAME '{"pruner": {"name": "none"}}' TOP 1,2,3 OUT.json
"""
# ruff: noqa: E402 (torch's thread count is set before tuner is imported)

import json
import os
import statistics as st
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import optuna
import torch
from rich.console import Console

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
from tuner.batched import make_trainer
from tuner.config import load_study_config
from tuner.confirm import run_confirm
from tuner.datasets import load_split
from tuner.runner import run_tune
from tuner.space import TrialParams

variant, ovr, top = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
out = {}
for k in [int(x) for x in sys.argv[4].split(",")]:
    cfg = load_study_config(Path(__file__).resolve().parents[2] / "studies" / "digits_mlp.toml")
    cfg = replace(cfg, split=replace(cfg.split, seed=k))
    for sec, vals in ovr.items():
        cfg = replace(cfg, **{sec: replace(getattr(cfg, sec), **vals)})
    tmp = tempfile.mkdtemp(prefix="choice-x-")
    tcfg = replace(cfg, path=str(Path(tmp) / "s.toml"))
    quiet = Console(file=open(os.devnull, "w"))
    t = time.perf_counter()
    o = run_tune(tcfg, f"sqlite:///{tmp}/t.db", console=quiet, progress=False)
    t1 = time.perf_counter() - t
    conf = run_confirm(o.study, tcfg, top=top, console=quiet, progress=False)
    w = next(c for c in conf.payload["candidates"] if c["trial"] == conf.winner)
    data = load_split(cfg.dataset, cfg.split)
    ecfg = replace(cfg, divergence=replace(cfg.divergence, factor=1e9))
    tr = make_trainer(ecfg, data)
    h = [tr.add(TrialParams.from_optuna_params(w["params"]), 20000 + i) for i in range(5)]
    while tr.members:
        tr.run_epoch()
    acc = st.fmean(m.result.test_metric for m in h)
    out[k] = acc
    print(
        variant,
        k,
        f"{acc:.4f} tune {t1:.1f}s confirm {conf.seconds:.1f}s complete "
        f"{sum(1 for x in o.study.trials if x.state.name == 'COMPLETE')}",
        flush=True,
    )
json.dump(out, open(sys.argv[5], "w"))
