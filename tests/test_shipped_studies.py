"""Every shipped study file runs, and the default study reaches its quality bar."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tuner.batched import batch_unsupported_reason
from tuner.config import load_study_config
from tuner.datasets import load_split, sklearn_call
from tuner.runner import run_tune
from tuner.study import completed

STUDIES = sorted(Path(__file__).resolve().parent.parent.joinpath("studies").glob("*.toml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_study_runs(path: Path, tmp_path: Path) -> None:
    cfg = load_study_config(path)
    outcome = run_tune(cfg, f"sqlite:///{tmp_path / 'tuner.db'}", n_trials=2, progress=False)
    assert outcome.finished_after == 2


@pytest.mark.slow
def test_default_study_reaches_95_percent_validation_accuracy(tmp_path: Path) -> None:
    cfg = load_study_config(STUDIES[0].parent / "digits_mlp.toml")
    cfg = replace(cfg, path=str(tmp_path / "digits_mlp.toml"))
    outcome = run_tune(cfg, f"sqlite:///{tmp_path / 'tuner.db'}", progress=False)
    best = completed(outcome.study)[0]
    assert best.value >= 0.95
    assert best.user_attrs["test_metric"] >= 0.9


@pytest.mark.slow
def test_the_cnn_study_reaches_95_percent_validation_accuracy_with_the_autograd_engine(
    tmp_path: Path,
) -> None:
    from tuner.batched import autograd_reason

    cfg = load_study_config(STUDIES[0].parent / "digits_cnn.toml")
    assert cfg.model.name == "cnn" and autograd_reason(cfg) is not None  # one at a time
    cfg = replace(cfg, path=str(tmp_path / "digits_cnn.toml"))
    outcome = run_tune(cfg, f"sqlite:///{tmp_path / 'tuner.db'}", progress=False)
    best = completed(outcome.study)[0]
    assert best.value >= 0.95
    assert best.user_attrs["test_metric"] >= 0.9


def test_noisy_classification_reaches_make_classification_with_label_noise() -> None:
    # the harder study of bench/bench_baselines.py: its [dataset] keys reach scikit-learn by
    # their own names (noise is flip_y), and the split has the rows the README states
    cfg = load_study_config(STUDIES[0].parent / "noisy_classification.toml")
    function, kwargs = sklearn_call(cfg.dataset)
    assert function == "make_classification"
    assert kwargs["flip_y"] == 0.1 and kwargs["n_samples"] == 50_000
    assert (kwargs["n_redundant"], kwargs["n_clusters_per_class"], kwargs["class_sep"]) == (
        8, 3, 1.0)
    data = load_split(cfg.dataset, cfg.split)
    assert (len(data.X_train), len(data.X_val), len(data.X_test)) == (35_000, 7_500, 7_500)
    assert (data.n_features, data.n_outputs) == (40, 4)
    assert cfg.training.epochs <= 5  # a short budget: the learning rate must be right


def test_deep_mlp_is_deep_and_trains_in_lockstep() -> None:
    cfg = load_study_config(STUDIES[0].parent / "deep_mlp.toml")
    assert len(cfg.model.hidden) >= 4
    assert batch_unsupported_reason(cfg) is None  # the stacked engine: cheap to benchmark
