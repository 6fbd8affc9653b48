"""tuner.figures on told (not trained) studies: every trial drawn, legends, integer step ticks,
no hidden markers, importances only on enough trials and with their counts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests._trust import fixed_params, make_cfg
from tuner import figures
from tuner.config import StudyConfig
from tuner.space import TrialParams, suggest_params


def told(study: optuna.Study, cfg: StudyConfig, params: TrialParams, values: list[float],
         state: TrialState = TrialState.COMPLETE, divergence: dict[str, Any] | None = None) -> int:
    """A trial with ``params`` that reported ``values`` at epochs 1, 2, ... and ended ``state``
    (value: its last report); ``divergence`` marks a pruned trial as diverged."""
    study.enqueue_trial(params.to_optuna_params())
    trial = study.ask()
    suggest_params(trial, cfg.space)
    if divergence is not None:
        trial.set_user_attr("divergence", divergence)
    for epoch, v in enumerate(values, start=1):
        trial.report(v, epoch)
    if state == TrialState.COMPLETE:
        study.tell(trial, values[-1])
    else:
        study.tell(trial, state=state)
    return trial.number


def diverged(step: int, epoch: int) -> dict[str, Any]:
    return {"reason": "nan", "step": step, "epoch": epoch, "loss": "nan"}


@pytest.fixture
def cfg(tmp_path: Path) -> StudyConfig:
    return make_cfg(tmp_path, training={"epochs": 4}, space={"optimizers": ["sgd", "adam"]})


def new_study(cfg: StudyConfig) -> optuna.Study:
    return optuna.create_study(study_name=cfg.name, direction=cfg.direction)


def drawn_trials(fig) -> set[int]:  # noqa: ANN001
    """Trial numbers named in the hover texts of a figure's traces."""
    out: set[int] = set()
    for trace in fig.data:
        texts = trace.text if isinstance(trace.text, tuple | list) else [trace.text]
        out |= {int(t.split()[1]) for t in texts if t}
    return out


def test_learning_curves_draw_every_trial_with_a_legend(cfg: StudyConfig) -> None:
    study = new_study(cfg)
    told(study, cfg, fixed_params("cosine"), [0.6, 0.8, 0.9, 0.95])
    one = told(study, cfg, fixed_params("constant", lr=0.2), [0.1], TrialState.PRUNED)
    told(study, cfg, fixed_params("step", lr=0.01), [0.4, math.inf], TrialState.PRUNED)
    late = told(study, cfg, fixed_params("constant", lr=0.25), [0.5], TrialState.PRUNED,
                divergence=diverged(step=13, epoch=2))
    early = []
    for lr in (0.29, 0.3):  # diverged before their first report: no value at all
        early.append(told(study, cfg, fixed_params("constant", lr=lr), [], TrialState.PRUNED,
                          divergence=diverged(step=3, epoch=1)))
    fig = figures.learning_curves(study, "accuracy")

    assert drawn_trials(fig) == {t.number for t in study.trials}  # nobody hidden
    by_text = {trace.text: trace for trace in fig.data if isinstance(trace.text, str)}
    assert by_text[f"trial {one} (pruned)"].mode == "markers"  # one point: a marker, not a line
    assert by_text["trial 0 (complete)"].mode == "lines"
    assert by_text[f"trial {late} (diverged)"].mode == "markers"
    marks = [t for t in fig.data if t.name.startswith("divergence")]
    assert len(marks) == 1 and marks[0].yaxis == "y2" and marks[0].name == "divergence (3)"
    xs = sorted(marks[0].x)
    assert len(xs) == 3 and len(set(marks[0].x)) == 3  # two share epoch 1: not on top
    assert all(abs(x - 1) < 0.5 for x in xs[:2]) and xs[2] == 2  # each at its epoch
    assert {t.legendgroup for t in fig.data} == {"complete", "pruned", "diverged"}
    assert fig.layout.showlegend is True
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend.count("pruned (2)") == 1 and "#0 (0.95)" in legend
    lo, hi = fig.layout.yaxis.range  # spans the finite values drawn, inf left out
    assert lo < 0.1 < 0.95 < hi and hi - lo < 1.0
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.anchor == "y2"


def test_learning_curves_without_divergence_have_one_axis(cfg: StudyConfig) -> None:
    study = new_study(cfg)
    told(study, cfg, fixed_params("cosine"), [0.6, 0.8])
    fig = figures.learning_curves(study)
    assert "yaxis2" not in fig.layout.to_plotly_json() and fig.layout.xaxis.anchor is None
    assert [t.mode for t in fig.data] == ["lines"]


def test_diverged_trials_integer_ticks_and_no_hidden_marker(cfg: StudyConfig) -> None:
    study = new_study(cfg)
    for opt in ("sgd", "adam"):  # same lr, same step: would be one marker on top of another
        told(study, cfg, fixed_params("constant", lr=0.2, optimizer=opt), [], TrialState.PRUNED,
             divergence=diverged(step=2, epoch=1))
    told(study, cfg, fixed_params("constant", lr=0.3, optimizer="adam"), [], TrialState.PRUNED,
         divergence=diverged(step=4, epoch=1))
    fig = figures.diverged_trials(study)
    assert sorted(t.name for t in fig.data) == ["adam (2)", "sgd (1)"]
    points = [(x, y, c[0]) for t in fig.data for x, y, c in zip(t.x, t.y, t.customdata,
                                                                strict=True)]
    assert len(points) == 3
    assert len({(x, y) for x, y, _ in points}) == 3  # no two at the same place
    assert all(abs(y - step) < 0.5 and round(y) == step for _, y, step in points)
    assert fig.layout.yaxis.dtick == 1 and fig.layout.yaxis.tickformat == "d"
    assert all(t.marker.opacity < 1 for t in fig.data)
    assert fig.layout.title.text.endswith("(3 trials)")


def _importance_study(cfg: StudyConfig, n_pruned: int, n_complete: int = 4) -> optuna.Study:
    """Trials whose epoch-1 accuracy falls with distance from lr 0.03; every 'plateau' trial
    (one in four) has conditional parameters the others lack."""
    study = new_study(cfg)
    for i in range(n_pruned + n_complete):
        lr = 0.001 * 1.25 ** i
        schedule = "plateau" if i % 4 == 0 else "constant"
        first = 1.0 - abs(math.log10(lr / 0.03)) / 3
        if i < n_complete:
            told(study, cfg, fixed_params(schedule, lr=lr), [first, first + 0.01, first + 0.02])
        else:
            told(study, cfg, fixed_params(schedule, lr=lr), [first], TrialState.PRUNED)
    return study


def test_importances_rest_on_a_common_epoch_and_say_on_how_many(cfg: StudyConfig) -> None:
    study = _importance_study(cfg, n_pruned=20)
    epoch, trials = figures.importance_epoch(study)
    assert epoch == 1 and len(trials) == 24  # epoch 3: only the 4 complete ones
    fig = figures.param_importances(study, "accuracy")
    assert "at epoch 1: 24 trials (4 complete, 20 pruned)" in fig.layout.title.text
    (bars,) = fig.data
    assert all(label.endswith("(24 trials)") for label in bars.y)
    assert {label.split()[0] for label in bars.y} >= {"lr", "schedule"}
    assert math.isclose(sum(bars.x), 1.0, rel_tol=1e-6)
    note = fig.layout.annotations[0].text  # plateau's parameters: in 6 of the 24 trials
    assert "fewer than 20" in note and "schedule.factor (6)" in note
    assert not any("schedule.factor" in label for label in bars.y)


def test_importances_use_the_last_epoch_enough_trials_reached(cfg: StudyConfig) -> None:
    study = _importance_study(cfg, n_pruned=2, n_complete=20)
    epoch, trials = figures.importance_epoch(study)
    assert epoch == 3 and len(trials) == 20


def test_importances_not_shown_below_the_minimum(cfg: StudyConfig) -> None:
    study = _importance_study(cfg, n_pruned=15)  # 19 trials at epoch 1
    assert figures.importance_epoch(study) == (None, [])
    fig = figures.param_importances(study, "accuracy")
    assert [t.type for t in fig.data] == []
    text = fig.layout.annotations[0].text
    assert f"need {figures.IMPORTANCE_MIN_TRIALS} trials" in text and "has 19" in text


def test_importances_of_equal_values_say_so(cfg: StudyConfig) -> None:
    study = new_study(cfg)
    for i in range(20):
        told(study, cfg, fixed_params("constant", lr=0.001 * 1.2 ** i), [1.0])
    fig = figures.param_importances(study, "accuracy")
    assert fig.data == ()
    assert "same validation accuracy (1)" in fig.layout.annotations[0].text


def test_importances_leave_out_parameters_with_one_possible_value(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, space={"optimizers": ["sgd"], "schedules": ["constant"]})
    study = new_study(cfg)
    for i in range(20):
        told(study, cfg, fixed_params("constant", lr=0.001 * 1.2 ** i), [0.5 + 0.01 * i],
             TrialState.PRUNED)
    (bars,) = figures.param_importances(study, "accuracy").data
    names = {label.split()[0] for label in bars.y}
    assert "lr" in names and not names & {"optimizer", "schedule"}  # one choice each
