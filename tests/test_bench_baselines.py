"""bench/bench_baselines.py's verdicts: which studies the re-check on fresh splits runs, the
paired test over splits, what the target lines say, and the budget of the scikit-learn arms
(no training but tiny sklearn fits: made-up results)."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

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


# per fresh split k: the one-cycle ahead on some splits and behind on others (noise)
NOISE = [0.004, -0.003, 0.002, -0.004, 0.001, -0.001]


def _splits(study: str, arms: dict) -> list[dict]:
    """Six fresh-split results: tuner at a level that differs by split (pairing must remove
    it), each arm at that level plus ``arms[arm](k)``."""
    out = []
    for k in range(1, 7):
        base = 0.97 + 0.002 * k
        out.append(_result(study, [base] * 3, {a: [base + f(k)] * 3 for a, f in arms.items()},
                           split_seed=k))
    return out


def _target1(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("- Target 1"))


def test_the_recheck_pairs_by_split_and_a_new_worse_there_misses_target_1(bench) -> None:
    fixed = [_result("b", TUNER, {"LR finder + one-cycle": AHEAD, "sklearn MLP": TUNER})]
    # sklearn ahead on every fresh split: a worse call the fixed split did not make
    splits = _splits("b", {"LR finder + one-cycle": lambda k: NOISE[k - 1],
                           "sklearn MLP": lambda k: 0.005 + 0.0005 * (k % 2)})
    rows, verdicts = bench.recheck_rows("b", splits)
    assert verdicts == {"LR finder + one-cycle": "indistinguishable", "sklearn MLP": "worse"}
    assert rows[0][1] == "**tuner**"
    text = bench.render(fixed, [], 5, 1, 1.0, 1.0, "load", {"b": splits}, {}, 3.0)
    target = _target1(text)
    assert "**MISSED**. On this split: worse than LR finder + one-cycle on b." in target
    assert "indistinguishable from or better than LR finder + one-cycle on b" in target
    assert "**worse** than sklearn MLP on b there" in target
    assert "### Re-check on fresh splits" in text and "b: [split] seed 1..6" in text


def test_target_1_is_met_when_the_recheck_clears_the_fixed_split_call(bench) -> None:
    fixed = [_result("b", TUNER, {"LR finder + one-cycle": AHEAD, "Adam 1e-3": TUNER})]
    splits = _splits("b", {"LR finder + one-cycle": lambda k: NOISE[k - 1],
                           "Adam 1e-3": lambda k: -0.001 * k})
    text = bench.render(fixed, [], 5, 1, 1.0, 1.0, "load", {"b": splits}, {}, 3.0)
    target = _target1(text)
    assert target.startswith("- Target 1, tuner never worse than a baseline beyond noise: "
                             "**met**.")
    # both calls are in the line: the fixed split's, and the re-check's that clears it
    assert "On this split: worse than LR finder + one-cycle on b." in target
    assert ("indistinguishable from or better than LR finder + one-cycle on b (the call on "
            "this split is split noise)") in target


def test_target_1_is_missed_when_the_recheck_confirms_the_fixed_split_call(bench) -> None:
    fixed = [_result("b", TUNER, {"LR finder + one-cycle": AHEAD})]
    splits = _splits("b", {"LR finder + one-cycle": lambda k: 0.004 + 0.0005 * (k % 2)})
    target = _target1(bench.render(fixed, [], 5, 1, 1.0, 1.0, "load", {"b": splits}, {}, 3.0))
    assert "**MISSED**. On this split: worse than LR finder + one-cycle on b." in target
    assert "still **worse** than LR finder + one-cycle on b" in target


def test_target_1_is_missed_when_no_recheck_ran(bench) -> None:
    fixed = [_result("b", TUNER, {"LR finder + one-cycle": AHEAD})]
    target = _target1(bench.render(fixed, [], 5, 1, 1.0, 1.0, "load"))
    assert "**MISSED**. On this split: worse than LR finder + one-cycle on b." in target
    assert "Not re-checked, so it stands: worse than LR finder + one-cycle on b." in target
    # a re-check of another study does not clear b
    other = _splits("c", {"LR finder + one-cycle": lambda k: NOISE[k - 1]})
    fixed.append(_result("c", TUNER, {"LR finder + one-cycle": TUNER}))
    target = _target1(bench.render(fixed, [], 5, 1, 1.0, 1.0, "load", {"c": other}, {}, 3.0))
    assert "**MISSED**" in target and "Not re-checked, so it stands" in target


def test_the_own_budget_arm_is_shown_but_not_a_baseline_of_the_targets(bench) -> None:
    own = bench.OWN_BUDGET
    fixed = [_result("b", TUNER, {"Adam 1e-3": [v - 0.01 for v in TUNER], own: AHEAD})]
    fixed[0]["arms"][own]["epochs_run"] = 150.0
    assert bench.worse_studies(fixed) == []  # no re-check for it
    # ahead of tuner on every fresh split as well
    splits = _splits("b", {"Adam 1e-3": lambda k: -0.01, own: lambda k: 0.005 + 0.001 * k})
    assert bench.recheck_rows("b", splits)[1][own] == "worse"
    text = bench.render(fixed, [], 5, 1, 1.0, 1.0, "load", {"b": splits}, {}, 3.0)
    row = next(line for line in text.splitlines() if line.startswith(f"| b | {own} |"))
    assert "**worse** (information, not counted)" in row  # with its Δ and p
    assert "-0.0094" in row
    assert "; sklearn MLP (own budget) not counted): 1; tuner better in 1, " \
        "indistinguishable in 0, worse in 0." in text
    assert _target1(text).startswith("- Target 1, tuner never worse than a baseline beyond "
                                     "noise: **met**. On this split: never worse.")
    info = next(line for line in text.splitlines() if line.startswith("- Information"))
    assert "150 run on average, vs the study's 2 epochs" in info
    assert f"{own} is ahead of tuner on b: on this split Δ -0.0094" in info
    assert "ahead on fresh splits too" in info


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_sklearn_arm_trains_the_studys_epochs_and_batch_size(bench, monkeypatch,
                                                                   task) -> None:
    import sklearn.neural_network as nn
    import torch

    built = []

    def spy(real):
        def make(**kwargs):
            built.append((kwargs, real(**kwargs)))
            return built[-1][1]
        return make

    monkeypatch.setattr(nn, "MLPClassifier", spy(nn.MLPClassifier))
    monkeypatch.setattr(nn, "MLPRegressor", spy(nn.MLPRegressor))
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, generator=gen)
    y = (X[:, 0] > 0).long() if task == "classification" else X[:, :1].clone()
    data = SimpleNamespace(task=task, X_train=X[:40], X_test=X[40:], y_train=y[:40],
                           y_test=y[40:], n_outputs=2, target_scale=1.0)
    arms = bench.sklearn_arms(data, "accuracy" if task == "classification" else "rmse",
                              [1, 2], epochs=3, batch_size=8)
    same, own = built[:2], built[2:]
    assert [k for k, _ in same] == [{"random_state": s, "max_iter": 3, "batch_size": 8}
                                    for s in (1, 2)]
    assert all(m.n_iter_ == 3 for _, m in same)  # the study's 3 epochs, as trained
    assert [k for k, _ in own] == [{"random_state": s} for s in (1, 2)]  # sklearn's own
    assert "max_iter=3 batch_size=8 (the study's epochs and batch)" in arms["sklearn MLP"][
        "config"]
    ran = statistics.fmean(m.n_iter_ for _, m in own)
    assert arms[bench.OWN_BUDGET]["epochs_run"] == ran
    assert f"up to 200 epochs, ran {ran:.0f} on average" in arms[bench.OWN_BUDGET]["config"]
    assert len(arms["sklearn MLP"]["values"]) == len(arms[bench.OWN_BUDGET]["values"]) == 2


def test_no_recheck_section_when_tuner_is_never_worse(bench) -> None:
    text = bench.render([_result("a", TUNER, {"Adam 1e-3": [v - 0.01 for v in TUNER]})],
                        [], 5, 1, 1.0, 1.0, "load")
    assert ("Target 1, tuner never worse than a baseline beyond noise: **met**. On this split: "
            "never worse.") in text
    assert "Re-check" not in text
