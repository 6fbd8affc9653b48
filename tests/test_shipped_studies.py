"""Every shipped study file runs, and the default study reaches its quality bar."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tuner.config import load_study_config
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
