"""bench/bench_baselines.py's verdicts: which studies the re-check on fresh splits runs, the
paired test over splits, and what the target line says (no training: made-up results)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_baselines.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_baselines", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_baselines"] = module
    spec.loader.exec_module(module)
    return module


def _result(study: str, tuner: list[float], others: dict[str, list[float]],
            split_seed: int = 0) -> dict:
    arms = {"tuner": {"config": "adam", "values": tuner, "diverged": 0}}
    arms |= {arm: {"config": arm, "values": v, "diverged": 0} for arm, v in others.items()}
    return {"study": study, "split_seed": split_seed, "metric": "accuracy",
            "direction": "maximize", "epochs": 2, "batch_size": 8, "arms": arms,
            "n_trials": 3, "tune_seconds": 1.0, "seconds": 2.0, "cpu_seconds": 2.0}


TUNER = [0.970, 0.972, 0.971, 0.973, 0.969]
AHEAD = [0.980, 0.981, 0.979, 0.982, 0.980]  # better than tuner on every seed


def test_only_studies_where_tuner_is_called_worse_are_rechecked(bench) -> None:
    results = [
        _result("a", TUNER, {"Adam 1e-3": [v - 0.01 for v in TUNER]}),  # tuner better
        _result("b", TUNER, {"LR finder + one-cycle": AHEAD}),  # tuner worse
        _result("c", TUNER, {"Adam 1e-3": [0.971, 0.970, 0.973, 0.969, 0.972]}),  # noise
    ]
    assert bench.worse_studies(results) == ["b"]


def test_the_recheck_pairs_by_split_and_the_target_line_reports_both(bench) -> None:
    fixed = [_result("b", TUNER, {"LR finder + one-cycle": AHEAD, "sklearn MLP": TUNER})]
    # on fresh splits the one-cycle is ahead on some splits and behind on others (noise),
    # sklearn ahead on every split
    splits = []
    for k, shift in enumerate([0.004, -0.003, 0.002, -0.004, 0.001, -0.001], start=1):
        base = 0.97 + 0.002 * k  # splits differ more than the arms: pairing must remove it
        splits.append(_result("b", [base] * 3, {
            "LR finder + one-cycle": [base + shift] * 3,
            "sklearn MLP": [base + 0.005 + 0.0005 * (k % 2)] * 3,
        }, split_seed=k))
    rows, verdicts = bench.recheck_rows("b", splits)
    assert verdicts == {"LR finder + one-cycle": "indistinguishable", "sklearn MLP": "worse"}
    assert rows[0][1] == "**tuner**"
    text = bench.render(fixed, [], 5, 1, 1.0, 1.0, "load", {"b": splits}, {}, 3.0)
    target = next(line for line in text.splitlines() if line.startswith("- Target 1"))
    assert "**MISSED** on this split: worse than LR finder + one-cycle on b" in target
    assert "indistinguishable from or better than LR finder + one-cycle on b" in target
    assert "**worse** than sklearn MLP on b there" in target
    assert "### Re-check on fresh splits" in text and "b: [split] seed 1..6" in text


def test_no_recheck_section_when_tuner_is_never_worse(bench) -> None:
    text = bench.render([_result("a", TUNER, {"Adam 1e-3": [v - 0.01 for v in TUNER]})],
                        [], 5, 1, 1.0, 1.0, "load")
    assert "Target 1, tuner never worse than a baseline beyond noise: **met**." in text
    assert "Re-check" not in text
