"""tuner.tune: the tune command from Python, with a study file, a dict or a StudyConfig, and
the user's arrays (data=) and model function (model=). Tiny studies: iris-sized data, 2 epochs,
3 trials."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris, make_regression

import tuner
from tuner.errors import ConfigError, StorageError

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
NAMES = np.array(["setosa", "versicolor", "virginica"])


def config(name: str = "api", **sections: dict[str, Any]) -> dict[str, Any]:
    """A tiny study as a dict, without [dataset] (data= gives it)."""
    out: dict[str, Any] = {
        "study": {"name": name, "n_trials": 3, "seed": 0},
        "model": {"hidden": [8]},
        "training": {"epochs": 2, "batch_size": 16},
        "space": {"lr": [1e-3, 0.1]},
        "sampler": {"name": "random"},
        "pruner": {"name": "none"},
    }
    for section, values in sections.items():
        out.setdefault(section, {}).update(values)
    return out


def finished(study: Any) -> int:
    return sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)


def test_dict_config_with_arrays_classification() -> None:
    result = tuner.tune(config(objective={"metric": "accuracy"}), data=(IRIS_X, IRIS_Y),
                        confirm=False, progress=False)
    assert dataclasses.is_dataclass(result) and result.confirmation is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.best = None  # type: ignore[misc]
    assert finished(result.study) == 3
    assert math.isfinite(result.best.data["value"])
    assert result.best.data["data"]["task"] == "classification"
    assert result.best.data["data"]["classes"] == [0, 1, 2]
    out = result.best.build_model()(torch.zeros(5, 4))
    assert out.shape == (5, 3)
    # the study records the arrays' content hash, as it records a data file's
    assert result.config.dataset.factory.startswith("tuner.datasets:arrays_")
    assert len(result.config.dataset.factory.removeprefix("tuner.datasets:arrays_")) == 64


def test_torch_tensors_are_the_same_data_as_numpy_arrays() -> None:
    from tuner.datasets import register_data

    numpy_spec = register_data(IRIS_X, IRIS_Y)
    assert register_data(torch.tensor(IRIS_X), torch.tensor(IRIS_Y)) == numpy_spec
    assert register_data(IRIS_X.tolist(), IRIS_Y.reshape(-1, 1)) == numpy_spec
    assert register_data(IRIS_X, (IRIS_Y + 1) % 3) != numpy_spec  # other labels, other hash


def test_path_config_keeps_its_storage_next_to_the_file(tmp_path: Path) -> None:
    study = tmp_path / "iris.toml"
    study.write_text(
        '[study]\nname = "from_file"\nn_trials = 3\n[dataset]\nname = "iris"\n'
        "[model]\nhidden = [8]\n[training]\nepochs = 2\nbatch_size = 16\n"
        '[sampler]\nname = "random"\n'
    )
    result = tuner.tune(study, confirm=False, progress=False)
    assert (tmp_path / "tuner.db").is_file()
    assert result.study.study_name == "from_file" and finished(result.study) == 3
    assert result.best.build_model()(torch.zeros(2, 4)).shape == (2, 3)


@pytest.mark.parametrize("progress", [False, True], ids=["quiet", "printed"])
def test_a_note_on_the_run_is_a_warning_when_nothing_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    progress: bool,
) -> None:
    """A worker process that failed while the study still reached its target is a note: with
    progress=False a RuntimeWarning (a library user sees it), else printed as the command
    prints it."""
    import warnings

    import tuner.runner
    from tuner.workers import run_trials

    note = "worker 1 (pid 4242) exited with status 1; it ran no"

    def one_failed(cfg: Any, url: str, study: Any, target: int, *, objective: Any,
                   on_trial: Any, **options: Any) -> list[str]:
        run_trials(study, objective, target, on_trial=on_trial)  # worker 0 ran the study
        return [f"{note} trial"]

    monkeypatch.setattr(tuner.runner, "run_workers", one_failed)
    study = tmp_path / "iris.toml"
    study.write_text(
        '[study]\nname = "noted"\nn_trials = 2\n[dataset]\nname = "iris"\n'
        "[model]\nhidden = [8]\n[training]\nepochs = 2\nbatch_size = 16\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tuner.tune(study, workers=2, confirm=False, progress=progress)
    assert finished(result.study) == 2
    ours = [w for w in caught if "pid 4242" in str(w.message)]
    printed = " ".join(capsys.readouterr().out.split())
    if progress:
        assert not ours and f"note: {note}" in printed
    else:
        assert [w.category for w in ours] == [RuntimeWarning] and printed == ""
        assert str(ours[0].message).startswith(f"tuner: {note}")


def test_regression_arrays_infer_the_task() -> None:
    X, y = make_regression(n_samples=120, n_features=5, noise=0.5, random_state=0)
    result = tuner.tune(config("api_reg", objective={"metric": "rmse"}), data=(X, y),
                        confirm=False, progress=False)
    assert result.config.dataset.task == "regression"
    assert result.best.data["direction"] == "minimize"
    assert math.isfinite(result.best.data["value"])
    assert result.best.build_model()(torch.zeros(3, 5)).shape == (3, 1)


def test_text_labels_become_sorted_classes_as_in_a_data_file(tmp_path: Path) -> None:
    from tuner.api import study_config
    from tuner.datasets import load_split

    labels = NAMES[(IRIS_Y + 1) % 3]  # versicolor, virginica, setosa: not in sorted order
    cfg = study_config(config(), data=(IRIS_X, labels))
    assert cfg.dataset.task == "classification"  # text labels: obvious
    from_arrays = load_split(cfg.dataset, cfg.split)
    np.savez(tmp_path / "iris.npz", X=IRIS_X, y=labels)
    from_file = study_config({**config(), "dataset": {"path": str(tmp_path / "iris.npz")}})
    split = load_split(from_file.dataset, from_file.split)
    assert from_arrays.classes == split.classes == ("setosa", "versicolor", "virginica")
    for part in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        assert torch.equal(getattr(from_arrays, part), getattr(split, part)), part
    assert set(from_arrays.y_train.tolist()) == {0, 1, 2}


def test_integer_labels_with_many_values_need_the_task() -> None:
    from tuner.api import study_config

    with pytest.raises(ConfigError, match=r'task is not obvious.*task = "classification"'):
        study_config(config(), data=(IRIS_X, IRIS_Y))
    cfg = study_config(config(dataset={"task": "classification"}), data=(IRIS_X, IRIS_Y))
    assert cfg.dataset.task == "classification"


def test_missing_values_are_refused_with_the_column_and_count(tmp_path: Path) -> None:
    X = IRIS_X.copy()
    X[[3, 7, 11], 2] = np.nan
    db = tmp_path / "bad.db"
    with pytest.raises(ConfigError) as err:
        tuner.tune(config(dataset={"task": "classification"}), data=(X, IRIS_Y),
                   storage=str(db), progress=False)
    message = str(err.value)
    assert message.startswith("data=(X, y): ") and "\n" not in message
    assert "feature column 2 has 3 missing value(s) (NaN) in 150 rows" in message
    labels = NAMES[IRIS_Y].astype(object)
    labels[5] = None
    with pytest.raises(ConfigError, match=r"y has 1 missing value\(s\) in 150 rows"):
        tuner.tune(config(), data=(IRIS_X, labels), storage=str(db), progress=False)
    assert not db.exists()  # nothing written


def test_mismatched_lengths_and_text_features_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"X has shape \(150, 4\) and y \(149,\); X must be "
                                          r"\(n_samples >= 1, n_features >= 1\) with one row "
                                          r"per y"):
        tuner.tune(config(), data=(IRIS_X, IRIS_Y[:-1]), progress=False)
    X = IRIS_X.astype(object)
    X[4, 1] = "tall"
    with pytest.raises(ConfigError, match=r"feature column 1 is not numeric \(row 4: 'tall'\)"):
        tuner.tune(config(), data=(X, IRIS_Y), progress=False)
    with pytest.raises(ConfigError, match=r"data = ndarray is invalid: must be a pair \(X, y\)"):
        tuner.tune(config(), data=IRIS_X, progress=False)  # type: ignore[arg-type]


def test_empty_complex_and_single_class_data_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"X has shape \(0, 4\) and y \(0,\); X must be "
                                          r"\(n_samples >= 1"):
        tuner.tune(config(), data=(IRIS_X[:0], IRIS_Y[:0]), progress=False)
    with pytest.raises(ConfigError, match="X holds complex numbers; features must be real"):
        tuner.tune(config(), data=(IRIS_X.astype(complex), IRIS_Y), progress=False)
    with pytest.raises(ConfigError, match="every row has the label 0; classification needs at "
                                          "least 2 classes"):
        tuner.tune(config(dataset={"task": "classification"}),
                   data=(IRIS_X, np.zeros(150, dtype=int)), progress=False)


def small_net(n_features: int, n_outputs: int, width: int = 8) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(n_features, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, n_outputs))


def test_a_built_model_instead_of_its_function_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"model = Sequential\(\.\.\.\) is a built model; "
                                          r"pass the function that builds one"):
        tuner.tune(config(dataset={"task": "classification"}), data=(IRIS_X, IRIS_Y),
                   model=small_net(4, 3), progress=False)


def test_model_callable_with_kwargs_from_the_config() -> None:
    cfg = config("api_model", dataset={"task": "classification"}, model={"kwargs": {"width": 5}})
    del cfg["model"]["hidden"]  # model= replaces [model]; its kwargs table stays
    result = tuner.tune(cfg, data=(IRIS_X, IRIS_Y), model=small_net, confirm_top=2,
                        confirm_seeds=2, progress=False)
    model = result.best.build_model()
    assert isinstance(model[1], torch.nn.Tanh) and model[0].out_features == 5
    assert model(torch.zeros(4, 4)).shape == (4, 3)
    assert result.confirmation is not None
    assert result.best.data["trial"] == result.confirmation.winner


def test_model_returning_no_module_is_refused_before_anything_is_written(tmp_path: Path):
    db = tmp_path / "model.db"
    with pytest.raises(ConfigError, match=r"returned dict; it must return a torch.nn.Module"):
        tuner.tune(config(dataset={"task": "classification"}), data=(IRIS_X, IRIS_Y),
                   model=lambda n_features, n_outputs: {"not": "a module"}, storage=str(db),
                   progress=False)
    assert not db.exists()


def test_storage_is_persisted_and_resumed(tmp_path: Path) -> None:
    db = str(tmp_path / "api.db")
    cfg = config("api_resume", dataset={"task": "classification"})
    first = tuner.tune(cfg, data=(IRIS_X, IRIS_Y), storage=db, n_trials=2, confirm=False,
                       progress=False)
    assert finished(first.study) == 2
    params = [t.params for t in first.study.trials]
    again = tuner.tune(cfg, data=(IRIS_X, IRIS_Y), storage=db, n_trials=3, confirm=False,
                       progress=False)
    assert finished(again.study) == 3
    assert [t.params for t in again.study.trials[:2]] == params  # the same study
    other = IRIS_X + 1.0  # other data for the same study: refused, nothing added
    with pytest.raises(ConfigError, match=r"data=\(X, y\) differs from the arrays the study "
                                          r"'api_resume'"):
        tuner.tune(cfg, data=(other, IRIS_Y), storage=db, n_trials=4, progress=False)
    import optuna

    assert len(optuna.load_study(study_name="api_resume", storage=f"sqlite:///{db}").trials) == 3


def test_best_is_what_load_best_returns_for_the_export(tmp_path: Path) -> None:
    from tuner.export import export_best

    result = tuner.tune(config("api_export", dataset={"task": "classification"}),
                        data=(IRIS_X, IRIS_Y), storage=str(tmp_path / "e.db"), confirm=False,
                        progress=False)
    path = export_best(result.study, result.config, f"sqlite:///{tmp_path / 'e.db'}",
                       tmp_path / "best.json")
    loaded = tuner.load_best(path)
    assert loaded.data == result.best.data
    assert loaded.load_data().X_train.shape == result.best.load_data().X_train.shape


def test_arrays_of_another_process_are_named_in_one_line(monkeypatch) -> None:
    import tuner.datasets
    from tuner.api import study_config
    from tuner.datasets import load_xy

    cfg = study_config(config(dataset={"task": "classification"}), data=(IRIS_X, IRIS_Y))
    monkeypatch.setattr(tuner.datasets, "_REGISTERED", {})  # as in a fresh process
    with pytest.raises(ConfigError, match=r"names arrays passed as data=\(X, y\) in another "
                                          r"Python process .*register_data\(X, y\)"):
        load_xy(cfg.dataset)


def test_study_config_input_and_its_data_replaced(tiny_cfg) -> None:
    from tuner.api import study_config

    base = tiny_cfg()
    assert study_config(base) is base
    cfg = study_config(base, data=(IRIS_X[:, :3], NAMES[IRIS_Y]))
    assert cfg.dataset.factory.startswith("tuner.datasets:arrays_")
    assert cfg.model == base.model and cfg.training == base.training
    with_model = study_config(base, model=small_net)
    assert with_model.model.factory.startswith("<object>:") and with_model.dataset == base.dataset
    assert with_model.path == base.path and with_model.space == base.space


def test_mistakes_in_options_and_config_are_one_line_config_errors(tmp_path: Path) -> None:
    cases = [
        (dict(n_trials=0), r"^n_trials = 0 is invalid: must be an integer >= 1 \(or None\)\.$"),
        (dict(seed=-1), r"^seed = -1 is invalid"),
        (dict(timeout=0), r"^timeout = 0 is invalid"),
        (dict(confirm_max_seeds=1), r"^confirm_max_seeds 1 is below confirm_seeds 3"),
        (dict(workers=2, storage=str(tmp_path / "w.db")), r"^workers = 2 cannot use "
                                                            r"data=\(X, y\): worker processes"),
    ]
    cfg = config(dataset={"task": "classification"})
    for kwargs, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            tuner.tune(cfg, data=(IRIS_X, IRIS_Y), progress=False, **kwargs)
    with pytest.raises(ConfigError, match=r"^<memory>: section \[dataset\] is missing: give "
                                          r"it, or pass data=\(X, y\)\.$"):
        tuner.tune(config(), progress=False)
    with pytest.raises(ConfigError, match=r"^<memory>: unknown \[training\] key 'epoch'"):
        tuner.tune(config(training={"epoch": 2}, dataset={"task": "classification"}),
                   data=(IRIS_X, IRIS_Y), progress=False)
    with pytest.raises(ConfigError, match=r"no such study file"):
        tuner.tune(tmp_path / "missing.toml", progress=False)
    with pytest.raises(StorageError, match=r"needs a storage that processes share"):
        tuner.tune({**config(), "dataset": {"name": "iris"}}, workers=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_progress_false_prints_nothing_and_true_prints_the_summary(capfd) -> None:
    cfg = {**config("api_quiet"), "dataset": {"name": "iris"}}
    tuner.tune(cfg, confirm=False, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    tuner.tune({**cfg, "study": {"name": "api_loud", "n_trials": 3}}, confirm=False)
    out, err = capfd.readouterr()
    assert "Top 5 trials of 'api_loud'" in out and "Trials and compute by state" in out
    assert "3 trials finished" in out and "Export:" not in out  # in memory: nothing to export
    assert "Traceback" not in out + err


def readme_block(marker: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index(f"<!-- {marker} -->")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"README: no python block after <!-- {marker} -->"
    return match.group(1)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(readme_block("python-api"), "README.md", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert finished(result.study) == 4  # n_trials=4
    assert math.isfinite(result.best.data["value"])
    assert result.best.data["data"]["n_features"] == 64
    assert namespace["model"][0].out_features == 32  # net(..., width=32) from [model] kwargs
    assert namespace["model"](torch.zeros(2, 64)).shape == (2, 10)
    assert "torch.Size([2, 10])" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # a dict's study stays in memory


def test_pandas_frames_name_their_columns_and_give_the_same_data() -> None:
    pd = pytest.importorskip("pandas")  # the test extra installs it
    from tuner.datasets import register_data

    frame = pd.DataFrame(IRIS_X, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    labels = pd.Series(NAMES[IRIS_Y])
    assert register_data(frame, labels) == register_data(IRIS_X, NAMES[IRIS_Y])
    frame.loc[[1, 2], "petal_w"] = None
    with pytest.raises(ConfigError, match=r'feature column "petal_w" has 2 missing value'):
        register_data(frame, labels)
    frame["colour"] = "red"
    with pytest.raises(ConfigError, match=r'feature column "colour" is not numeric \(row 0: '
                                          r"'red'\)"):
        register_data(frame.fillna(0.0), labels)
    with pytest.raises(ConfigError, match=r"y has 1 missing value\(s\) in 150 rows"):
        register_data(IRIS_X, labels.where(labels.index != 9))
    nullable = pd.Series(IRIS_Y, dtype="Int64")
    assert register_data(IRIS_X, nullable) == register_data(IRIS_X, IRIS_Y)


def test_no_complete_trial_raises_with_the_commands_message(capfd) -> None:
    cfg = {**config("api_diverge"), "dataset": {"name": "iris"},
           "space": {"lr": [100.0, 1000.0], "optimizers": ["sgd"], "schedules": ["constant"]}}
    with pytest.raises(tuner.NoCompletedTrialError,
                       match=r"^study 'api_diverge' has no complete trial \(3 diverged\), so "
                             r"there is nothing to confirm or export; lower the upper bound"):
        tuner.tune(cfg, progress=False)
    assert capfd.readouterr() == ("", "")


def test_an_interrupt_closes_the_run_and_raises_keyboard_interrupt(monkeypatch, capfd):
    import tuner.runner

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # Ctrl-C (a notebook's interrupt) while trials train

    monkeypatch.setattr(tuner.runner, "run_trials", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tuner.tune({**config("api_interrupt"), "dataset": {"name": "iris"}})
    out = capfd.readouterr().out
    assert "Interrupted before any trial started; call tuner.tune again" in out


def test_an_export_loads_in_another_process_after_registering_the_same_arrays(tmp_path):
    import subprocess
    import sys

    from tuner.export import export_best

    labels = NAMES[IRIS_Y]
    result = tuner.tune(config("api_elsewhere"), data=(IRIS_X, labels), confirm=False,
                        storage=str(tmp_path / "x.db"), progress=False)
    path = export_best(result.study, result.config, f"sqlite:///{tmp_path / 'x.db'}",
                       tmp_path / "best.json")
    code = (
        "import sys, numpy as np, tuner\n"
        "from sklearn.datasets import load_iris\n"
        "from tuner.datasets import register_data\n"
        "best = tuner.load_best(sys.argv[1])\n"
        "try:\n"
        "    best.load_data()\n"
        "except tuner.ConfigError as exc:\n"
        "    print('refused:', exc)\n"
        "X, y = load_iris(return_X_y=True)\n"
        "register_data(X, np.array(['setosa', 'versicolor', 'virginica'])[y])\n"
        "print('rows', len(best.load_data().X_train), best.load_data().classes)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "refused: " in run.stdout and "in another Python process" in run.stdout
    rows = len(result.best.load_data().X_train)
    assert f"rows {rows} ('setosa', 'versicolor', 'virginica')" in run.stdout
