"""Every registered dataset loads, splits by the configured fractions and scales on train only."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_study_dict
from tuner.config import parse_study_config
from tuner.datasets import DATASETS, load_split


def cfg_for(name: str):
    extra = {"n_samples": 300, "n_features": 6, "n_informative": 3} if DATASETS[name].generated \
        else {}
    metric = "accuracy" if DATASETS[name].task == "classification" else "rmse"
    return parse_study_config(
        tiny_study_dict(dataset={"name": name, **extra}, objective={"metric": metric},
                        split={"train": 0.7, "validation": 0.15, "test": 0.15}),
        "d.toml",
    )


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_splits_and_scales(name: str) -> None:
    cfg = cfg_for(name)
    data = load_split(cfg.dataset, cfg.split)
    n = len(data.X_train) + len(data.X_val) + len(data.X_test)
    assert len(data.X_train) / n == pytest.approx(0.7, abs=0.02)
    assert len(data.X_test) / n == pytest.approx(0.15, abs=0.02)
    assert data.X_train.dtype == torch.float32 and data.X_train.shape[1] == data.n_features
    # the scaler is fitted on the training rows only
    assert data.X_train.mean(0).abs().max() < 1e-4
    assert data.X_val.mean(0).abs().max() > 1e-4
    if data.task == "classification":
        assert data.y_train.dtype == torch.int64
        assert set(data.y_train.tolist()) == set(range(data.n_outputs))
    else:
        assert data.y_train.shape == (len(data.X_train), 1) and data.target_scale > 1


def test_classification_split_is_stratified() -> None:
    cfg = cfg_for("iris")
    data = load_split(cfg.dataset, cfg.split)
    counts = torch.bincount(data.y_val)
    assert counts.max() - counts.min() <= 1
