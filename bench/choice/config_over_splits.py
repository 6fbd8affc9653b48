"""Fixed configurations (tuner's digits winner on split 0, the LR finder + one-cycle, ...) on
12 other [split] seeds of digits_mlp, 2 training seeds each: is the one-cycle's lead on split
0's test part a property of the configurations or of that split?

    PYTHONPATH=. python bench/choice/config_over_splits.py
"""
# ruff: noqa: E402 (torch's thread count is set before tuner is imported)

import statistics as st
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)
from tuner.batched import make_trainer
from tuner.config import load_study_config
from tuner.datasets import load_split
from tuner.space import TrialParams

cfg = load_study_config(Path(__file__).resolve().parents[2] / "studies" / "digits_mlp.toml")
cfg = replace(cfg, divergence=replace(cfg.divergence, factor=1e9))
P = {
    "s0#24 adam.0209 cos": TrialParams(
        0.0209, "adam", "cosine", {"weight_decay": 0.00241}, {"min_lr_ratio": 0.00304}
    ),
    "s0#32 adamw.0063 const": TrialParams(
        0.0063, "adamw", "constant", {"weight_decay": 0.00498}, {}
    ),
    "s4#28 sgd.248 cos": None,
    "onecycle adam.00667": TrialParams(
        0.00667,
        "adam",
        "one_cycle",
        {},
        {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
    ),
    "adam 1e-3": TrialParams(1e-3, "adam", "constant"),
    "s1#35 adamw.0135 cos": TrialParams(
        0.0135, "adamw", "cosine", {"weight_decay": 0.000116}, {"min_lr_ratio": 0.00964}
    ),
    "s2#2 adamw.00856 step": None,
}
P = {k: v for k, v in P.items() if v is not None}
res = {k: [] for k in P}
for sp in range(1, 13):
    c = replace(cfg, split=replace(cfg.split, seed=sp))
    data = load_split(c.dataset, c.split)
    tr = make_trainer(c, data)
    h = [(k, s, tr.add(p, s)) for k, p in P.items() for s in (20000, 20001)]
    while tr.members:
        tr.run_epoch()
    per = {}
    for k, _s, mm in h:
        per.setdefault(k, []).append(
            (mm.result.val_metric, mm.result.val_loss, mm.result.test_metric, mm.result.test_loss)
        )
    for k, v in per.items():
        res[k].append(tuple(st.fmean(x[i] for x in v) for i in range(4)))
    print(sp, " ".join(f"{k.split()[0]}={per[k][0][2]:.4f}" for k in P), flush=True)
for k, v in res.items():
    print(
        f"{k:24} val {st.fmean(x[0] for x in v):.4f} vloss {st.fmean(x[1] for x in v):.4f} "
        f"test {st.fmean(x[2] for x in v):.4f} tloss {st.fmean(x[3] for x in v):.4f}"
    )
ref = res["onecycle adam.00667"]
from scipy.stats import ttest_rel

for k, v in res.items():
    a = [x[2] for x in v]
    b = [x[2] for x in ref]
    print(
        f"{k:24} test diff vs onecycle {st.fmean(a) - st.fmean(b):+.4f} "
        f"p={ttest_rel(a, b).pvalue:.3g}"
    )
