"""Confirmation: fresh seeds, ranking by mean validation metric only, storage, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._trust import add_told_trial, all_pruned_study, fixed_params, make_cfg, trained_study
from tuner.confirm import (
    CONFIRM_ATTR,
    CONFIRM_SEED_OFFSET,
    confirm_seeds,
    confirmation_is_current,
    rank_candidates,
    run_confirm,
)
from tuner.datasets import load_split
from tuner.engine import train
from tuner.errors import NoCompletedTrialError
from tuner.space import TrialParams


def test_seeds_start_at_the_offset_and_skip_used_ones() -> None:
    assert confirm_seeds(0, 3, used=range(5)) == [10_000, 10_001, 10_002]
    assert confirm_seeds(7, 3, used=[10_007, 10_009]) == [10_008, 10_010, 10_011]


def _cand(trial: int, val: float | None, test: float, diverged: int = 0) -> dict:
    return {"trial": trial, "single_rank": trial + 1, "val_mean": val, "test_mean": test,
            "n_diverged": diverged}


def test_ranking_uses_validation_mean_never_test() -> None:
    rows = [_cand(0, 0.90, 0.99), _cand(1, 0.95, 0.50), _cand(2, 0.93, 0.70)]
    assert [c["trial"] for c in rank_candidates(rows, "maximize")] == [1, 2, 0]
    assert [c["trial"] for c in rank_candidates(rows, "minimize")] == [0, 2, 1]


def test_ranking_puts_diverging_configurations_last() -> None:
    rows = [_cand(0, 0.99, 0.9, diverged=1), _cand(1, 0.90, 0.9), _cand(2, None, 0.0, 3)]
    assert [c["trial"] for c in rank_candidates(rows, "maximize")] == [1, 0, 2]


def test_confirm_retrains_top_k_with_fresh_seeds_and_stores_plain_json(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    study = trained_study(
        cfg, [fixed_params("cosine"), fixed_params("step", lr=0.02), fixed_params("constant")]
    )
    conf = run_confirm(study, cfg, top=2, seeds=2, max_seeds=2, progress=False)
    stored = study.user_attrs[CONFIRM_ATTR]
    assert json.loads(json.dumps(stored, allow_nan=False)) == stored == conf.payload
    trial_seeds = {t.user_attrs["seed"] for t in study.trials}
    assert stored["seeds"] == [CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 1]
    assert not trial_seeds & set(stored["seeds"])
    top2 = sorted(study.trials, key=lambda t: -t.value)[:2]
    assert sorted(c["trial"] for c in stored["candidates"]) == sorted(t.number for t in top2)
    assert conf.trained == 4 and conf.reused == 0
    # the runs are full-budget engine runs with those seeds (no pruning, test only reported)
    c = stored["candidates"][0]
    direct = train(cfg, load_split(cfg.dataset, cfg.split),
                   TrialParams.from_optuna_params(c["params"]), stored["seeds"][1])
    run = c["runs"][1]
    assert run["epochs"] == cfg.training.epochs and run["status"] == "complete"
    assert run["val_metric"] == pytest.approx(direct.val_metric)
    assert run["test_metric"] == pytest.approx(direct.test_metric)
    assert c["val_mean"] == pytest.approx(sum(r["val_metric"] for r in c["runs"]) / 2)
    assert confirmation_is_current(stored, study, cfg)
    # confirming again reuses the stored runs
    again = run_confirm(study, cfg, top=2, seeds=2, max_seeds=2, progress=False)
    assert (again.trained, again.reused) == (0, 4)
    assert again.payload["candidates"] == stored["candidates"]


def test_an_interrupted_confirmation_keeps_its_finished_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuner.confirm

    cfg = make_cfg(tmp_path)
    study = trained_study(cfg, [fixed_params("cosine"), fixed_params("step", lr=0.02)])
    real, calls = tuner.confirm.train_one, []

    def interrupted_after_three(*args, **kwargs):  # Ctrl-C during the fourth run
        calls.append(args[3])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tuner.confirm, "train_one", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_confirm(study, cfg, top=2, seeds=2, max_seeds=2, progress=False)
    assert CONFIRM_ATTR not in study.user_attrs  # no half-written confirmation
    monkeypatch.setattr(tuner.confirm, "train_one", real)
    conf = run_confirm(study, cfg, top=2, seeds=2, max_seeds=2, progress=False)
    assert (conf.trained, conf.reused) == (1, 3)  # only the interrupted run is trained again
    fresh = run_confirm(study, make_cfg(tmp_path, training={"epochs": 2}), top=2, seeds=2,
                        max_seeds=2, progress=False)
    assert fresh.reused == 0  # other settings: nothing reused


def test_confirmation_can_change_the_winner(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    study = trained_study(cfg, [fixed_params("cosine")])
    lucky = add_told_trial(study, cfg, fixed_params("constant", lr=1e-3, optimizer="adam"), 1.0)
    conf = run_confirm(study, cfg, top=2, seeds=2, progress=False)
    assert conf.single_best == lucky and conf.winner == 0 and conf.changed_winner


def test_all_pruned_study_cannot_be_confirmed(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    study = all_pruned_study(cfg)
    with pytest.raises(NoCompletedTrialError, match="nothing to confirm"):
        run_confirm(study, cfg, top=2, seeds=2, progress=False)
    assert CONFIRM_ATTR not in study.user_attrs


def test_cli_defaults_match_the_module() -> None:
    from tuner import cli, confirm

    assert (cli.DEFAULT_TOP, cli.DEFAULT_SEEDS) == (confirm.DEFAULT_TOP, confirm.DEFAULT_SEEDS)


def test_confirm_never_takes_a_non_finite_trial(tmp_path: Path) -> None:
    import optuna
    from rich.console import Console

    from tuner.confirm import print_confirmation

    cfg = make_cfg(tmp_path)
    study = optuna.create_study(study_name=cfg.name, direction=cfg.direction)
    for i, v in enumerate([0.8, float("inf"), 0.9]):
        add_told_trial(study, cfg, fixed_params("constant", lr=0.01 * (i + 1)), v)
    conf = run_confirm(study, cfg, top=3, seeds=1, progress=False)
    assert sorted(c["trial"] for c in conf.payload["candidates"]) == [0, 2]
    assert conf.payload["single_best_trial"] == 2
    assert conf.payload["non_finite_trials"] == [1]
    console = Console(record=True, width=200)
    print_confirmation(conf, console)
    assert "not ranked: trial(s) #1 completed with a non-finite validation value" in (
        console.export_text())
