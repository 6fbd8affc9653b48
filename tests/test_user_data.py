"""[dataset]: scikit-learn's loaders and generators by their own names and keywords, the user's
own files (CSV, .npz) and factories, the content hash, and the shipped CSV study (issue 13)."""

from __future__ import annotations

import inspect
import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn.datasets
import torch

from tests.conftest import tiny_study_dict
from tuner.config import load_study_config, parse_study_config
from tuner.datasets import (
    ALIASES,
    DATASETS,
    NOT_SINGLE_TARGET,
    SIGNATURES,
    check_memory,
    estimated_bytes,
    file_sha256,
    load_split,
    load_xy,
    sklearn_call,
)
from tuner.errors import ConfigError

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def study(dataset: dict[str, Any], where: str = "<memory>", **sections: Any):
    data = tiny_study_dict(**sections)
    data["dataset"] = dataset
    return parse_study_config(data, where)


def refused(dataset: dict[str, Any], where: str = "s.toml", **sections: Any) -> str:
    with pytest.raises(ConfigError) as info:
        study(dataset, where, **sections)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{where}: ")
    return message


# --- scikit-learn by its own names ------------------------------------------------------------


def test_recorded_signatures_are_the_installed_scikit_learn_ones() -> None:
    for source, names in SIGNATURES.items():
        real = inspect.signature(getattr(sklearn.datasets, source)).parameters
        assert tuple(real) == names, source


def test_every_offline_loader_and_generator_is_registered_or_refused_in_one_line() -> None:
    registered = {spec.source for spec in DATASETS.values()}
    for name in dir(sklearn.datasets):
        if name.startswith(("load_", "make_")):
            assert name in registered or name in NOT_SINGLE_TARGET, name
    assert set(ALIASES) == {s.source for s in DATASETS.values() if s.source != s.name}


@pytest.mark.parametrize("name", sorted(NOT_SINGLE_TARGET))
def test_a_function_that_is_not_one_single_target_set_is_refused(name: str) -> None:
    message = refused({"name": name})
    assert f'[dataset] name = "{name}" is invalid: ' in message
    assert NOT_SINGLE_TARGET[name] in message


def test_multi_output_regression_is_refused() -> None:
    message = refused({"name": "make_regression", "n_targets": 2}, objective={"metric": "rmse"})
    assert "[dataset] n_targets = 2 is invalid" in message and "multi-output" in message


def test_the_functions_own_keywords_reach_the_call() -> None:
    cfg = study({"name": "make_moons", "n_samples": 300, "noise": 0.3, "shuffle": False,
                 "seed": 5})
    X, y = load_xy(cfg.dataset)
    X_ref, y_ref = sklearn.datasets.make_moons(n_samples=300, noise=0.3, shuffle=False,
                                               random_state=5)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
    blobs = study({"name": "make_blobs", "n_samples": 200, "n_features": 3,
                   "centers": [[0, 0, 0], [5, 5, 5]], "cluster_std": 0.5, "seed": 1})
    X, y = load_xy(blobs.dataset)
    X_ref, y_ref = sklearn.datasets.make_blobs(
        n_samples=200, n_features=3, centers=[[0, 0, 0], [5, 5, 5]], cluster_std=0.5,
        random_state=1)
    np.testing.assert_array_equal(X, X_ref)
    assert blobs.to_dict()["dataset"] == {"name": "make_blobs", "n_samples": 200,
                                          "n_features": 3, "seed": 1,
                                          "centers": [[0, 0, 0], [5, 5, 5]], "cluster_std": 0.5}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_sklearn_call_reproduces_the_data_tuner_loads(name: str) -> None:
    small = {"n_samples": 120, "n_features": 6, "n_informative": 3}
    cfg = study({"name": name, **{k: v for k, v in small.items()
                                  if k in DATASETS[name].tuner_keys}},
                objective={"metric": "loss"})
    function, kwargs = sklearn_call(cfg.dataset)  # type: ignore[misc]
    X_ref, y_ref = getattr(sklearn.datasets, function)(**kwargs)
    X, y = load_xy(cfg.dataset)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
    if not DATASETS[name].generated:
        assert kwargs == {"return_X_y": True}


def test_shipped_sets_by_their_loader_name_and_keywords() -> None:
    assert study({"name": "load_iris"}).dataset == study({"name": "iris"}).dataset
    digits = study({"name": "load_digits", "n_class": 4})
    data = load_split(digits.dataset, digits.split)
    assert data.n_outputs == 4 and data.classes == (0, 1, 2, 3)


@pytest.mark.parametrize(("dataset", "words"), [
    ({"name": "make_moons", "nosie": 0.2},
     ["key 'nosie' is not a keyword of sklearn.datasets.make_moons", "Did you mean 'noise'?",
      "Allowed: n_samples, noise, seed (its random_state), shuffle."]),
    ({"name": "make_moons", "n_features": 4},
     ["key 'n_features' is not a keyword of sklearn.datasets.make_moons"]),
    ({"name": "make_circles", "random_state": 3},
     ["key 'random_state'", "Did you mean 'seed'?"]),
    ({"name": "iris", "n_class": 3},
     ["key 'n_class' is not a keyword of sklearn.datasets.load_iris", "Allowed: none."]),
    ({"name": "make_blobs", "centers": {"a": 1}},
     ["[dataset] centers = {...} is invalid: must be a number, a string"]),
    ({"name": "make_friedman2", "n_classes": 3}, ["n_classes is invalid for dataset"]),
], ids=["misspelt", "not-its-keyword", "random_state", "shipped", "table-value", "n_classes"])
def test_a_wrong_keyword_names_the_function_and_its_keywords(
    dataset: dict[str, Any], words: list[str]
) -> None:
    message = refused(dataset, objective={"metric": "loss"})
    for word in words:
        assert word in message


def test_a_value_scikit_learn_refuses_is_one_line_naming_the_function() -> None:
    cfg = study({"name": "make_circles", "factor": 2.0}, "m.toml")
    with pytest.raises(ConfigError) as info:
        load_split(cfg.dataset, cfg.split)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("[dataset] make_circles refuses these settings: ")
    assert "'factor'" in message


def test_the_memory_estimate_uses_a_generators_fixed_width() -> None:
    moons = study({"name": "make_moons", "n_samples": 1000}).dataset
    hastie = study({"name": "make_hastie_10_2", "n_samples": 1000}).dataset
    assert estimated_bytes(moons) == 32 * 1000 * 3
    assert estimated_bytes(hastie) == 32 * 1000 * 11
    with pytest.raises(ConfigError, match=r"n_samples = 1000, n_features = 2 is too large"):
        check_memory(moons, "m.toml", available=estimated_bytes(moons) - 1)


# --- the user's own data ----------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def iris_csv(path: Path, labels: list[str] | None = None) -> Path:
    X, y = sklearn.datasets.load_iris(return_X_y=True)
    names = labels or [str(v) for v in y]
    return write_csv(path, ["a", "b", "c", "d", "species"],
                     [[*(repr(float(v)) for v in row), names[i]] for i, row in enumerate(X)])


def test_a_csv_gets_the_same_split_stratification_and_scaling_as_the_registered_set(
    tmp_path: Path,
) -> None:
    iris = sklearn.datasets.load_iris()
    path = iris_csv(tmp_path / "iris.csv", [str(iris.target_names[v]) for v in iris.target])
    cfg = study({"path": "iris.csv", "target": "species"}, str(tmp_path / "s.toml"))
    assert cfg.dataset.task == "classification"  # text labels: obvious
    assert cfg.dataset.sha256 == file_sha256(path)
    mine = load_split(cfg.dataset, cfg.split)
    ref_cfg = study({"name": "iris"})
    ref = load_split(ref_cfg.dataset, ref_cfg.split)
    # labels sorted as text: setosa, versicolor, virginica = 0, 1, 2, as in load_iris
    assert mine.classes == ("setosa", "versicolor", "virginica") and ref.classes == (0, 1, 2)
    for part in ("X_train", "X_val", "X_test", "y_train", "y_val", "y_test"):
        assert torch.equal(getattr(mine, part), getattr(ref, part)), part


def test_numeric_labels_sort_as_numbers_and_are_remapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [[*rng.normal(size=2).round(4), [2, 10, 7][i % 3]] for i in range(90)]
    write_csv(tmp_path / "d.csv", ["x1", "x2", "y"], rows)
    cfg = study({"path": "d.csv", "target": "y", "task": "classification"},
                str(tmp_path / "s.toml"))
    data = load_split(cfg.dataset, cfg.split)
    assert data.classes == (2, 7, 10) and data.n_outputs == 3
    assert set(data.y_train.tolist()) == {0, 1, 2}


def test_the_task_is_inferred_when_obvious_and_asked_for_when_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 2)).round(3)
    write_csv(tmp_path / "r.csv", ["p", "q", "t"], [[*r, f"{r[0] * 2.5 + 0.01:.3f}"] for r in X])
    write_csv(tmp_path / "b.csv", ["p", "q", "t"], [[*r, i % 2] for i, r in enumerate(X)])
    write_csv(tmp_path / "k.csv", ["p", "q", "t"], [[*r, i % 4] for i, r in enumerate(X)])
    where = str(tmp_path / "s.toml")
    reg = study({"path": "r.csv", "target": "t"}, where, objective={"metric": "rmse"})
    assert reg.dataset.task == "regression"
    assert study({"path": "b.csv", "target": "t"}, where).dataset.task == "classification"
    message = refused({"path": "k.csv", "target": "t"}, where, objective={"metric": "loss"})
    assert "[dataset] task is missing" in message and 'target "t"' in message
    # an explicit metric implies the task; a stated task wins
    assert study({"path": "k.csv", "target": "t"}, where).dataset.task == "classification"
    stated = study({"path": "k.csv", "target": "t", "task": "regression"}, where,
                   objective={"metric": "loss"})
    assert stated.dataset.task == "regression"
    message = refused({"path": "r.csv", "target": "t"}, where)  # default metric accuracy
    assert '[objective] metric = "accuracy" is invalid for the regression dataset from r.csv' \
        in message


def test_an_npz_file_holds_X_and_y(tmp_path: Path) -> None:
    X, y = sklearn.datasets.make_friedman1(n_samples=200, random_state=0)
    np.savez(tmp_path / "f.npz", X=X, y=y)
    cfg = study({"path": "f.npz"}, str(tmp_path / "s.toml"), objective={"metric": "rmse"})
    assert cfg.dataset.task == "regression"
    data = load_split(cfg.dataset, cfg.split)
    assert data.n_features == 10 and data.n_outputs == 1 and data.classes == ()


FACTORY = '''
import numpy as np
from sklearn.datasets import make_moons

def moons():
    return make_moons(n_samples=120, noise=0.2, random_state=0)

def broken():
    raise RuntimeError("the database is down")

def one_array():
    return np.zeros((3, 2))

def two_targets():
    return np.zeros((30, 2)), np.zeros((30, 2))

def with_nan():
    X = np.ones((30, 2))
    X[3:5, 1] = np.nan
    return X, np.arange(30) % 2
'''


def test_a_factory_from_the_study_folder(tmp_path: Path) -> None:
    (tmp_path / "userdata_factories.py").write_text(FACTORY)
    cfg = study({"factory": "userdata_factories:moons"}, str(tmp_path / "s.toml"))
    assert cfg.dataset.task == "classification"  # implied by the metric (accuracy)
    X, y = load_xy(cfg.dataset)
    X_ref, _ = sklearn.datasets.make_moons(n_samples=120, noise=0.2, random_state=0)
    np.testing.assert_array_equal(X, X_ref)
    assert str(tmp_path) not in sys.path  # the folder is on the path only while importing
    assert cfg.to_dict()["dataset"] == {"factory": "userdata_factories:moons",
                                        "task": "classification"}


# --- every mistake: one line naming the key / file / value, exit 2, nothing written -----------

def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


NPZ = _npz(X=np.zeros((4, 2)), y=np.arange(4) % 2)
NPZ_OTHER = _npz(features=np.zeros((4, 2)))
NON_NUMERIC = "a,b,y\n1,x1,0\n2,3,1\n3,4,0\n4,5,1\n"
HOLES = "a,b,y\n1,,0\n2,3,1\n3,NA,0\n4,5,1\n"
HOLEY_TARGET = "a,b,y\n1,2,0\n2,3,\n3,4,0\n4,5,1\n"

BAD_DATA = [  # (files to write, [dataset], words in the message); loaded or validated
    ({}, {"path": "nope.csv", "target": "y"}, ['path = "nope.csv": no such file']),
    ({"d.txt": "a,y\n1,0\n"}, {"path": "d.txt", "target": "y"},
     ["tuner reads .csv, .npz, .parquet files, not '.txt'"]),
    ({"d.parquet": "x"}, {"path": "d.parquet", "target": "y"},
     ["reading .parquet needs pyarrow", "pip install pyarrow"]),
    ({"d.csv": NON_NUMERIC}, {"path": "d.csv", "target": "z"},
     ['target = "z" is not a column; the columns are a, b, y']),
    ({"d.csv": NON_NUMERIC}, {"path": "d.csv"}, ["[dataset] target is missing", "a, b, y"]),
    ({"d.csv": NON_NUMERIC}, {"path": "d.csv", "target": "y"},
     ['column "b" is not numeric (line 2: "x1")']),
    ({"d.csv": HOLES}, {"path": "d.csv", "target": "y"},
     ['column "b" has 2 missing value(s) in 4 rows']),
    ({"d.csv": HOLEY_TARGET}, {"path": "d.csv", "target": "y"},
     ['target column "y" has 1 missing value(s) in 4 rows']),
    ({"d.csv": NON_NUMERIC}, {"path": "d.csv", "target": "b", "task": "regression"},
     ['target column "b" is not numeric (line 2: "x1"), so task = "regression" cannot']),
    ({"d.csv": "a,b,y\n1,2\n"}, {"path": "d.csv", "target": "y"},
     ["line 2 has 2 fields; the header has 3"]),
    ({"d.csv": "a,a,y\n1,2,0\n"}, {"path": "d.csv", "target": "y"}, ['column twice', '"a"']),
    ({"d.csv": NON_NUMERIC}, {"path": "d.csv", "target": "y", "sha256": "0" * 64},
     ["the file changed since it was recorded", "000000000000..."]),
    ({"d.npz": b""}, {"path": "d.npz"}, ['path = "d.npz": cannot be read as a numpy .npz']),
    ({"d.npz": NPZ}, {"path": "d.npz", "target": "y"},
     ['target = "y" is invalid for a .npz file: it holds arrays X and y']),
    ({"d.npz": NPZ_OTHER}, {"path": "d.npz"}, ["has arrays features; it needs X"]),
    ({}, {"factory": "no_such_module_here:f"},
     ["factory = \"no_such_module_here:f\": no module 'no_such_module_here' in"]),
    ({"fac.py": FACTORY}, {"factory": "fac:nothing"}, ["module 'fac'", "no function 'nothing'"]),
    ({"fac.py": FACTORY}, {"factory": "fac:broken"},
     ['factory = "fac:broken" raised RuntimeError: the database is down']),
    ({"fac.py": FACTORY}, {"factory": "fac:one_array"},
     ["returned ndarray; it must return (X, y)"]),
    ({"fac.py": FACTORY}, {"factory": "fac:two_targets"}, ["multi-output data is not supported"]),
    ({"fac.py": FACTORY}, {"factory": "fac:with_nan"},
     ["feature column 1 has 2 missing value(s) (NaN) in 30 rows"]),
    ({"fac.py": "import no_such_dependency_xyz\n"}, {"factory": "fac:f"},
     ["importing 'fac' failed: ModuleNotFoundError"]),
    ({}, {"factory": "not a reference"},
     ['[dataset] factory = "not a reference" is invalid: must be "package.module:function"']),
    ({}, {"name": "iris", "path": "d.csv"},
     ["[dataset] needs exactly one of name", "it has name and path"]),
    ({}, {"target": "y"}, ["it has none of them"]),
    ({"d.csv": NON_NUMERIC}, {"path": "d.csv", "target": "y", "n_samples": 10},
     ["unknown [dataset] key 'n_samples'", "Allowed: path, target, task, sha256"]),
]
BAD_IDS = ["missing-file", "suffix", "parquet", "wrong-column", "no-target", "non-numeric",
           "missing-values", "missing-labels", "text-regression", "ragged", "duplicate-column",
           "hash", "bad-npz", "npz-target", "npz-arrays", "no-module", "no-function",
           "factory-raises", "factory-returns", "multi-output", "nan", "import-fails",
           "factory-syntax", "two-sources", "no-source", "generator-key"]
assert len(BAD_IDS) == len(BAD_DATA)


def write_files(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, text in files.items():
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize(("files", "dataset", "words"), BAD_DATA, ids=BAD_IDS)
def test_bad_user_data_is_one_line_naming_what_is_wrong(
    files: dict[str, str], dataset: dict[str, Any], words: list[str], tmp_path: Path
) -> None:
    if "d.parquet" in files:
        if __import__("importlib").util.find_spec("pyarrow") is not None:
            pytest.skip("pyarrow is installed here")
    write_files(tmp_path, files)
    sys.modules.pop("fac", None)  # each test's own fac.py
    where = str(tmp_path / "s.toml")
    metric = "rmse" if dataset.get("task") == "regression" else "accuracy"
    try:
        cfg = study(dataset, where, objective={"metric": metric})
        load_split(cfg.dataset, cfg.split)
    except ConfigError as exc:
        message = str(exc)
    else:
        raise AssertionError("accepted")
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, message


def toml_of(dataset: dict[str, Any]) -> str:
    return (
        '[study]\nname = "u"\nn_trials = 2\n[dataset]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in dataset.items())
        + "[training]\nepochs = 2\n[model]\nhidden = [8]\n[objective]\nmetric = \"accuracy\"\n"
    )


CLI_CASES = [BAD_IDS.index(i) for i in ("missing-file", "non-numeric", "missing-values",
                                          "no-function", "factory-raises")]


@pytest.mark.parametrize("case", CLI_CASES, ids=[BAD_IDS[i] for i in CLI_CASES])
def test_the_cli_exits_2_with_one_line_and_writes_nothing(
    case: int, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuner.cli import main

    files, dataset, words = BAD_DATA[case]
    write_files(tmp_path, files)
    sys.modules.pop("fac", None)
    path = tmp_path / "u.toml"
    path.write_text(toml_of(dataset))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["tune", str(path), "--no-progress", "--no-confirm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tuner: error: {path}: "), err
    assert all(w in err[0] for w in words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no tuner.db


# --- the content hash: a changed file is reported, not used ----------------------------------


def test_a_changed_data_file_is_reported_on_resume_load_data_and_retrain(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import tuner
    from tuner.cli import main

    iris = sklearn.datasets.load_iris()
    data = iris_csv(tmp_path / "iris.csv", [str(iris.target_names[v]) for v in iris.target])
    path = tmp_path / "u.toml"
    path.write_text(toml_of({"path": "iris.csv", "target": "species"}))
    assert main(["tune", str(path), "--no-progress", "--no-confirm"]) == 0
    assert main(["export", str(path)]) == 0
    export = tmp_path / "u.best.json"
    record = json.loads(export.read_text())
    assert record["dataset"]["path"] == str(data.resolve())
    assert record["dataset"]["sha256"] == file_sha256(data)
    assert record["data"]["load"] == {"file": str(data.resolve()), "sha256": file_sha256(data),
                                      "target": "species"}
    assert record["data"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert tuner.load_best(export).load_data().classes == ("setosa", "versicolor", "virginica")
    capsys.readouterr()

    lines = data.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(".", ".01", 1)  # one feature value edited
    data.write_text("".join(lines))
    assert main(["tune", str(path), "--no-progress", "--no-confirm"]) == 2  # resume refused
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f'tuner: error: {path}: [dataset] path = "iris.csv" changed since the study \'u\' in ')
    assert "its trials were trained on the old data" in err[0]
    with pytest.raises(ConfigError) as info:
        tuner.load_best(export).load_data()
    assert str(info.value).startswith(f"{export}: [dataset] path = \"{data.resolve()}\": the "
                                      "file changed since it was recorded")
    assert main(["retrain", str(export)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the file changed since it was recorded" in err[0]


# --- the shipped CSV study --------------------------------------------------------------------


def test_the_example_csv_is_what_its_script_writes(tmp_path: Path) -> None:
    sys.path.insert(0, str(STUDIES))
    try:
        import make_example_data
    finally:
        sys.path.remove(str(STUDIES))
    make_example_data.write_example(tmp_path / "example.csv")
    assert (tmp_path / "example.csv").read_bytes() == (STUDIES / "example_data.csv").read_bytes()
    assert (STUDIES / "example_data.csv").stat().st_size < 200_000


def test_the_example_csv_study_runs_from_the_cli(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from tuner.cli import main

    for name in ("example_data_mlp.toml", "example_data.csv"):
        shutil.copy(STUDIES / name, tmp_path / name)
    cfg = load_study_config(tmp_path / "example_data_mlp.toml")
    assert cfg.dataset.task == "classification" and cfg.dataset.target == "label"
    code = main(["tune", str(tmp_path / "example_data_mlp.toml"), "--n-trials", "3",
                 "--no-progress", "--no-confirm"])
    assert code == 0, capsys.readouterr().err
    assert "3 trials finished" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "example_data_mlp.toml")]) == 0
    record = json.loads((tmp_path / "example_data_mlp.best.json").read_text())
    assert record["data"]["classes"] == ["alpha", "beta", "gamma"]
    assert record["data"]["load"]["target"] == "label"


def test_a_factory_study_exports_and_retrains(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    import tuner
    from tuner.cli import main

    (tmp_path / "userdata_moons.py").write_text(FACTORY)
    path = tmp_path / "f.toml"
    path.write_text(toml_of({"factory": "userdata_moons:moons"}))
    assert main(["tune", str(path), "--no-progress", "--no-confirm"]) == 0
    assert main(["export", str(path)]) == 0
    record = json.loads((tmp_path / "u.best.json").read_text())
    assert record["dataset"] == {"factory": "userdata_moons:moons", "task": "classification"}
    assert record["data"]["load"] == {"factory": "userdata_moons:moons"}
    data = tuner.load_best(tmp_path / "u.best.json").load_data()
    assert data.classes == (0, 1) and len(data.X_train) == 84  # 70 % of 120
    assert main(["retrain", str(tmp_path / "u.best.json")]) == 0
    assert "test accuracy" in capsys.readouterr().out
