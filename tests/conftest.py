"""Shared fixtures: tiny study configs, temporary storages, and CI service checks."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tuner.config import StudyConfig, parse_study_config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True, scope="session")
def _split_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The on-disk split cache (tuner.split_cache) of the test processes and the commands they
    start: a folder of the session, never the user's cache."""
    os.environ.setdefault("TUNER_CACHE_DIR", str(tmp_path_factory.mktemp("tuner-cache")))


def tiny_study_dict(**overrides: Any) -> dict[str, Any]:
    """A study on iris small enough to run a trial in well under a second."""
    data: dict[str, Any] = {
        "study": {"name": "tiny", "n_trials": 4, "seed": 0},
        "dataset": {"name": "iris"},
        "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "seed": 0},
        "model": {"hidden": [16]},
        "training": {"epochs": 3, "batch_size": 16},
        "objective": {"metric": "accuracy"},
        "space": {"lr": [1e-3, 0.3]},
        "sampler": {"name": "tpe", "n_startup_trials": 2},
        "pruner": {"name": "none"},
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return data


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Callable[..., StudyConfig]:
    """Factory: ``tiny_cfg(training={"epochs": 2})`` -> a validated StudyConfig in tmp_path."""

    def make(**overrides: Any) -> StudyConfig:
        cfg = parse_study_config(tiny_study_dict(**overrides), str(tmp_path / "tiny.toml"))
        return replace(cfg, path=str(tmp_path / "tiny.toml"))

    return make


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tuner.db'}"


@pytest.fixture
def postgres_url() -> str:
    """TUNER_TEST_POSTGRES_URL; skips without it locally, and it is always set in CI."""
    url = os.environ.get("TUNER_TEST_POSTGRES_URL")
    if not url:
        if IN_CI:
            pytest.fail("CI=true but TUNER_TEST_POSTGRES_URL is not set (.ci/run sets it)")
        pytest.skip("no PostgreSQL: set TUNER_TEST_POSTGRES_URL=postgresql://... to run")
    return url


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small finished tuner study in SQLite for the dashboard tests (tests/dashboard_study.py)."""
    from dashboard_study import build_finished_study

    return build_finished_study(tmp_path_factory.mktemp("finished_study"))
