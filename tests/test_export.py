"""The export: JSON and YAML round-trip, plain types, confirmation fields, redaction, no-file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests._trust import (
    FAKE_PASSWORD,
    FAKE_PG_URL,
    add_told_trial,
    all_pruned_study,
    fixed_params,
    make_cfg,
    trained_study,
)
from tuner.config import parse_study_config
from tuner.confirm import load_confirmation, run_confirm
from tuner.datasets import DATASETS
from tuner.errors import ConfigError, NoCompletedTrialError
from tuner.export import build_export, dumps_export, export_best, plain


@pytest.fixture(scope="module")
def study_and_cfg(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    cfg = make_cfg(tmp_path_factory.mktemp("export"))
    study = trained_study(cfg, [fixed_params("cosine"), fixed_params("one_cycle", lr=0.01)])
    return study, cfg


def assert_plain(v: Any, where: str = "export") -> None:
    """Only str, int, float, bool, None, list and dict (with str keys), exactly."""
    if isinstance(v, dict):
        for k, x in v.items():
            assert type(k) is str, f"{where}: key {k!r}"
            assert_plain(x, f"{where}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            assert_plain(x, f"{where}[{i}]")
    else:
        assert type(v) in (str, int, float, bool, type(None)), f"{where}: {type(v).__name__}"


def test_plain_unwraps_numpy_tuples_and_non_finite() -> None:
    got = plain({"a": np.float32(0.5), "b": (np.int64(3), float("nan")), 1: float("-inf")})
    assert got == {"a": 0.5, "b": [3, "nan"], "1": "-inf"}
    assert_plain(got)


def test_export_is_plain_and_json_yaml_round_trip(study_and_cfg, tmp_path: Path) -> None:
    study, cfg = study_and_cfg
    data = build_export(study, cfg, "sqlite:///x.db")
    assert_plain(data)
    assert data["format"] == 2 and data["selected_by"] == "single trial"
    assert data["confirmation"] is None
    j = export_best(study, cfg, "sqlite:///x.db", tmp_path / "b.best.json")
    y = export_best(study, cfg, "sqlite:///x.db", tmp_path / "b.best.yaml")  # format from suffix
    from_json = json.loads(j.read_text())
    from_yaml = yaml.safe_load(y.read_text())
    assert from_json == from_yaml == data
    assert not y.read_text().lstrip().startswith("{")  # really YAML, not JSON in a .yaml file


def test_default_paths_follow_the_format(study_and_cfg) -> None:
    study, cfg = study_and_cfg
    path = export_best(study, cfg, "sqlite:///x.db", fmt="yaml")
    assert path == cfg.study_dir / "tiny.best.yaml" and path.is_file()
    assert not list(cfg.study_dir.glob(".tiny.best.yaml.*"))  # no temporary file left


def test_unknown_format_writes_nothing(study_and_cfg, tmp_path: Path) -> None:
    study, cfg = study_and_cfg
    with pytest.raises(ConfigError, match="must be one of json, yaml"):
        export_best(study, cfg, "sqlite:///x.db", tmp_path / "b.best.toml", fmt="toml")
    assert list(tmp_path.iterdir()) == []


def test_password_never_written(study_and_cfg, tmp_path: Path) -> None:
    study, cfg = study_and_cfg
    for fmt in ("json", "yaml"):
        text = dumps_export(build_export(study, cfg, FAKE_PG_URL), fmt)
        assert FAKE_PASSWORD not in text
        assert "postgresql://tuner_user:***@db.example.org:5432/studies" in text


def test_all_pruned_study_exports_nothing(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    study = all_pruned_study(cfg)
    with pytest.raises(NoCompletedTrialError, match="no complete trial"):
        export_best(study, cfg, "sqlite:///x.db")
    assert not list(tmp_path.iterdir())


def test_export_records_confirmation_and_its_winner(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    study = trained_study(cfg, [fixed_params("cosine")])
    # a lucky single run: too small a learning rate for 3 epochs, told a perfect value
    lucky = add_told_trial(study, cfg, fixed_params("constant", lr=1e-3, optimizer="adam"), 1.0)
    run_confirm(study, cfg, top=2, seeds=2, progress=False)
    data = build_export(study, cfg, "sqlite:///x.db")
    assert data["single_best"]["trial"] == lucky and data["single_best"]["value"] == 1.0
    conf = data["confirmation"]
    assert data["selected_by"] == "confirmation"
    assert conf["winner_trial"] == data["trial"] == 0 and conf["changed_winner"] is True
    assert conf["val_mean"] == load_confirmation(study)["candidates"][0]["val_mean"]
    assert conf["val_std"] is not None and len(conf["seeds"]) == 2
    assert data["optimizer"]["kwargs"]["lr"] == 0.05  # the winner's configuration
    assert_plain(data)
    # a new best trial makes the stored confirmation out of date: back to the single best
    newer = add_told_trial(study, cfg, fixed_params("step"), 1.5)
    data = build_export(study, cfg, "sqlite:///x.db")
    assert data["selected_by"] == "single trial" and data["trial"] == newer
    assert data["confirmation"] is None and "out of date" in data["confirmation_note"]


def test_atomic_write_gives_an_ordinary_file_mode(tmp_path: Path) -> None:
    import os

    from tuner.export import write_atomic

    out = tmp_path / "x.best.json"
    write_atomic(out, "{}\n")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["x.best.json"]


# --- every registered dataset: tune one trial, export, load back, retrain ---------------------

def _dataset_overrides(name: str) -> dict[str, Any]:
    spec = DATASETS[name]
    dataset: dict[str, Any] = {"name": name}
    if spec.generated:  # tiny: 60 rows of 5 features (where the generator takes them)
        tiny = {"n_samples": 60, "n_features": 5, "n_informative": 2}
        dataset |= {k: v for k, v in tiny.items() if k in spec.tuner_keys}
    metric = "accuracy" if spec.task == "classification" else "rmse"
    return {"dataset": dataset, "objective": {"metric": metric},
            "training": {"epochs": 1, "batch_size": 32}, "model": {"hidden": [8]}}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_exports_loads_back_and_retrains(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import tuner
    from tuner.cli import main

    cfg = make_cfg(tmp_path, **_dataset_overrides(name))
    study = trained_study(cfg, [fixed_params("cosine", lr=0.01)])
    for fmt in ("json", "yaml"):
        path = export_best(study, cfg, "sqlite:///tuner.db", fmt=fmt)
        best = tuner.load_best(path)
        # the export's settings are a valid study file as they stand (nothing dropped on load)
        sections = {k: best.data[k] for k in ("dataset", "split", "model", "training",
                                              "objective", "divergence")}
        assert parse_study_config({"study": {"name": "again"}, **sections}).dataset == cfg.dataset
        data = best.load_data()
        assert best.study_config().dataset == cfg.dataset
        out = best.build_model()(data.X_val)
        assert out.shape == (len(data.X_val), data.n_outputs)
        capsys.readouterr()
        assert main(["retrain", str(path)]) == 0, capsys.readouterr().err
        assert f"test {cfg.objective.metric}" in capsys.readouterr().out


def _with_infinite_trial(cfg: Any) -> Any:
    """Trials 0 (0.8), 1 (+inf, COMPLETE) and 2 (0.9) of a maximized study."""
    import optuna

    study = optuna.create_study(study_name=cfg.name, direction=cfg.direction)
    for i, v in enumerate([0.8, float("inf"), 0.9]):
        add_told_trial(study, cfg, fixed_params("constant", lr=0.01 * (i + 1)), v)
    return study


def test_export_never_picks_a_non_finite_trial(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    data = build_export(_with_infinite_trial(cfg), cfg, "sqlite:///x.db")
    assert (data["trial"], data["value"]) == (2, 0.9)
    assert data["single_best"]["trial"] == 2


def test_export_of_only_non_finite_trials_writes_nothing(tmp_path: Path) -> None:
    import optuna

    cfg = make_cfg(tmp_path)
    study = optuna.create_study(study_name=cfg.name, direction=cfg.direction)
    add_told_trial(study, cfg, fixed_params("constant"), float("inf"))
    with pytest.raises(NoCompletedTrialError, match="non-finite value"):
        export_best(study, cfg, "sqlite:///x.db")
    assert list(tmp_path.iterdir()) == []


def test_earlier_regression_exports_with_the_default_n_classes_still_load(tmp_path: Path) -> None:
    import tuner

    cfg = make_cfg(tmp_path, **_dataset_overrides("make_regression"))
    path = export_best(trained_study(cfg, [fixed_params("constant")]), cfg, "sqlite:///x.db")
    data = json.loads(path.read_text())
    assert "n_classes" not in data["dataset"]
    data["dataset"]["n_classes"] = 2  # what earlier exports wrote
    path.write_text(json.dumps(data))
    assert tuner.load_best(path).load_data().n_outputs == 1
    data["dataset"]["n_classes"] = 7  # not something tuner wrote: refused, as in a study file
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"\[dataset\] n_classes is invalid"):
        tuner.load_best(path)


def test_export_states_the_split_scaler_and_widths(study_and_cfg) -> None:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from tuner.datasets import load_split

    study, cfg = study_and_cfg
    d = build_export(study, cfg, "sqlite:///x.db")["data"]
    split = load_split(cfg.dataset, cfg.split)
    assert (d["n_features"], d["n_outputs"], d["task"]) == (4, 3, "classification")
    assert d["rows"] == {"train": len(split.X_train), "validation": len(split.X_val),
                         "test": len(split.X_test)}
    assert d["load"] == {"function": "load_iris", "kwargs": {"return_X_y": True}}
    # the first split's training part, fitted by scikit-learn itself: the exported scaler
    X, y = load_iris(return_X_y=True)
    X_tr, _, _, _ = train_test_split(X, y, test_size=d["split"]["test_size"][0],
                                     random_state=d["split"]["random_state"], stratify=y)
    scaler = StandardScaler().fit(X_tr)
    assert d["x_mean"] == scaler.mean_.tolist() and d["x_scale"] == scaler.scale_.tolist()
    assert d["classes"] == [0, 1, 2] and d["y_mean"] is None


def test_regression_export_states_the_target_scaling(tmp_path: Path) -> None:
    from tuner.datasets import load_split

    cfg = make_cfg(tmp_path, **_dataset_overrides("diabetes"))
    d = build_export(trained_study(cfg, [fixed_params("constant")]), cfg, "x")["data"]
    split = load_split(cfg.dataset, cfg.split)
    assert d["y_scale"] == split.target_scale and d["y_mean"] == split.y_mean
    assert d["classes"] is None and (d["n_outputs"], d["task"]) == (1, "regression")
    assert d["split"]["stratify"] is False


def test_export_says_in_one_line_when_the_confirmation_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import optuna

    from tests._trust import write_study_file
    from tuner.cli import main

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    study_file = write_study_file(tmp_path)
    cfg = make_cfg(tmp_path)
    study = optuna.create_study(study_name=cfg.name, direction=cfg.direction, storage=url)
    add_told_trial(study, cfg, fixed_params("cosine"), 0.9)
    run_confirm(study, cfg, top=1, seeds=1, progress=False)
    capsys.readouterr()
    assert main(["export", str(study_file), "--storage", url]) == 0
    assert capsys.readouterr().err == ""  # current: the confirmed winner, nothing to say
    newer = add_told_trial(study, cfg, fixed_params("step"), 0.95)  # a later run's better trial
    assert main(["export", str(study_file), "--storage", url]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tuner: warning: "), err
    assert f"single trial #{newer}" in err and "out of date" in err
    assert f"`tuner confirm {study_file} --storage URL`" in err
