"""Studies on a real storage: divergence ends PRUNED with its reason, resumes top up."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tuner.runner import run_tune
from tuner.study import (
    SETTINGS_ATTR,
    count_finished,
    make_objective,
    open_study,
    trial_kind,
    trial_series,
)


def test_diverging_trial_is_pruned_in_its_first_epoch_with_its_reason(tiny_cfg, sqlite_url):
    cfg = tiny_cfg(space={"lr": [1e-3, 1e5], "optimizers": ["sgd"], "schedules": ["constant"]},
                   training={"epochs": 4})
    study = open_study(cfg, sqlite_url)
    study.enqueue_trial({"lr": 1e4, "optimizer": "sgd", "optimizer.momentum": 0.9,
                         "optimizer.nesterov": False, "schedule": "constant"})
    study.optimize(make_objective(cfg), n_trials=1)
    trial = optuna.load_study(study_name=cfg.name, storage=sqlite_url).trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial_kind(trial) == "diverged"
    div = trial.user_attrs["divergence"]
    assert div["reason"] in ("nan", "inf", "explosion") and div["epoch"] == 1
    assert div["step"] >= 1 and "loss" in div
    assert trial.user_attrs["pruned_reason"].startswith("diverged: loss")
    assert trial.user_attrs["epochs_run"] == 1
    assert trial.intermediate_values == {}  # stopped before the first epoch ended


def test_complete_trial_records_what_a_person_needs(tiny_cfg, sqlite_url):
    cfg = tiny_cfg(space={"lr": [1e-3, 1e-2]}, training={"epochs": 3})
    outcome = run_tune(cfg, sqlite_url, n_trials=2, progress=False)
    for t in outcome.study.get_trials(states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        assert a["epochs_run"] == 3 and len(trial_series(t, "lr_per_epoch")) == 3
        assert len(trial_series(t, "train_loss_per_epoch")) == 3
        # short scalars only (optuna-dashboard shows one column per user attribute)
        assert all(not isinstance(v, list) for v in a.values())
        assert a["outcome"] == "complete"
        assert a["seconds"] > 0 and a["seed"] == cfg.study.seed + t.number
        assert 0 <= a["val_metric"] <= 1 and 0 <= a["test_metric"] <= 1
        assert a["val_metric"] == t.value
        assert sorted(t.intermediate_values) == [1, 2, 3]


def test_second_run_tops_up_to_the_requested_count(tiny_cfg, sqlite_url):
    cfg = tiny_cfg()
    first = run_tune(cfg, sqlite_url, n_trials=3, progress=False)
    assert (first.finished_before, first.finished_after) == (0, 3)
    second = run_tune(cfg, sqlite_url, n_trials=5, progress=False)
    assert (second.finished_before, second.finished_after) == (3, 5)
    third = run_tune(cfg, sqlite_url, n_trials=5, progress=False)
    assert third.finished_after == 5
    numbers = [t.number for t in third.study.trials]
    assert numbers == list(range(5))
    assert count_finished(third.study) == 5


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_pruner_prunes_lagging_trials_per_epoch(tiny_cfg, sqlite_url, pruner):
    cfg = tiny_cfg(pruner={"name": pruner}, training={"epochs": 9},
                   space={"lr": [1e-5, 1.0]}, sampler={"name": "random"})
    outcome = run_tune(cfg, sqlite_url, n_trials=12, progress=False)
    kinds = [trial_kind(t) for t in outcome.study.trials]
    assert "pruned" in kinds, kinds
    pruned = [t for t in outcome.study.trials if trial_kind(t) == "pruned"]
    assert all(t.user_attrs["epochs_run"] < 9 for t in pruned)
    assert all("pruner" in t.user_attrs["pruned_reason"] for t in pruned)


def test_resuming_with_other_settings_is_refused_and_writes_nothing(tiny_cfg, sqlite_url):
    from tuner.errors import ConfigError

    cfg = tiny_cfg()
    run_tune(cfg, sqlite_url, n_trials=2, progress=False)
    for changed, words in [
        (tiny_cfg(training={"epochs": 5}), "[training] epochs = 5 differs"),
        (tiny_cfg(space={"optimizers": ["adam"]}), '[space] optimizers = ["adam"] differs'),
        (tiny_cfg(dataset={"name": "wine"}), '[dataset] name = "wine" differs'),
    ]:
        with pytest.raises(ConfigError, match="new \\[study\\] name") as info:
            run_tune(changed, sqlite_url, n_trials=4, progress=False)
        assert words in str(info.value)
    study = optuna.load_study(study_name=cfg.name, storage=sqlite_url)
    assert len(study.trials) == 2
    # the run's own budget and sampler may change on resume
    more = run_tune(tiny_cfg(study={"seed": 3}, sampler={"name": "random"}), sqlite_url,
                    n_trials=3, progress=False)
    assert more.finished_after == 3
    # kept out of the user attributes that optuna-dashboard shows as raw JSON
    assert SETTINGS_ATTR not in study.user_attrs


def test_settings_stored_by_an_older_tuner_are_still_checked(tiny_cfg, sqlite_url):
    from tuner.errors import ConfigError

    cfg = tiny_cfg()
    study = open_study(cfg, sqlite_url)
    system = study._storage.get_study_system_attrs(study._study_id)
    storage = study._storage
    # as an older tuner wrote it: a user attribute, no system attribute
    storage.set_study_system_attr(study._study_id, SETTINGS_ATTR, None)
    study.set_user_attr(SETTINGS_ATTR, system[SETTINGS_ATTR])
    with pytest.raises(ConfigError, match=r"\[training\] epochs = 5 differs"):
        open_study(tiny_cfg(training={"epochs": 5}), sqlite_url)
    open_study(cfg, sqlite_url)  # the same settings resume


def test_a_study_optuna_made_another_way_is_refused_before_any_trial(tiny_cfg, sqlite_url):
    """The same name in the storage, made by plain Optuna: the other direction, or trials
    tuner did not make, would be ranked with tuner's. One line, nothing written."""
    from tuner.errors import ConfigError

    cfg = tiny_cfg()  # accuracy: maximize
    optuna.create_study(storage=sqlite_url, study_name=cfg.name, direction="minimize")
    with pytest.raises(ConfigError, match="is to minimize .* is to maximize") as info:
        run_tune(cfg, sqlite_url, n_trials=2, progress=False)
    assert "new [study] name" in str(info.value) and "\n" not in str(info.value)
    assert optuna.load_study(study_name=cfg.name, storage=sqlite_url).trials == []

    other = tiny_cfg(study={"name": "foreign"})
    foreign = optuna.create_study(storage=sqlite_url, study_name="foreign",
                                  direction="maximize")
    foreign.optimize(lambda t: t.suggest_float("foo", 0.0, 1.0), n_trials=3)
    with pytest.raises(ConfigError, match="3 trial\\(s\\) that tuner did not make"):
        run_tune(other, sqlite_url, n_trials=5, progress=False)
    after = optuna.load_study(study_name="foreign", storage=sqlite_url)
    assert len(after.trials) == 3
    assert SETTINGS_ATTR not in after._storage.get_study_system_attrs(after._study_id)


def test_generator_refusals_name_the_file(tiny_cfg):
    from tuner.errors import ConfigError

    cfg = tiny_cfg(dataset={"name": "make_classification", "n_samples": 200, "n_classes": 100,
                            "n_features": 5, "n_informative": 3})
    with pytest.raises(ConfigError, match=r"tiny.toml: \[dataset\] make_classification refuses"):
        make_objective(cfg)


# --- "best" is decided in one place, among finite values only -------------------------------

@pytest.mark.parametrize(("metric", "values", "best"), [
    ("accuracy", [0.8, float("inf"), 0.9, float("-inf")], 2),   # maximize: +inf is not best
    ("loss", [0.5, float("-inf"), 0.4, float("inf")], 2),       # minimize: -inf is not best
])
def test_best_is_chosen_among_finite_values_only(tmp_path, metric, values, best) -> None:
    from tests._trust import add_told_trial, fixed_params, make_cfg
    from tuner.study import best_trial, best_value, completed, nonfinite_trials

    cfg = make_cfg(tmp_path, objective={"metric": metric})
    study = optuna.create_study(direction=cfg.direction)
    for i, v in enumerate(values):
        add_told_trial(study, cfg, fixed_params("constant", lr=0.01 * (i + 1)), v)
    assert study.best_trial.number == 1  # Optuna's own choice: why tuner does not use it
    assert [t.number for t in completed(study)] == [2, 0]
    assert best_trial(study).number == best
    assert best_value(study) == values[best]
    assert [t.number for t in nonfinite_trials(study)] == [1, 3]


def test_no_finite_trial_means_no_best(tmp_path) -> None:
    from tests._trust import add_told_trial, fixed_params, make_cfg
    from tuner.confirm import no_complete_message
    from tuner.study import best_trial, best_value, completed

    cfg = make_cfg(tmp_path)
    study = optuna.create_study(direction=cfg.direction)
    add_told_trial(study, cfg, fixed_params("constant"), float("inf"))
    assert (best_trial(study), best_value(study), list(completed(study))) == (None, None, [])
    message = no_complete_message(study, "export")
    assert "no complete trial with a finite value (1 complete with a non-finite value)" in message
    assert "#0 = inf" in message


def test_summary_ranks_finite_trials_and_lists_the_others(tmp_path) -> None:
    from rich.console import Console

    from tests._trust import add_told_trial, fixed_params, make_cfg
    from tuner.summary import print_summary

    cfg = make_cfg(tmp_path)
    study = optuna.create_study(direction=cfg.direction)
    for i, v in enumerate([0.8, float("inf"), 0.9]):
        add_told_trial(study, cfg, fixed_params("constant", lr=0.01 * (i + 1)), v)
    console = Console(record=True, width=200)
    print_summary(study, cfg, console)
    text = console.export_text()
    assert "Best trial #2: validation accuracy 0.9000" in text
    assert "Not ranked: 1 complete trial(s) with a non-finite validation value: #1 (inf)." in text
    table = text.split("Top 5 trials")[1].split("Best trial")[0]
    assert "inf" not in table


def _choices(section: type, key: str = "name") -> set[str]:
    import dataclasses

    field = next(f for f in dataclasses.fields(section) if f.name == key)
    return set(field.metadata["constraint"].choices)


def test_the_sampler_and_pruner_registries_are_the_configs_choices() -> None:
    from tuner.config import PRUNER_KEYS, PrunerConfig, SamplerConfig
    from tuner.study import PRUNERS, SAMPLERS

    assert set(SAMPLERS) == _choices(SamplerConfig)
    assert set(PRUNERS) == _choices(PrunerConfig) == set(PRUNER_KEYS)


@pytest.mark.parametrize(
    "name, cls",
    [("tpe", "TPESampler"), ("random", "RandomSampler"), ("qmc", "TrialIndexedQMCSampler"),
     ("gp", "PrunedAwareGPSampler"), ("cmaes", "UnconditionalCmaEsSampler")],
)
def test_every_sampler_is_built_seeded(tiny_cfg, name: str, cls: str) -> None:
    from tuner.study import make_sampler

    cfg = tiny_cfg(sampler={"name": name})
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(cfg, seed=7))
        assert type(study.sampler).__name__ == cls
        # past tiny_cfg's 2 start-up trials: the model's own draws are seeded too
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1),
                       n_trials=4)
        draws.append([(t.params["x"], t.params["y"]) for t in study.trials])
    assert draws[0] == draws[1]  # the same seed, the same points


@pytest.mark.parametrize(
    "name, cls",
    [("successive_halving", "SuccessiveHalvingPruner"), ("hyperband", "HyperbandPruner"),
     ("median", "MedianPruner"), ("none", "NopPruner")],
)
def test_every_pruner_is_built_from_its_section(tiny_cfg, name: str, cls: str) -> None:
    from tuner.study import make_pruner

    pruner = make_pruner(tiny_cfg(pruner={"name": name}))
    assert type(pruner).__name__ == cls
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    trial.report(1.0, 1)
    assert trial.should_prune() is False  # one trial alone is never pruned


# what gp and cmaes model of tuner's space, and what they leave to their independent sampler
MODELLED = {
    "gp": ("gp:relative_params:0", {"lr", "optimizer", "weight_decay", "schedule"}),
    "cmaes": ("cma:generation", {"lr", "weight_decay"}),
}


@pytest.mark.parametrize("name", sorted(MODELLED))
@pytest.mark.parametrize("batch_trials", [1, 3], ids=["one-at-a-time", "batched"])
def test_gp_and_cmaes_model_the_unconditional_parameters_quietly(
    tiny_cfg, sqlite_url, caplog, name, batch_trials
) -> None:
    import json

    cfg = tiny_cfg(sampler={"name": name, "n_startup_trials": 3}, model={"hidden": [4]},
                   training={"epochs": 2}, space={"lr": [1e-3, 0.1]})
    with caplog.at_level("WARNING", logger="optuna"):
        outcome = run_tune(cfg, sqlite_url, n_trials=10, progress=False,
                           batch_trials=batch_trials)
    trials = outcome.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 10
    modelled = [t for t in trials if MODELLED[name][0] in t.system_attrs]
    assert modelled, "the model never took over from the start-up sampler"
    assert all(t.number >= 3 for t in modelled)  # none before n_startup_trials
    if name == "gp":  # the point it proposed: exactly the unconditional parameters
        for t in modelled:
            assert set(json.loads(t.system_attrs["gp:relative_params:0"])) == MODELLED[name][1]
    # the conditional parameters are still drawn, by the independent sampler
    assert all(any(k.startswith("schedule.") for k in t.params)
               for t in trials if t.params["schedule"] != "constant")
    # falling back for them is by design: no warning per parameter and trial
    assert not [r for r in caplog.records if "independent" in r.getMessage()]


def test_cmaes_keeps_modelling_when_the_first_trials_share_a_conditional_parameter() -> None:
    """SGD trials only up to CMA-ES's first update put optimizer.momentum into Optuna's
    intersection search space, and CMA-ES keeps the dimension it started with: Optuna's
    CmaEsSampler then falls back to its independent sampler for good at the first Adam trial
    (checked below, so that this test notices if Optuna changes). tuner's leaves the
    conditional parameters out from the start and goes on."""
    from tuner.study import UnconditionalCmaEsSampler

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        if trial.suggest_categorical("optimizer", ["sgd", "adam"]) == "sgd":
            trial.suggest_float("optimizer.momentum", 0.8, 0.99)
        return abs(lr - 0.01)

    def generations(sampler: optuna.samplers.BaseSampler) -> list:
        study = optuna.create_study(sampler=sampler)
        for opt in ["sgd"] * 12 + ["adam"] * 12:  # start-up + more than one population: SGD
            study.enqueue_trial({"optimizer": opt})
        study.optimize(objective, n_trials=24)
        return [t.system_attrs.get("cma:generation") for t in study.trials]

    plain = generations(optuna.samplers.CmaEsSampler(
        seed=0, n_startup_trials=2, warn_independent_sampling=False))
    assert plain[-1] is None  # Optuna's own: no CMA-ES after the first Adam trials
    ours = generations(UnconditionalCmaEsSampler(seed=0, n_startup_trials=2))
    assert None not in ours[2:] and ours[-1] >= 3  # CMA-ES to the end, generation after generation


def test_qmc_draws_the_conditional_parameters_quietly(tiny_cfg, sqlite_url, caplog) -> None:
    cfg = tiny_cfg(sampler={"name": "qmc"}, model={"hidden": [4]}, training={"epochs": 1})
    with caplog.at_level("WARNING", logger="optuna"):
        outcome = run_tune(cfg, sqlite_url, n_trials=6, progress=False, batch_trials=1)
    assert any(k.startswith("schedule.") for t in outcome.study.trials for k in t.params)
    assert not [r for r in caplog.records if "independent" in r.getMessage()]


@pytest.mark.parametrize("name", sorted(MODELLED))
def test_gp_and_cmaes_learn_from_pruned_trials(tiny_cfg, sqlite_url, name) -> None:
    """With a pruner most trials end PRUNED: the model starts after n_startup_trials finished
    trials with a value, not after as many COMPLETE ones (Optuna's GPSampler would wait)."""
    cfg = tiny_cfg(sampler={"name": name, "n_startup_trials": 4}, model={"hidden": [4]},
                   training={"epochs": 4}, space={"lr": [1e-5, 1.0]},
                   pruner={"name": "successive_halving", "reduction_factor": 4})
    outcome = run_tune(cfg, sqlite_url, n_trials=14, progress=False, batch_trials=1)
    trials = outcome.study.get_trials(deepcopy=False)
    first = next(t.number for t in trials if MODELLED[name][0] in t.system_attrs)
    before = trials[:first]  # all finished when trial `first` was sampled (one at a time)
    assert len([t for t in before if t.intermediate_values]) >= 4  # it waited for 4 ...
    assert len([t for t in before if t.state == TrialState.COMPLETE]) < 4  # ... pruned or not
