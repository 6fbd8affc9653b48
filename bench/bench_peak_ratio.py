"""How much one configuration's peak loss ratio varies between seeds (README: "Stability margin").

The peak loss ratio of a run is its largest mini-batch loss over its first one (what the
divergence guard compares with ``[divergence] factor``). This trains the digits study's model
(studies/digits_mlp.toml, 20 epochs, warmup-cosine schedule) with a few configurations near the
edge of stability on 8 seeds each, the guard set never to stop, and prints each run's peak and
the spread (largest / smallest) per configuration. About 20 s on one CPU core::

    OMP_NUM_THREADS=1 python bench/bench_peak_ratio.py
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from tuner.batched import train_one
from tuner.config import load_study_config
from tuner.datasets import load_split
from tuner.space import TrialParams

STUDY = Path(__file__).resolve().parent.parent / "studies" / "digits_mlp.toml"
CONFIGS = [("adam", 0.05), ("adam", 0.07), ("adam", 0.1), ("sgd", 0.4)]
SEEDS = range(10_000, 10_008)


def main() -> None:
    cfg = load_study_config(str(STUDY))
    cfg = replace(cfg, divergence=replace(cfg.divergence, factor=1e9))  # record, never stop
    data = load_split(cfg.dataset, cfg.split)
    started = time.perf_counter()
    print("| optimizer | lr | peak loss ratio per seed | largest / smallest |")
    print("| --- | --- | --- | --- |")
    for optimizer, lr in CONFIGS:
        kwargs: dict = {"weight_decay": 1e-4}
        if optimizer == "sgd":
            kwargs = {"momentum": 0.9, "nesterov": True, **kwargs}
        params = TrialParams(lr, optimizer, "warmup_cosine", kwargs,
                             {"warmup_fraction": 0.155, "min_lr_ratio": 0.00316})
        peaks = [train_one(cfg, data, params, seed).peak_loss_ratio for seed in SEEDS]
        finite = [p for p in peaks if p is not None and math.isfinite(p)]
        spread = f"{max(finite) / min(finite):.2f}" if finite else "n/a"
        print(f"| {optimizer} | {lr:g} | {' '.join(f'{p:.2f}' for p in finite)} | {spread} |")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
