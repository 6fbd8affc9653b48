"""The study note, figures and trial notes that tuner writes for optuna-dashboard.

Trials are made with ask/tell and :func:`tuner.study.record_result` on in-memory storage; no
model is trained here.
"""

from __future__ import annotations

import re
import tomllib

import optuna
import optuna_dashboard
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

import tuner.dashboard_notes
from tuner import figures
from tuner.config import parse_study_config
from tuner.dashboard_notes import (
    AUTO_NOTE_MARKER,
    FIGURE_IDS,
    LiveRefresh,
    metric_name,
    refresh_study_notes,
    study_note,
    trial_note,
)
from tuner.datasets import load_split
from tuner.divergence import Divergence
from tuner.engine import EpochReport, TrainResult
from tuner.runner import run_tune
from tuner.study import SERIES_ATTR, record_result, trial_series

SPACE = {
    "lr": FloatDistribution(1e-4, 1e3, log=True),
    "optimizer": CategoricalDistribution(["sgd", "adam"]),
    "schedule": CategoricalDistribution(["constant", "cosine"]),
}


def _epochs(n: int) -> list[EpochReport]:
    return [EpochReport(e, 6 * e, 1.5 - 0.1 * e, 1.2 - 0.1 * e, 0.5 + 0.05 * e, 0.01)
            for e in range(1, n + 1)]


def _add(study: optuna.Study, result: TrainResult, lr: float = 0.01) -> int:
    """A trial as tuner's objective leaves it: reports, user attributes, final state."""
    trial = study.ask({k: v for k, v in SPACE.items()})
    for r in result.history:
        trial.report(r.val_metric, r.epoch)
    record_result(trial, result, seed=trial.number)
    if result.status == "complete":
        study.tell(trial, result.history[-1].val_metric)
    else:
        study.tell(trial, state=TrialState.PRUNED)
    return trial.number


def _pruned(study: optuna.Study) -> int:
    history = _epochs(3)
    return _add(study, TrainResult("pruned", 3, 18, history=history))


def _diverged(study: optuna.Study, reason: str = "explosion") -> int:
    loss = {"explosion": 63122.77, "nan": float("nan"), "inf": float("inf")}[reason]
    div = Divergence(reason, step=12, epoch=2, loss=loss, initial_loss=1.154, factor=5.0)
    return _add(study, TrainResult("diverged", 2, 12, history=_epochs(1), divergence=div))


def _complete(study: optuna.Study) -> int:
    result = TrainResult("complete", 4, 24, history=_epochs(4), test_metric=0.9, test_loss=0.3)
    return _add(study, result)


@pytest.fixture
def study() -> optuna.Study:
    return optuna.create_study(direction="maximize")


def test_diverged_trial_note_gives_step_loss_and_rule(tiny_cfg, study) -> None:
    cfg = tiny_cfg()
    number = _diverged(study)
    note = trial_note(study.trials[number], cfg)
    assert note is not None
    assert "diverged" in note
    assert "| step | optimizer step 12 (epoch 2) |" in note
    assert "| loss | 6.312e+04 (initial 1.154) |" in note
    # the explosion rule names the setting and the limit it computed: 5 x 1.154
    assert "`[divergence] factor` = 5 x the initial loss 1.154 = 5.77" in note

    nan, inf = _diverged(study, "nan"), _diverged(study, "inf")
    nan_note = trial_note(study.trials[nan], cfg)
    assert "the loss became NaN" in nan_note and "| loss | nan" in nan_note
    assert "became infinite" in trial_note(study.trials[inf], cfg)


def test_pruned_trial_note_names_the_pruner_rule_epoch_and_losses(tiny_cfg, study) -> None:
    number = _pruned(study)
    median = trial_note(study.trials[number], tiny_cfg(pruner={"name": "median"}))
    assert "lagged behind other trials" in median  # tuner's pruned_reason
    assert "median pruner (n_startup_trials = 5, n_warmup_steps = 2)" in median
    assert "| step | epoch 3 (optimizer step 18) |" in median
    assert "| validation accuracy | 0.65 |" in median
    assert "| loss | training 1.2, validation 0.9 |" in median

    hyper = trial_note(
        study.trials[number], tiny_cfg(pruner={"name": "hyperband", "reduction_factor": 4})
    )
    assert "Hyperband pruner" in hyper and "best 1/4" in hyper
    halving = trial_note(
        study.trials[number], tiny_cfg(pruner={"name": "successive_halving", "reduction_factor": 3})
    )
    assert "successive-halving pruner" in halving and "best 1/3" in halving


def test_trials_tuner_did_not_record_get_a_plain_note(tiny_cfg, study) -> None:
    cfg = tiny_cfg()
    odd = study.ask(SPACE)
    odd.report(float("nan"), 1)
    odd.report(float("inf"), 2)
    study.tell(odd, state=TrialState.PRUNED)
    bare = study.ask(SPACE)
    study.tell(bare, state=TrialState.PRUNED)
    assert "after step 2 (last reported value inf)" in trial_note(study.trials[0], cfg)
    assert "before its first report" in trial_note(study.trials[1], cfg)


def test_complete_and_failed_trials_get_no_note(tiny_cfg, study) -> None:
    cfg = tiny_cfg()
    number = _complete(study)
    assert trial_note(study.trials[number], cfg) is None
    failed = study.ask(SPACE)
    study.tell(failed, state=TrialState.FAIL)
    assert trial_note(study.trials[failed.number], cfg) is None


def test_study_note_settings_rebuild_the_study_file(tiny_cfg, study) -> None:
    cfg = tiny_cfg(pruner={"name": "median"})
    data = load_split(cfg.dataset, cfg.split)
    _complete(study)
    _pruned(study)
    _diverged(study)
    note = study_note(study, cfg, data)
    assert cfg.path in note
    assert data.describe() in note  # "90 train / 30 validation / 30 test rows, ..., 3 classes"
    assert "3 classes" in note
    assert "validation accuracy: the fraction of validation rows classified correctly" in note
    assert f"tuner export {cfg.path}" in note
    assert "Trials so far: 1 complete, 1 pruned, 1 diverged, 0 failed" in note
    assert "Trial 0: validation accuracy **0.7**, test 0.9" in note
    assert note.rstrip().endswith(AUTO_NOTE_MARKER)
    settings = re.search(r"```toml\n(.*?)```", note, re.S)
    assert settings is not None
    rebuilt = parse_study_config(tomllib.loads(settings.group(1)), "note")
    # the settings shown are the study's: same sections, same values, defaults filled in
    assert rebuilt.to_dict() == cfg.to_dict()
    # settings that do not apply are left out (iris is shipped, the pruner is median)
    assert "n_samples" not in settings.group(1) and "reduction_factor" not in settings.group(1)


def test_regression_note_describes_rmse(tiny_cfg, study) -> None:
    cfg = tiny_cfg(dataset={"name": "diabetes"}, objective={"metric": "rmse"})
    note = study_note(study, cfg, load_split(cfg.dataset, cfg.split))
    assert "regression" in note and "in the target's units (minimize)" in note
    assert "No complete trial yet." in note


def test_refresh_writes_missing_notes_and_keeps_a_persons_edits(tiny_cfg, study) -> None:
    cfg = tiny_cfg()
    _complete(study)
    pruned, diverged = _pruned(study), _diverged(study)
    first = refresh_study_notes(study, cfg)
    assert first.study_note and first.figures == tuple(FIGURE_IDS)
    assert first.trial_notes == (pruned, diverged)
    assert "## tiny" in optuna_dashboard.get_note(study)
    # written in optuna-dashboard's format: its own get_note reads them back
    handle = optuna.trial.Trial(study, study.trials[pruned]._trial_id)
    assert optuna_dashboard.get_note(handle) == trial_note(study.trials[pruned], cfg)

    # a person edits one trial note, empties another, and edits the study note (no marker)
    optuna_dashboard.save_note(handle, "looked at it: fine")
    emptied = optuna.trial.Trial(study, study.trials[diverged]._trial_id)
    optuna_dashboard.save_note(emptied, "")
    optuna_dashboard.save_note(study, "my conclusions")
    later = _pruned(study)
    second = refresh_study_notes(study, cfg)
    assert second.trial_notes == (later,)  # only the new trial; the others keep theirs
    assert not second.study_note
    assert optuna_dashboard.get_note(study) == "my conclusions"
    assert optuna_dashboard.get_note(handle) == "looked at it: fine"
    assert optuna_dashboard.get_note(emptied) == ""

    # a note that still carries the marker is tuner's and is rewritten with the new counts
    optuna_dashboard.save_note(study, "old numbers\n" + AUTO_NOTE_MARKER)
    assert refresh_study_notes(study, cfg).study_note
    assert "2 pruned, 1 diverged" in optuna_dashboard.get_note(study)


def test_study_note_best_trial_is_finite_and_others_are_listed(tiny_cfg, study) -> None:
    cfg = tiny_cfg()
    _complete(study)  # trial 0: validation 0.7
    trial = study.ask({k: v for k, v in SPACE.items()})
    study.tell(trial, float("inf"))  # trial 1: COMPLETE with +inf
    note = study_note(study, cfg, load_split(cfg.dataset, cfg.split))
    best = note.split("### Best trial")[1].split("###")[0]
    assert "Trial 0: validation accuracy **0.7**" in best
    assert "Not ranked: 1 complete trial(s) with a non-finite validation value: #1 (inf)." in best


def test_per_epoch_series_are_kept_out_of_the_user_attributes(tiny_cfg, study) -> None:
    """Short scalars in the user attributes (one dashboard column each); the series in the
    system attribute, which the figures and trial notes read."""
    number = _pruned(study)
    trial = study.trials[number]
    assert all(not isinstance(v, list) for v in trial.user_attrs.values())
    assert trial.user_attrs["outcome"] == "pruned"
    assert trial_series(trial, "train_loss_per_epoch") == [1.4, 1.3, 1.2]
    assert trial_series(trial, "lr_per_epoch") == [0.01, 0.01, 0.01]
    assert "| loss | training 1.2, validation 0.9 |" in trial_note(trial, tiny_cfg())


def test_a_study_recorded_by_an_older_tuner_still_shows_its_series(tiny_cfg, study) -> None:
    """Older studies hold the series as user attributes: notes and figures still read them."""
    cfg = tiny_cfg(pruner={"name": "median"})
    old = study.ask(SPACE)
    old.report(0.6, 1)
    for k, v in {"outcome": "pruned", "epochs_run": 1, "steps": 6, "val_loss": 0.8,
                 "pruned_reason": "pruner: lagged behind", "lr_per_epoch": [0.02],
                 "train_loss_per_epoch": [1.25]}.items():
        old.set_user_attr(k, v)
    study.tell(old, state=TrialState.PRUNED)
    done = study.ask(SPACE)
    done.set_user_attr("lr_per_epoch", [0.03, 0.015])
    study.tell(done, 0.9)
    assert SERIES_ATTR not in study.trials[0].system_attrs
    assert "| loss | training 1.25, validation 0.8 |" in trial_note(study.trials[0], cfg)
    (curve,) = figures.lr_curves(study).data
    assert list(curve.y) == [0.03, 0.015]


def test_refresh_names_the_metric_for_the_dashboard(tiny_cfg, study) -> None:
    cfg = tiny_cfg()
    refresh_study_notes(study, cfg)
    assert study.metric_names == ["validation accuracy"]
    rmse = tiny_cfg(dataset={"name": "diabetes"}, objective={"metric": "rmse"})
    assert metric_name(rmse) == "validation RMSE"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_refresh_spends_at_most_a_twentieth_of_the_time(
    tiny_cfg, study, monkeypatch
) -> None:
    """Refreshes at the first call; then only after max(min_interval_s, 19 x the last
    refresh's cost), so refreshing is at most 5 % of the wall time."""
    clock, costs, done = _Clock(), [0.125, 2.0, 2.0], []

    def fake_refresh(*args) -> None:  # noqa: ANN002
        clock.now += costs[len(done)]
        done.append(clock.now)

    monkeypatch.setattr(tuner.dashboard_notes, "refresh_study_notes", fake_refresh)
    live = LiveRefresh(study, tiny_cfg(), min_interval_s=3.0, clock=clock)
    assert live() and len(done) == 1  # first call: at once
    clock.now += 2.5  # 19 x 0.125 s is less than min_interval_s: 3 s after its end
    assert not live()
    clock.now += 0.5
    assert live() and len(done) == 2  # that one cost 2 s: the next waits 19 x 2 = 38 s
    clock.now += 37.5
    assert not live()
    clock.now += 0.5
    assert live() and len(done) == 3
    assert live.count == 3


def test_tune_refreshes_the_dashboard_during_the_run(tiny_cfg, sqlite_url, monkeypatch) -> None:
    """At the start a new study has its note at once; the figures and trial notes follow
    as LiveRefresh allows (here after every trial) and at the end."""
    seen: list[tuple[int, list[str]]] = []
    real = tuner.dashboard_notes.refresh_study_notes
    notes: list[int] = []
    real_note = tuner.dashboard_notes.refresh_study_note

    def spy_note(study, cfg, data=None):  # noqa: ANN001, ANN202
        notes.append(len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))))
        return real_note(study, cfg, data)

    def spy(study, cfg, data=None):  # noqa: ANN001, ANN202
        out = real(study, cfg, data)
        finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
        seen.append((finished, list(study.metric_names or [])))
        return out

    monkeypatch.setattr(tuner.dashboard_notes, "refresh_study_notes", spy)
    monkeypatch.setattr(tuner.dashboard_notes, "refresh_study_note", spy_note)
    monkeypatch.setattr(LiveRefresh, "__init__", _no_min_interval(LiveRefresh.__init__))
    cfg = tiny_cfg(study={"n_trials": 3})
    run_tune(cfg, sqlite_url, progress=False, batch_trials=1)
    assert notes[0] == 0  # the study note before any trial
    counts = [n for n, _ in seen]
    assert counts == [1, 2, 3, 3]  # every trial (no min interval), then the end
    assert all(names == ["validation accuracy"] for _, names in seen)


def _no_min_interval(init):  # noqa: ANN001, ANN202
    def patched(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        init(self, *args, **{**kwargs, "min_interval_s": 0.0, "clock": lambda: 0.0})
    return patched
