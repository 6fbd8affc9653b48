"""Models: every registered model (mlp, cnn), the user's factory models ([model] factory and
[model.kwargs]), their check before the first trial, the engine that trains them, and their
exports (load_best(...).build_model(), tuner retrain)."""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_study_dict
from rich.console import Console

import tuner
from tuner.batched import autograd_reason, batch_unsupported_reason, train_one
from tuner.config import StudyConfig, parse_study_config
from tuner.errors import ConfigError
from tuner.load import check_export, load_best
from tuner.models import (
    MODELS,
    build_model,
    check_model,
    model_layers,
    register_model_factory,
    resolve_model_factory,
    study_split,
)
from tuner.runner import _resolve_batch_trials, run_tune
from tuner.space import TrialParams

STUDIES = Path(__file__).resolve().parent.parent / "studies"
PARAMS = TrialParams(0.01, "adam", "constant", {})

# per registered model: a [model] table for a tiny study on iris (4 features: a 2x2 image)
TINY_MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"name": "mlp", "hidden": [8]},
    "cnn": {"name": "cnn", "channels": [4, 8]},
}


def test_every_registered_model_has_a_tiny_study_here() -> None:
    assert set(TINY_MODELS) == set(MODELS)


def model_cfg(tmp_path: Path, model: dict[str, Any], **overrides: Any) -> StudyConfig:
    data = tiny_study_dict(**overrides)
    data["model"] = model
    path = str(tmp_path / "m.toml")
    return replace(parse_study_config(data, path), path=path)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_registered_model_maps_rows_to_outputs_and_its_layers_rebuild_it(
    name: str, tmp_path: Path
) -> None:
    cfg = model_cfg(tmp_path, {**TINY_MODELS[name], "dropout": 0.1})
    data = study_split(cfg)  # checked on the real data: no error
    model = build_model(cfg.model, data.n_features, data.n_outputs)
    out = model(data.X_train[:5])
    assert out.shape == (5, data.n_outputs)
    # the export's layers, built with torch.nn alone, are the same module (names and shapes)
    layers = json.loads(json.dumps(model_layers(cfg.model, data.n_features, data.n_outputs)))
    plain = torch.nn.Sequential(*(getattr(torch.nn, p["class"])(*p["args"]) for p in layers))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()}
    assert any(p["class"] == "Dropout" for p in layers)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_registered_model_trains_with_the_engine_its_reason_names(
    name: str, tmp_path: Path
) -> None:
    cfg = model_cfg(tmp_path, TINY_MODELS[name], training={"epochs": 2})
    reason = batch_unsupported_reason(cfg)
    assert (reason is None) == (name == "mlp")
    if reason is not None:
        # one trial at a time (K = 1): the reason, and why not lockstep with torch.func either
        assert f'model "{name}"' in reason and autograd_reason(cfg).startswith(reason)
    data = study_split(cfg)
    result = train_one(cfg, data, PARAMS, seed=0)
    assert result.status == "complete" and result.epochs == 2
    # asking for the autograd engine: the same learning rates; for a model that trains with
    # it anyway, the very same run (the stacked engine's agreement: tests/test_batched.py)
    again = train_one(cfg, data, PARAMS, seed=0, stacked=False)
    assert again.lrs == result.lrs
    if reason is not None:
        assert again.history == result.history


def test_the_cnn_is_conv_act_pool_per_width_then_flatten_dropout_linear(tmp_path: Path) -> None:
    cfg = model_cfg(tmp_path, {"name": "cnn", "channels": [16, 32], "kernel_size": 5,
                               "activation": "gelu", "dropout": 0.25})
    layers = model_layers(cfg.model, 64, 10)
    assert [p["class"] for p in layers] == [
        "Unflatten", "Conv2d", "GELU", "MaxPool2d", "Conv2d", "GELU", "MaxPool2d",
        "Flatten", "Dropout", "Linear"]
    assert layers[0]["args"] == [1, [1, 8, 8]]
    assert layers[1]["args"] == [1, 16, 5, 1, 2]  # padding kernel_size // 2
    assert layers[-1]["args"] == [32 * 2 * 2, 10]  # 8x8 -> 4x4 -> 2x2
    # a side of 1 is not pooled again
    assert [p["class"] for p in model_layers(cfg.model, 4, 3)].count("MaxPool2d") == 1


def test_the_image_shape_is_square_or_given(tmp_path: Path) -> None:
    wine = {"dataset": {"name": "wine"}}  # 13 features: no square
    cfg = model_cfg(tmp_path, {"name": "cnn"}, **wine)
    with pytest.raises(ConfigError) as err:
        study_split(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{cfg.path}: [model] image_shape is missing")
    assert "n_features = 13" in msg and "H * W = 13" in msg
    ok = model_cfg(tmp_path, {"name": "cnn", "image_shape": [1, 13]}, **wine)
    assert study_split(ok).n_features == 13
    wrong = model_cfg(tmp_path, {"name": "cnn", "image_shape": [3, 4]}, **wine)
    with pytest.raises(ConfigError, match=r"image_shape = \[3, 4\] is invalid for the data's "
                                          r"n_features = 13: must be \[H, W\] with H \* W = 13"):
        study_split(wrong)


OTHER_KEYS = [  # (model, a key only another model reads)
    (name, key)
    for name, spec in MODELS.items()
    for other in MODELS.values()
    for key in other.keys
    if key not in spec.keys
]


@pytest.mark.parametrize(("name", "key"), OTHER_KEYS, ids=[f"{n}-{k}" for n, k in OTHER_KEYS])
def test_a_key_of_another_model_is_refused_naming_key_and_model(name: str, key: str) -> None:
    value = {"hidden": [8], "channels": [4], "kernel_size": 3, "image_shape": [2, 2]}[key]
    with pytest.raises(ConfigError) as err:
        parse_study_config(tiny_study_dict(model={"name": name, key: value}), "k.toml")
    assert str(err.value) == (f'k.toml: [model] {key} is invalid with name = "{name}": that '
                              f"model takes {', '.join(MODELS[name].keys)}.")


@pytest.mark.parametrize(("model", "words"), [
    ({"name": "mlp", "factory": "m:build"}, ["needs one of name", "it has name and factory"]),
    ({"factory": "m:build", "hidden": [8]}, ['[model] hidden is invalid with factory = "m:build"']),
    ({"hidden": [8], "kwargs": {"a": 1}}, ['[model.kwargs] is invalid with name = "mlp"']),
    ({"factory": "m:build", "kwargs": {"a": {"b": 1}}}, ["[model.kwargs] a = {...} is invalid"]),
    ({"factory": "m.build"}, ['[model] factory = "m.build" is invalid', "package.module:function"]),
], ids=["name-and-factory", "mlp-key-on-factory", "kwargs-on-mlp", "nested-kwarg", "bad-ref"])
def test_model_section_mistakes_are_one_line(model: dict[str, Any], words: list[str]) -> None:
    data = tiny_study_dict()
    data["model"] = model
    with pytest.raises(ConfigError) as err:
        parse_study_config(data, "f.toml")
    assert "\n" not in str(err.value)
    assert all(w in str(err.value) for w in words), str(err.value)


# --- factory models --------------------------------------------------------------------------

MODULE = '''
import torch

def build(n_features, n_outputs, hidden=8, scale=1.0):
    return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, n_outputs))

def raises(n_features, n_outputs):
    raise ValueError("no such layer")

def not_a_module(n_features, n_outputs):
    return [n_features, n_outputs]

def bad_forward(n_features, n_outputs):
    return torch.nn.Linear(n_features + 1, n_outputs)

def too_wide(n_features, n_outputs):
    return torch.nn.Linear(n_features, n_outputs + 2)

VALUE = 3

def batch_norm(n_features, n_outputs):
    return torch.nn.Sequential(torch.nn.Linear(n_features, 8), torch.nn.BatchNorm1d(8),
                               torch.nn.Linear(8, n_outputs))

def all_frozen(n_features, n_outputs):
    model = torch.nn.Linear(n_features, n_outputs)
    model.requires_grad_(False)
    return model

class Detached(torch.nn.Linear):
    def forward(self, x):
        return super().forward(x).detach()

def detached(n_features, n_outputs):
    return Detached(n_features, n_outputs)

class NoParameters(torch.nn.Module):
    def forward(self, x):
        return x[:, :3] * 2.0

def no_parameters(n_features, n_outputs):
    return NoParameters()

class Integers(torch.nn.Linear):
    def forward(self, x):
        return super().forward(x).long()

def integer_output(n_features, n_outputs):
    return Integers(n_features, n_outputs)
'''


def write_module(folder: Path, name: str) -> str:
    """A fresh module name per test (Python caches imported modules by name)."""
    sys.modules.pop(name, None)
    (folder / f"{name}.py").write_text(MODULE)
    return name


def factory_toml(factory: str, kwargs: dict[str, Any] | None = None, epochs: int = 1) -> str:
    text = (f'[study]\nname = "fm"\nn_trials = 2\n[dataset]\nname = "iris"\n[training]\n'
            f'epochs = {epochs}\nbatch_size = 16\n[pruner]\nname = "none"\n[model]\n'
            f'factory = "{factory}"\n')
    if kwargs:
        text += "[model.kwargs]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kwargs.items())
    return text


def test_a_factory_model_is_built_with_its_kwargs_from_the_study_folder(tmp_path: Path) -> None:
    mod = write_module(tmp_path, "models_kw")
    path = tmp_path / "f.toml"
    path.write_text(factory_toml(f"{mod}:build", {"hidden": 5, "scale": 0.5}))
    cfg = tuner.load_study_config(path)
    assert cfg.model.name is None and cfg.model.root == str(tmp_path)
    assert cfg.to_dict()["model"] == {"factory": f"{mod}:build",
                                      "kwargs": {"hidden": 5, "scale": 0.5}}
    data = study_split(cfg)
    model = build_model(cfg.model, data.n_features, data.n_outputs)
    assert model[0].out_features == 5
    assert str(tmp_path) not in sys.path and not (tmp_path / "__pycache__").exists()
    assert "factory model" in (batch_unsupported_reason(cfg) or "")


BAD_FACTORIES = [  # (function or module:function, words in the one line)
    ("models_nomod:build", ["no module 'models_nomod' in"]),
    ("nothing_here", ["has no function 'nothing_here'"]),
    ("VALUE", ["holds a int, not a function, as 'VALUE'"]),
    ("raises", ["raises(4, 3) raised ValueError: no such layer"]),
    ("not_a_module", ["not_a_module(4, 3) returned list; it must return a torch.nn.Module"]),
    ("bad_forward", ["forward pass on a batch of training data (shape (16, 4)) raised "
                     "RuntimeError"]),
    ("too_wide", ["to shape (16, 5); it must return a tensor of shape (batch, n_outputs) = "
                  "(16, 3) (3 classes)"]),
]
BAD_IDS = ["module-not-found", "attribute-missing", "not-callable", "factory-raises",
           "not-a-module",
           "forward-fails", "wrong-width"]


@pytest.mark.parametrize(("func", "words"), BAD_FACTORIES, ids=BAD_IDS)
@pytest.mark.parametrize("command", ["tune", "lr-find", "confirm"])
def test_a_bad_factory_stops_the_command_in_one_line_before_anything_is_written(
    func: str, words: list[str], command: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuner.cli import main

    mod = write_module(tmp_path, f"models_bad_{BAD_IDS[[f for f, _ in BAD_FACTORIES].index(func)]}"
                       .replace("-", "_"))
    factory = func if ":" in func else f"{mod}:{func}"
    path = tmp_path / "bad.toml"
    path.write_text(factory_toml(factory))
    if command == "confirm":  # a study whose model file later breaks: confirm checks it too
        good = tmp_path / "good.toml"
        good.write_text(factory_toml(f"{mod}:build"))
        assert main(["tune", str(good), "--no-progress", "--no-confirm", "--n-trials", "1"]) == 0
        capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = {"tune": ["tune", str(path), "--no-progress", "--no-confirm"],
            "lr-find": ["lr-find", str(path), "--steps", "5"],
            "confirm": ["confirm", str(path), "--no-progress"]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f'tuner: error: {path}: [model] factory = "{factory}"'), err
    assert all(w in err[0] for w in words), err[0]
    assert "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no study, no page


@pytest.mark.parametrize(("func", "words"), [
    ("batch_norm", ["a training step (forward and backward pass) on 1 rows of training data "
                    "(the epoch's last, smaller batch) raised ValueError: Expected more than 1 "
                    "value per channel"]),
    ("all_frozen", ["has no trainable parameter (none with requires_grad=True)"]),
    ("no_parameters", ["has no trainable parameter"]),
    ("detached", ["output does not depend on any trainable parameter"]),
    ("integer_output", ["returns a tensor of dtype torch.int64; it must return floating-point"]),
])
def test_a_model_that_cannot_train_is_refused_before_the_first_trial(
    func: str, words: list[str], tmp_path: Path
) -> None:
    """Caught by one training step, not only a forward pass: the 90 training rows of the tiny
    iris split in batches of 89 leave a last batch of 1 row, which BatchNorm refuses in
    training mode."""
    mod = write_module(tmp_path, f"models_step_{func}")
    cfg = model_cfg(tmp_path, {"factory": f"{mod}:{func}"},
                    training={"epochs": 1, "batch_size": 89})
    with pytest.raises(ConfigError) as err:
        study_split(cfg)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f'{cfg.path}: [model] factory = "{mod}:{func}"')
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_factory_study_tunes_exports_loads_back_and_retrains_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuner.cli import main

    for name in ("example_data_custom_model.toml", "example_model.py", "example_data.csv"):
        shutil.copy(STUDIES / name, tmp_path / name)
    sys.modules.pop("example_model", None)
    study = tmp_path / "example_data_custom_model.toml"
    assert main(["tune", str(study), "--n-trials", "3", "--no-progress", "--confirm-top", "1",
                 "--confirm-seeds", "2"]) == 0
    captured = capsys.readouterr()
    assert ('Trials run 4 at a time in lockstep with torch.func (a factory model '
            '("example_model:build")') in " ".join(captured.err.split())  # engine and why
    assert "3 trials finished" in captured.out
    assert main(["export", str(study)]) == 0
    export = tmp_path / "example_data_custom_model.best.json"
    record = json.loads(export.read_text())
    assert record["model"] == {"factory": "example_model:build",
                               "kwargs": {"hidden": 64, "dropout": 0.1},
                               "folder": str(tmp_path)}
    assert "layers" not in record and record["loop"]["engine"] == "functional"  # 4 in lockstep
    # the export is found from elsewhere: the module comes from the recorded study folder
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(export, moved / "best.json")
    model = load_best(moved / "best.json").build_model()
    assert type(model).__name__ == "ResidualMLP" and model.inp.out_features == 64
    assert main(["retrain", str(moved / "best.json"), "--out", str(moved / "rt")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    trained = load_best(moved / "rt").load_model()
    assert trained(torch.zeros(3, 8)).shape == (3, 3)


@pytest.mark.slow
def test_a_cnn_study_tunes_with_batch_trials_and_workers_exports_and_retrains(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuner.cli import main

    lines = ['[study]\nname = "c"\nn_trials = 2\n[dataset]\nname = "iris"\n[training]\n'
             'epochs = 1\nbatch_size = 16\n[pruner]\nname = "none"\n[model]\nname = "cnn"\n'
             'channels = [4]\n']
    path = tmp_path / "c.toml"
    path.write_text("".join(lines))
    assert main(["tune", str(path), "--no-progress", "--no-confirm", "--batch-trials", "3"]) == 0
    out = " ".join(capsys.readouterr().err.split())
    assert ('--batch-trials 3 ignored: model "cnn" has no batched form (only "mlp" has), and '
            "lockstep with torch.func pays off from 8 trials at a time; trials run one at a "
            "time.") in out
    assert main(["tune", str(path), "--no-progress", "--no-confirm", "--workers", "2",
                 "--n-trials", "4"]) == 0
    assert "2 trials finished" in capsys.readouterr().out  # 2 more, by 2 worker processes
    assert len(tuner_study(tmp_path).trials) == 4
    assert main(["export", str(path)]) == 0
    record = json.loads((tmp_path / "c.best.json").read_text())
    assert record["model"] == {"name": "cnn", "channels": [4], "kernel_size": 3,
                               "activation": "relu", "dropout": 0.0}
    assert record["layers"][0] == {"class": "Unflatten", "args": [1, [1, 2, 2]]}
    assert record["loop"]["engine"] == "torch"
    rebuilt = load_best(tmp_path / "c.best.json").build_model()
    assert isinstance(rebuilt[1], torch.nn.Conv2d)
    assert main(["retrain", str(tmp_path / "c.best.json"), "--out", str(tmp_path / "rt")]) == 0
    assert load_best(tmp_path / "rt").load_model()(torch.zeros(2, 4)).shape == (2, 3)


def tuner_study(folder: Path) -> Any:
    import optuna

    return optuna.load_study(study_name="c", storage=f"sqlite:///{folder / 'tuner.db'}")


def test_batch_trials_follow_the_engine_of_cnn_and_factory_models(tmp_path: Path) -> None:
    """No stacked form: lockstep with torch.func from FUNCTIONAL_MIN_K of the model kind (the
    CNN from 8, a factory model from 4: bench/bench_models.py), one at a time below."""
    mod = write_module(tmp_path, "models_route")
    for model, words, min_k in (({"name": "cnn"}, 'model "cnn" has no batched form', 8),
                                ({"factory": f"{mod}:build"}, "a factory model", 4)):
        cfg = model_cfg(tmp_path, model)
        console = Console(record=True, width=300)
        assert _resolve_batch_trials(cfg, min_k - 1, 1, console) == 1
        assert f"ignored: {words}" in console.export_text()
        console = Console(record=True, width=300)
        assert _resolve_batch_trials(cfg, min_k, 2, console) == min_k  # in each worker too
        assert f"Trials run {min_k} at a time in lockstep with torch.func ({words}" in \
            console.export_text()


def test_a_retrain_checks_the_model_first_and_writes_nothing_if_it_is_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuner.cli import main

    mod = write_module(tmp_path, "models_retrain")
    path = tmp_path / "r.toml"
    path.write_text(factory_toml(f"{mod}:build", {"hidden": 4}))
    assert main(["tune", str(path), "--no-progress", "--no-confirm"]) == 0
    assert main(["export", str(path)]) == 0
    export = tmp_path / "fm.best.json"
    record = json.loads(export.read_text())
    record["model"]["kwargs"]["hidden"] = -3  # torch refuses a negative width
    export.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["retrain", str(export), "--out", str(tmp_path / "rt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f'tuner: error: {export}: [model] factory = "{mod}:build": build(4, 3, hidden=-3) '
        "raised RuntimeError"), err
    assert not (tmp_path / "rt").exists()


# --- Python objects as factories (tuner.tune(..., model=callable)) ---------------------------

def small_net(n_features: int, n_outputs: int, width: int = 6) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(n_features, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, n_outputs))


def test_a_registered_callable_is_a_factory_of_this_process(tmp_path: Path) -> None:
    spec = register_model_factory(small_net)
    assert spec.startswith("<object>:small_net") and register_model_factory(small_net) == spec
    other = register_model_factory(lambda f, o: small_net(f, o))
    assert other != spec and other.startswith("<object>:lambda")

    def modèle(f: int, o: int) -> torch.nn.Module:
        return small_net(f, o)

    for fn in (modèle, small_net, lambda f, o: small_net(f, o)):  # each a valid [model] factory
        model_cfg(tmp_path, {"factory": register_model_factory(fn)})
    assert resolve_model_factory(spec) is small_net
    with pytest.raises(ConfigError, match="must be a callable"):
        register_model_factory(3)
    with pytest.raises(ConfigError, match='"<object>:never_registered" is a Python object '
                                          "registered in another process"):
        resolve_model_factory("<object>:never_registered")
    cfg = model_cfg(tmp_path, {"factory": spec, "kwargs": {"width": 3}})
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    outcome = run_tune(cfg, url, n_trials=2, progress=False)
    assert outcome.finished_after == 2
    # spawned workers cannot see it: refused before anything starts
    with pytest.raises(ConfigError, match="worker processes .* cannot see it"):
        run_tune(cfg, f"sqlite:///{tmp_path / 'w.db'}", n_trials=2, progress=False, workers=2)
    assert not (tmp_path / "w.db").exists()


def test_an_object_factory_export_needs_the_callable_again(tmp_path: Path) -> None:
    from tuner.export import export_best

    spec = register_model_factory(small_net)
    cfg = model_cfg(tmp_path, {"factory": spec})
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    outcome = run_tune(cfg, url, n_trials=2, progress=False)
    path = export_best(outcome.study, cfg, url, tmp_path / "o.json")
    assert isinstance(load_best(path).build_model(), torch.nn.Sequential)  # registered here
    record = json.loads(path.read_text())
    record["model"]["factory"] = "<object>:small_net_in_a_closed_notebook"
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError) as err:
        load_best(path)
    assert "\n" not in str(err.value) and "model=fn" in str(err.value)
    best = load_best(path, model=small_net)
    assert best.build_model()[0].out_features == 6
    mlp = tmp_path / "mlp.json"
    mlp_cfg = model_cfg(tmp_path, {"hidden": [4]})
    mlp_outcome = run_tune(mlp_cfg, f"sqlite:///{tmp_path / 'm.db'}", n_trials=1, progress=False)
    export_best(mlp_outcome.study, mlp_cfg, f"sqlite:///{tmp_path / 'm.db'}", mlp)
    with pytest.raises(ConfigError, match='model= is only for an export whose model was a '
                                          'Python object'):
        load_best(mlp, model=small_net)


# --- check_export: the new fields -------------------------------------------------------------

@pytest.fixture(scope="module")
def factory_export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tuner.export import build_export

    folder = tmp_path_factory.mktemp("fexport")
    mod = write_module(folder, "models_export")
    path = folder / "e.toml"
    path.write_text(factory_toml(f"{mod}:build", {"hidden": 4}))
    cfg = tuner.load_study_config(path)
    url = f"sqlite:///{folder / 'tuner.db'}"
    outcome = run_tune(cfg, url, n_trials=1, progress=False)
    return build_export(outcome.study, cfg, url)


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d["model"].update(folder=3), "key 'model.folder' = 3 is invalid: must be a "
     "non-empty string"),
    (lambda d: d["model"].update(factory="no colon"), '[model] factory = "no colon" is invalid'),
    (lambda d: d["model"].update(hidden=[3]), '[model] hidden is invalid with factory'),
    (lambda d: d["model"].update(kwargs=[1]), "[model] kwargs = [1] is invalid: must be a table"),
    (lambda d: d.update(layers=[{"class": "Linear", "args": [4, 3]}]),
     "key 'layers' is invalid with model.factory"),
    (lambda d: d.update(model={"name": "mlp", "hidden": [4], "activation": "relu",
                               "dropout": 0.0, "folder": "/x"}),
     "key 'model.folder' = \"/x\" is invalid: must be absent: only a factory model has one"),
], ids=["folder-type", "factory-ref", "mlp-key", "kwargs-type", "layers", "folder-on-mlp"])
def test_check_export_refuses_bad_model_fields_in_one_line(
    factory_export: dict[str, Any], change: Callable[[dict[str, Any]], None], words: str
) -> None:
    data = json.loads(json.dumps(factory_export))
    check_export(data, "e.json")  # as written: valid
    change(data)
    with pytest.raises(ConfigError) as err:
        check_export(data, "e.json")
    assert "\n" not in str(err.value) and words in str(err.value), str(err.value)


def test_a_cnn_export_checks_its_layers(tmp_path: Path) -> None:
    from tuner.export import build_export

    cfg = model_cfg(tmp_path, {"name": "cnn", "channels": [4]}, training={"epochs": 1})
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    data = build_export(run_tune(cfg, url, n_trials=1, progress=False).study, cfg, url)
    check_export(json.loads(json.dumps(data)), "c.json")
    data["layers"][1]["args"][1] = 5  # not the model [model] describes
    with pytest.raises(ConfigError, match="key 'layers' = .* is invalid: must be"):
        check_export(json.loads(json.dumps(data)), "c.json")


def test_the_dashboard_settings_of_a_factory_study_are_valid_toml(tmp_path: Path) -> None:
    from tuner.dashboard_notes import _settings_toml

    mod = write_module(tmp_path, "models_note")
    cfg = model_cfg(tmp_path, {"factory": f"{mod}:build", "kwargs": {"hidden": 3, "a": [1, 2]}})
    settings = tomllib.loads(_settings_toml(cfg))
    assert settings["model"] == {"factory": f"{mod}:build", "kwargs": {"hidden": 3, "a": [1, 2]}}


def test_check_model_passes_once_per_configuration(tmp_path: Path) -> None:
    calls = []

    def counted(n_features: int, n_outputs: int) -> torch.nn.Module:
        calls.append((n_features, n_outputs))
        return small_net(n_features, n_outputs)

    cfg = model_cfg(tmp_path, {"factory": register_model_factory(counted)})
    data = study_split(cfg)
    check_model(cfg, data)
    assert calls == [(4, 3)]
