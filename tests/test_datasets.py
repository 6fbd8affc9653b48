"""Every registered dataset loads, splits by the configured fractions and scales on train only."""

from __future__ import annotations

import re
import tracemalloc

import pytest
import torch

from tests.conftest import tiny_study_dict
from tuner.config import DatasetConfig, parse_study_config
from tuner.datasets import (
    DATASETS,
    FETCH_ONLY,
    available_bytes,
    check_memory,
    estimated_bytes,
    load_split,
)
from tuner.errors import ConfigError


def cfg_for(name: str):
    small = {"n_samples": 300, "n_features": 6, "n_informative": 3}
    extra = {k: v for k, v in small.items() if k in DATASETS[name].tuner_keys}
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
        assert data.y_train.shape == (len(data.X_train), 1) and data.target_scale > 0
        # standardized with the training targets' mean and deviation
        assert abs(float(data.y_train.mean())) < 1e-4
        assert float(data.y_train.std(unbiased=False)) == pytest.approx(1, abs=1e-4)


def test_classification_split_is_stratified() -> None:
    cfg = cfg_for("iris")
    data = load_split(cfg.dataset, cfg.split)
    counts = torch.bincount(data.y_val)
    assert counts.max() - counts.min() <= 1


# --- generated datasets: the memory is estimated before anything is allocated -----------------


def test_a_generated_dataset_too_large_for_the_machine_is_refused_in_one_line() -> None:
    # the documented upper bounds: 8 bytes x 1e7 x 1e5 alone is 7.3 TiB
    data = tiny_study_dict(dataset={"name": "make_classification", "n_samples": 10_000_000,
                                    "n_features": 100_000, "n_informative": 10})
    with pytest.raises(ConfigError) as info:
        parse_study_config(data, "studies/huge.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("studies/huge.toml: [dataset] n_samples = 10000000, "
                              "n_features = 100000 ")
    need = estimated_bytes(DatasetConfig(name="make_classification", n_samples=10_000_000,
                                         n_features=100_000, n_informative=10))
    assert need > 7 * 2**40
    assert f"needs about {need / 2**40:.1f} TiB" in message and "is available" in message


def test_the_memory_check_compares_the_estimate_with_the_available_memory() -> None:
    cfg = cfg_for("make_regression").dataset  # 300 x 6
    need = estimated_bytes(cfg)
    assert need > 0 and estimated_bytes(cfg_for("iris").dataset) == 0
    check_memory(cfg, "d.toml", available=need)
    with pytest.raises(ConfigError) as info:
        check_memory(cfg, "d.toml", available=need - 1)
    assert str(info.value).startswith(
        "d.toml: [dataset] n_samples = 300, n_features = 6 is too large for this machine: ")
    assert f"needs about {need / 1024:.1f} KiB" in str(info.value)
    assert f"{(need - 1) / 1024:.1f} KiB is available" in str(info.value)
    available = available_bytes()
    assert available is None or available > 0


@pytest.mark.parametrize(("name", "metric"), [("make_classification", "accuracy"),
                                              ("make_regression", "rmse")])
def test_memory_estimate_covers_the_real_peak(name: str, metric: str) -> None:
    cfg = parse_study_config(tiny_study_dict(
        dataset={"name": name, "n_samples": 20_000, "n_features": 40, "n_informative": 10,
                 "seed": 12345},  # a configuration no other test loads (load_split caches)
        objective={"metric": metric}), "m.toml")
    load_split(cfg_for(name).dataset, cfg_for(name).split)  # imports first: not in the peak
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        load_split(cfg.dataset, cfg.split)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = estimated_bytes(cfg.dataset)
    assert 8 * 20_000 * 40 < peak <= estimate <= 2 * peak  # covers it, with a margin


# --- fetch_* datasets: named with the real scikit-learn loader -------------------------------


@pytest.mark.parametrize("name", sorted(FETCH_ONLY))
def test_a_download_only_dataset_names_a_real_sklearn_loader(name: str) -> None:
    import sklearn.datasets

    with pytest.raises(ConfigError) as info:
        parse_study_config(tiny_study_dict(dataset={"name": name}), "f.toml")
    message = str(info.value)
    assert "\n" not in message and "fetch_* loaders need the network" in message
    loaders = re.findall(r"sklearn\.datasets\.(\w+)\(", message)
    assert len(loaders) == 1 and hasattr(sklearn.datasets, loaders[0]), message


def test_mnist_points_to_fetch_openml() -> None:
    for name in ("mnist", "MNIST", "fetch_mnist"):
        with pytest.raises(ConfigError) as info:
            parse_study_config(tiny_study_dict(dataset={"name": name}), "f.toml")
        assert 'sklearn.datasets.fetch_openml("mnist_784")' in str(info.value)
        assert "fetch_mnist(" not in str(info.value)


def test_an_unknown_fetch_name_invents_no_loader() -> None:
    with pytest.raises(ConfigError) as info:
        parse_study_config(tiny_study_dict(dataset={"name": "fetch_imagenet"}), "f.toml")
    message = str(info.value)
    assert "needs a download" in message and "need the network" in message
    assert "sklearn.datasets.fetch_imagenet" not in message
