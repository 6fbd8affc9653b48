"""Confirmation: fresh seeds, ranking by mean validation metric only, storage, reuse."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests._trust import add_told_trial, all_pruned_study, fixed_params, make_cfg, trained_study
from tuner.confirm import (
    CONFIRM_ATTR,
    CONFIRM_SEED_OFFSET,
    PARTIAL_ATTR,
    confirm_seeds,
    confirmation_is_current,
    decision_text,
    load_confirmation,
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
    stored = load_confirmation(study)
    assert CONFIRM_ATTR not in study.user_attrs  # plain JSON kept out of the dashboard's table
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
    assert load_confirmation(study) is None  # no half-written confirmation
    # the finished runs wait in a system attribute: the dashboard's user attributes stay clean
    system = study._storage.get_study_system_attrs
    assert PARTIAL_ATTR not in study.user_attrs
    assert len(system(study._study_id)[PARTIAL_ATTR]["runs"]) == 3
    monkeypatch.setattr(tuner.confirm, "train_one", real)
    conf = run_confirm(study, cfg, top=2, seeds=2, max_seeds=2, progress=False)
    assert (conf.trained, conf.reused) == (1, 3)  # only the interrupted run is trained again
    assert system(study._study_id)[PARTIAL_ATTR] is None  # cleared once it completed
    assert PARTIAL_ATTR not in study.user_attrs
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
    assert load_confirmation(study) is None


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


# --- the decision: paired test against the single best, added seeds, tie-break, stability ---

def _stubbed(monkeypatch: pytest.MonkeyPatch, table: dict[float, dict[str, list]]) -> list:
    """Replace confirmation training by ``table``: lr -> per-seed lists (the i-th confirmation
    seed gets element i) of ``val`` (metric), and optionally ``loss`` (validation loss) and
    ``peak`` (peak loss ratio). Returns the list of (lr, seed) trained."""
    import tuner.confirm
    from tuner.engine import EpochReport, TrainResult

    trained: list[tuple[float, int]] = []

    def fake_train_one(cfg, data, params, seed, on_epoch=None, *, device=None):
        row, i = table[params.lr], seed - CONFIRM_SEED_OFFSET
        trained.append((params.lr, seed))
        loss = row.get("loss", [0.5] * 99)[i]
        report = EpochReport(cfg.training.epochs, 30, 0.4, loss, row["val"][i], params.lr)
        return TrainResult("complete", cfg.training.epochs, 30, [report], test_metric=0.5,
                           peak_loss_ratio=row.get("peak", [1.0] * 99)[i])

    monkeypatch.setattr(tuner.confirm, "train_one", fake_train_one)
    return trained


def _told_study(cfg, lrs_values: list[tuple[float, float]]):
    import optuna

    study = optuna.create_study(study_name=cfg.name, direction=cfg.direction)
    for lr, value in lrs_values:
        add_told_trial(study, cfg, fixed_params("constant", lr=lr), value)
    return study


def _row(conf, trial: int) -> dict:
    return next(c for c in conf.payload["candidates"] if c["trial"] == trial)


def test_a_challenger_within_noise_does_not_replace_the_single_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(tmp_path)
    study = _told_study(cfg, [(0.01, 0.95), (0.02, 0.94)])
    trained = _stubbed(monkeypatch, {
        0.01: {"val": [0.90, 0.93, 0.91, 0.93, 0.90, 0.92]},
        0.02: {"val": [0.92, 0.92, 0.92, 0.91, 0.92, 0.91]},
    })
    conf = run_confirm(study, cfg, top=2, seeds=3, progress=False)
    single, challenger = _row(conf, 0), _row(conf, 1)
    # a mean-only ranking would have swapped them on the first 3 seeds (0.92 > 0.913)
    assert statistics.fmean([0.92] * 3) > statistics.fmean([0.90, 0.93, 0.91])
    assert conf.winner == 0 and not conf.changed_winner and conf.payload["decided_by"] is None
    assert challenger["comparison"]["outcome"] == "indistinguishable"
    assert challenger["verdict"] == "indistinguishable" and single["verdict"] == "kept"
    assert conf.payload["indistinguishable"] == [1]
    # the close call got seeds added, up to 2 x 3, the same ones for both (paired)
    assert conf.payload["max_seeds"] == 6 and len(conf.payload["extra_seeds"]) == 3
    assert sorted(s for lr, s in trained if lr == 0.01) == sorted(
        s for lr, s in trained if lr == 0.02) == list(range(10_000, 10_006))
    assert challenger["comparison"]["n"] == 6 and challenger["comparison"]["p_better"] > 0.0125
    low, high = challenger["comparison"]["ci95"]
    assert low < 0 < high
    assert "indistinguishable" in decision_text(conf.payload)


def test_a_clearly_better_challenger_replaces_the_single_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(tmp_path)
    study = _told_study(cfg, [(0.01, 0.95), (0.02, 0.94), (0.03, 0.93)])
    _stubbed(monkeypatch, {
        0.01: {"val": [0.90, 0.91, 0.89]},
        0.02: {"val": [0.96, 0.955, 0.95]},  # +0.055 on every seed, give or take 0.01
        0.03: {"val": [0.80, 0.82, 0.79]},  # clearly worse
    })
    conf = run_confirm(study, cfg, top=3, seeds=3, progress=False)
    assert conf.winner == 1 and conf.changed_winner and conf.payload["decided_by"] == "paired test"
    assert conf.payload["extra_seeds"] == []  # decided on the first seeds
    assert [c["trial"] for c in conf.payload["candidates"]] == [1, 0, 2]
    assert [c["verdict"] for c in conf.payload["candidates"]] == ["replaces #0", "replaced",
                                                                  "worse"]
    comparison = _row(conf, 1)["comparison"]
    assert comparison["diff_mean"] == pytest.approx(0.055)
    assert comparison["p_better"] < conf.payload["test"]["alpha_per_look"] == 0.05 / 4


def test_ties_in_the_metric_are_broken_by_the_validation_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(tmp_path)
    study = _told_study(cfg, [(0.01, 1.0), (0.02, 1.0), (0.03, 1.0)])
    _stubbed(monkeypatch, {
        0.01: {"val": [1.0] * 6, "loss": [0.30, 0.32, 0.31, 0.30, 0.33, 0.31]},
        0.02: {"val": [1.0] * 6, "loss": [0.10, 0.11, 0.12, 0.10, 0.11, 0.12]},
        0.03: {"val": [1.0] * 6, "loss": [0.50, 0.52, 0.49, 0.51, 0.50, 0.52]},
    })
    conf = run_confirm(study, cfg, top=3, seeds=3, progress=False)
    assert conf.winner == 1 and conf.payload["decided_by"] == "validation loss"
    assert [c["trial"] for c in conf.payload["candidates"]] == [1, 0, 2]
    assert _row(conf, 1)["comparison"]["on"] == "validation loss"
    assert _row(conf, 2)["comparison"]["outcome"] == "worse"


def test_a_candidate_near_the_cutoff_ranks_below_an_equally_good_safe_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(tmp_path)  # [divergence] factor 5: near the cut-off above 2.5x
    noisy = [0.90, 0.93, 0.91, 0.93, 0.90, 0.92]
    shifted = [0.92, 0.92, 0.92, 0.91, 0.92, 0.91]
    study = _told_study(cfg, [(0.01, 0.95), (0.02, 0.94), (0.03, 0.93)])
    _stubbed(monkeypatch, {
        0.01: {"val": noisy, "peak": [1.0, 1.3, 1.1, 1.0, 1.2, 1.0]},
        0.02: {"val": shifted, "peak": [1.0, 4.9, 1.0, 1.0, 1.1, 1.0]},  # the 4.90x
        0.03: {"val": [0.91, 0.92, 0.92, 0.91, 0.91, 0.92], "peak": [1.1] * 6},
    })
    conf = run_confirm(study, cfg, top=3, seeds=3, progress=False)
    rows = conf.payload["candidates"]
    assert conf.payload["stability_cutoff"] == 2.5
    assert _row(conf, 1)["peak_loss_ratio"] == 4.9 and _row(conf, 1)["near_cutoff"]
    assert _row(conf, 2)["comparison"]["outcome"] == "indistinguishable"
    assert _row(conf, 1)["comparison"]["outcome"] == "indistinguishable"
    # #1 has the best mean but sits near the cut-off: below the equally good, safe #2
    assert _row(conf, 1)["val_mean"] > _row(conf, 2)["val_mean"]
    assert [c["trial"] for c in rows] == [0, 2, 1] and conf.winner == 0

    # the single best near the cut-off loses to an equally good, safe challenger
    study = _told_study(cfg, [(0.02, 0.95), (0.01, 0.94)])
    conf = run_confirm(study, cfg, top=2, seeds=3, progress=False)
    assert conf.winner == 1 and conf.payload["decided_by"] == "stability margin"
    assert "4.90x!" in decision_text(conf.payload)


def test_the_peak_loss_ratio_is_recorded_from_real_training(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, space={"lr": [1e-3, 1.0]})
    calm, rising = fixed_params("constant", lr=0.05, optimizer="adam"), fixed_params(
        "constant", lr=0.5, optimizer="adam")
    study = trained_study(cfg, [calm, rising])
    conf = run_confirm(study, cfg, top=2, seeds=2, max_seeds=2, progress=False)
    by_lr = {TrialParams.from_optuna_params(c["params"]).lr: c for c in conf.payload["candidates"]}
    hot = by_lr[0.5]
    assert all(r["status"] == "complete" for r in hot["runs"])
    peaks = [r["peak_loss_ratio"] for r in hot["runs"]]
    assert max(peaks) > 1.0 and hot["peak_loss_ratio"] == max(peaks)
    assert all(r["peak_loss_ratio"] >= 1.0 for c in by_lr.values() for r in c["runs"])
    # the same number the engine's guard keeps
    data = load_split(cfg.dataset, cfg.split)
    direct = train(cfg, data, rising, hot["runs"][0]["seed"])
    assert hot["runs"][0]["peak_loss_ratio"] == pytest.approx(direct.peak_loss_ratio, rel=1e-4)
    # also when the losses are read back once per epoch (the accelerator path)
    deferred = train(cfg, data, rising, hot["runs"][0]["seed"], check_every_step=False)
    assert deferred.peak_loss_ratio == pytest.approx(direct.peak_loss_ratio, rel=1e-6)


def test_the_table_shows_difference_peak_and_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from tuner.confirm import print_confirmation

    cfg = make_cfg(tmp_path)
    study = _told_study(cfg, [(0.01, 0.95), (0.02, 0.94)])
    _stubbed(monkeypatch, {0.01: {"val": [0.90, 0.91, 0.89], "peak": [1.0, 3.0, 1.0]},
                           0.02: {"val": [0.96, 0.955, 0.95]}})
    conf = run_confirm(study, cfg, top=2, seeds=3, progress=False)
    console = Console(record=True, width=250)
    print_confirmation(conf, console)
    text = console.export_text()
    assert "Δ vs #0" in text and "+0.0550 ± 0.0215" in text and "3.00x!" in text
    assert "replaces #0" in text and "replaced" in text
    assert "replaced single-best trial #0 by #1: better by +0.0550" in text


def test_max_seeds_below_seeds_is_refused(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    study = _told_study(cfg, [(0.01, 0.95)])
    with pytest.raises(ValueError, match="max_seeds must be >= seeds"):
        run_confirm(study, cfg, top=1, seeds=3, max_seeds=2, progress=False)


def test_export_note_and_report_show_the_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.dashboard_notes import study_note
    from tuner.export import build_export
    from tuner.report import _summary_html

    cfg = make_cfg(tmp_path)
    study = _told_study(cfg, [(0.01, 0.95), (0.02, 0.94)])
    _stubbed(monkeypatch, {0.01: {"val": [0.90, 0.91, 0.89], "peak": [1.0, 3.0, 1.0]},
                           0.02: {"val": [0.96, 0.955, 0.95], "peak": [1.2, 1.1, 1.0]}})
    run_confirm(study, cfg, top=2, seeds=3, progress=False)
    conf = build_export(study, cfg, "sqlite:///x.db")["confirmation"]
    assert json.loads(json.dumps(conf, allow_nan=False)) == conf
    assert conf["winner_trial"] == 1 and conf["changed_winner"] is True  # old fields kept
    assert conf["val_mean"] == pytest.approx(0.955) and conf["n_runs"] == 3
    assert conf["decided_by"] == "paired test" and conf["single_best_trial"] == 0
    assert conf["decision"].startswith("Confirmation replaced single-best trial #0 by #1")
    assert conf["test"]["alpha"] == 0.05 and conf["max_seeds"] == 6
    assert conf["peak_loss_ratio"] == pytest.approx(1.2) and conf["near_cutoff"] is False
    rows = {c["trial"]: c for c in conf["candidates"]}
    assert rows[0]["verdict"] == "replaced" and rows[0]["near_cutoff"] is True
    assert rows[1]["comparison"]["p_better"] < 0.0125 and rows[0]["comparison"] is None
    note = study_note(study, cfg, load_split(cfg.dataset, cfg.split))
    assert "### Confirmation" in note and "replaced single-best trial #0 by #1" in note
    assert "| 2 | 0 |" in note and "3.00x!" in note and "| replaces #0 |" in note
    assert "replaced single-best trial #0 by #1" in _summary_html(study, cfg, "sqlite:///x.db")


@pytest.mark.parametrize("argv", [
    ["confirm", "missing.toml", "--seeds", "3", "--max-seeds", "2"],
    ["tune", "missing.toml", "--confirm-seeds", "4", "--confirm-max-seeds", "1"],
])
def test_cli_refuses_max_seeds_below_seeds(argv: list[str], capsys) -> None:
    from tuner.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max-seeds" in err and "must be >=" in err


def test_a_clearly_lower_loss_replaces_the_single_best_when_minimizing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(tmp_path, objective={"metric": "loss"})
    study = _told_study(cfg, [(0.01, 0.10), (0.02, 0.20)])
    _stubbed(monkeypatch, {0.01: {"val": [0.30, 0.31, 0.29]},
                           0.02: {"val": [0.20, 0.205, 0.21]}})
    conf = run_confirm(study, cfg, top=2, seeds=3, progress=False)
    assert conf.single_best == 0 and conf.winner == 1
    assert conf.payload["decided_by"] == "paired test"
    assert _row(conf, 1)["comparison"]["diff_mean"] == pytest.approx(-0.095)


def test_a_confirmation_stored_by_an_older_tuner_still_exports_and_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.dashboard_notes import study_note
    from tuner.export import build_export
    from tuner.report import _confirmation_figure

    cfg = make_cfg(tmp_path)
    study = _told_study(cfg, [(0.01, 0.95), (0.02, 0.94)])
    trained = _stubbed(monkeypatch, {0.01: {"val": [0.90, 0.91, 0.89]},
                                     0.02: {"val": [0.96, 0.955, 0.95]}})
    payload = run_confirm(study, cfg, top=2, seeds=3, max_seeds=3, progress=False).payload
    new_keys = ("max_seeds", "extra_seeds", "test", "divergence_factor", "stability_cutoff",
                "decided_by", "indistinguishable")
    old = {k: v for k, v in payload.items() if k not in new_keys}
    old["candidates"] = [
        {k: v for k, v in c.items() if k not in ("comparison", "verdict", "peak_loss_ratio",
                                                 "near_cutoff", "val_loss_mean")}
        | {"runs": [{k: v for k, v in r.items() if k not in ("val_loss", "peak_loss_ratio")}
                    for r in c["runs"]]}
        for c in payload["candidates"]
    ]
    study._storage.set_study_system_attr(study._study_id, CONFIRM_ATTR, None)
    study.set_user_attr(CONFIRM_ATTR, old)  # where tuner 0.1 stored it
    conf = build_export(study, cfg, "sqlite:///x.db")["confirmation"]
    assert conf["winner_trial"] == 1 and conf["decision"].startswith("Confirmation replaced")
    assert conf["candidates"][0]["comparison"] is None and conf["test"] is None
    assert "### Confirmation" in study_note(study, cfg, load_split(cfg.dataset, cfg.split))
    _confirmation_figure(old)
    # its runs lack the peak loss ratio: confirming again trains them anew
    trained.clear()
    again = run_confirm(study, cfg, top=2, seeds=3, max_seeds=3, progress=False)
    assert again.trained == 6 and len(trained) == 6
