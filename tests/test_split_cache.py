"""tuner.split_cache: a later run loads the same split without importing scikit-learn; any
setting change computes it again."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tuner import datasets
from tuner.split_cache import cache_key


def _fresh(dataset, split):
    datasets.load_split.cache_clear()
    return datasets.load_split(dataset, split)


def test_cached_split_equals_the_computed_one(tiny_cfg, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg()
    monkeypatch.setenv("TUNER_CACHE_DIR", "off")
    computed = _fresh(cfg.dataset, cfg.split)
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path))
    first = _fresh(cfg.dataset, cfg.split)  # computed and stored
    assert len(list((tmp_path / "splits").glob("*.npz"))) == 1
    again = _fresh(cfg.dataset, cfg.split)  # from the file
    for data in (first, again):
        for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
            assert torch.equal(getattr(data, name), getattr(computed, name)), name
        assert (data.task, data.n_features, data.n_outputs, data.classes, data.x_mean,
                data.x_scale, data.target_scale, data.y_mean) == (
            computed.task, computed.n_features, computed.n_outputs, computed.classes,
            computed.x_mean, computed.x_scale, computed.target_scale, computed.y_mean)
    datasets.load_split.cache_clear()


def test_every_setting_changes_the_key(tiny_cfg) -> None:
    cfg = tiny_cfg()
    base = cache_key(cfg.dataset, cfg.split)
    assert cache_key(cfg.dataset, replace(cfg.split, seed=1)) != base
    assert cache_key(cfg.dataset, replace(cfg.split, train=0.5, validation=0.3)) != base
    assert cache_key(replace(cfg.dataset, name="wine"), cfg.split) != base
    assert cache_key(cfg.dataset, cfg.split) == base


def test_a_later_process_does_not_import_sklearn(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from tests.conftest import tiny_study_dict\n"
        "from tuner.config import parse_study_config\n"
        "from tuner.datasets import load_split\n"
        "cfg = parse_study_config(tiny_study_dict())\n"
        "load_split(cfg.dataset, cfg.split)\n"
        "print('sklearn' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, TUNER_CACHE_DIR=str(tmp_path), PYTHONPATH=str(root))

    def run() -> str:
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()

    assert run() == "True"  # the first process computes the split with scikit-learn
    assert run() == "False"  # the next one reads it


def test_an_unreadable_cache_file_is_computed_again(tiny_cfg, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg()
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path))
    first = _fresh(cfg.dataset, cfg.split)
    (file,) = (tmp_path / "splits").glob("*.npz")
    file.write_bytes(b"not a zip")
    again = _fresh(cfg.dataset, cfg.split)
    assert torch.equal(again.X_train, first.X_train)
    datasets.load_split.cache_clear()
