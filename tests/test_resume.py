"""Resuming a study draws new points, and stays reproducible (tuner.study.open_study).

A study run with ``--n-trials 3`` and then resumed with ``--n-trials 6`` must train six distinct
configurations, for every sampler, one trial at a time, batched, and with worker processes; the
same sequence of runs on a fresh storage must give the same trials again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_study_dict
from optuna.trial import TrialState

from tuner.cli import main
from tuner.runner import run_tune
from tuner.study import make_sampler, open_study, resume_seed

SAMPLERS = ["tpe", "random", "qmc", "gp", "cmaes"]


def _cfg(tiny_cfg, sampler: str):
    # the default n_startup_trials (10): both runs lie in TPE's random start-up phase, which is
    # what a re-seeded sampler replays
    extra = {"n_startup_trials": 10} if sampler == "tpe" else {}
    return tiny_cfg(sampler={"name": sampler, **extra}, training={"epochs": 2},
                    model={"hidden": [4]})


def _param_sets(study: optuna.Study) -> list[tuple[tuple[str, Any], ...]]:
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)]


def _three_then_six(cfg, url: str, batch_trials: int | None) -> list:
    run_tune(cfg, url, n_trials=3, progress=False, batch_trials=batch_trials)
    outcome = run_tune(cfg, url, n_trials=6, progress=False, batch_trials=batch_trials)
    return _param_sets(outcome.study)


@pytest.mark.parametrize("batch_trials", [1, None], ids=["one-at-a-time", "batched"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_resume_samples_new_points_reproducibly(tiny_cfg, tmp_path, sampler, batch_trials):
    cfg = _cfg(tiny_cfg, sampler)
    first = _three_then_six(cfg, f"sqlite:///{tmp_path / 'a.db'}", batch_trials)
    assert len(first) == 6
    assert len(set(first)) == 6, "a resumed run trained a configuration of the first run again"
    # the same seed and the same sequence of runs give the same trials
    again = _three_then_six(cfg, f"sqlite:///{tmp_path / 'b.db'}", batch_trials)
    assert again == first


def test_a_fresh_study_is_seeded_with_the_study_seed(tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, "random")
    study = open_study(cfg, f"sqlite:///{tmp_path / 'a.db'}", sampler_seed=7)
    plain = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    for _ in range(3):
        assert study.ask({"x": dist}).params == plain.ask({"x": dist}).params


def test_qmc_takes_the_sobol_point_of_its_trial_number(tiny_cfg):
    """Not a shared counter (two workers asking at once would get the same point)."""
    from scipy.stats import qmc

    cfg = _cfg(tiny_cfg, "qmc")
    study = optuna.create_study(sampler=make_sampler(cfg))
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.tell(study.ask(space), 0.0)  # trial 0: the independent sampler, as in Optuna
    study.sampler = optuna.samplers.RandomSampler(seed=1)  # trial 1 drawn by another process
    study.tell(study.ask(space), 0.0)
    study.sampler = make_sampler(cfg)
    drawn = [study.ask(space).params["x"] for _ in range(3)]  # trials 2, 3, 4
    sobol = qmc.Sobol(1, scramble=False).random(4)[:, 0]
    assert drawn == pytest.approx(list(sobol[1:4]))


def test_resume_seed_keeps_a_fresh_seed_and_moves_on_with_the_trial_count():
    assert [resume_seed(s, 0) for s in (0, 1, 41)] == [0, 1, 41]
    seeds = {resume_seed(base, n) for base in range(4) for n in range(8)}
    assert len(seeds) == 32  # distinct for every base (worker) and trial count
    assert all(0 <= s < 2**32 for s in seeds)
    assert resume_seed(3, 5) == resume_seed(3, 5)


@pytest.mark.slow
# not gp: two workers asking at once may both get the GP's own choice, a corner of the space
# (lr and weight decay at their upper bounds), which is the model's proposal, not a replay
# (README: Samplers)
@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "gp"])
def test_resume_with_workers_samples_new_points(
    tmp_path: Path, sampler: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = tiny_study_dict(sampler={"name": sampler}, training={"epochs": 2},
                           model={"hidden": [4]})
    if sampler == "tpe":
        data["sampler"]["n_startup_trials"] = 10
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    study_file = tmp_path / "w.toml"
    study_file.write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    for n in (3, 6):
        # `tuner tune` called here: its two worker processes are what samples (and seeds)
        assert main(["tune", str(study_file), "--no-progress", "--no-confirm", "--workers",
                     "2", "--n-trials", str(n)]) == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    sets = {tuple(sorted(t.params.items())) for t in finished}
    assert len(finished) >= 6 and len(sets) == len(finished), finished
