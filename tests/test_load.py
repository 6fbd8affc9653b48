"""export -> load_best (and the README's plain-PyTorch rebuild) -> the same LR at every step."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import tuner
from tests._trust import fixed_params, make_cfg, trained_study
from tuner.engine import TrainResult
from tuner.errors import ConfigError
from tuner.export import export_best
from tuner.schedules import SCHEDULES

EPOCHS = 8
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, TrainResult]]:
    """One real trial per registered schedule (tiny iris study), each exported as JSON."""
    from tests._trust import run_trial
    from tuner.study import make_objective

    out: dict[str, tuple[Path, TrainResult]] = {}
    for name in SCHEDULES:
        folder = tmp_path_factory.mktemp(name)
        cfg = make_cfg(folder, training={"epochs": EPOCHS})
        study = trained_study(cfg, [])
        lr = 0.2 if name == "plateau" else 0.05  # plateau: accuracy stalls, the LR is reduced
        result = run_trial(study, make_objective(cfg), fixed_params(name, lr=lr))
        assert result.status == "complete", (name, result.divergence)
        path = export_best(study, cfg, f"sqlite:///{folder}/tuner.db")
        out[name] = (path, result)
    return out


def replay(optimizer: torch.optim.Optimizer, scheduler: Any, interval: str, epochs: int,
           steps_per_epoch: int, val_metrics: list[float]) -> list[float]:
    """A user's loop without training: the LR before every optimizer step."""
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if interval == "step":
                scheduler.step()
        if interval == "epoch":
            scheduler.step(val_metrics[epoch])
    return lrs


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_load_best_rebuilds_the_trained_lr_at_every_step(exported, schedule: str) -> None:
    path, result = exported[schedule]
    best = tuner.load_best(path)
    model = best.build_model()
    optimizer = best.build_optimizer(model.parameters())
    scheduler = best.build_scheduler(optimizer, best.steps_per_epoch)
    lrs = replay(optimizer, scheduler, best.interval, best.epochs, best.steps_per_epoch,
                 [r.val_metric for r in result.history])
    assert len(result.lrs) == EPOCHS * best.steps_per_epoch
    assert lrs == result.lrs
    assert best.scheduler_spec_for(best.steps_per_epoch) == best.scheduler_spec


def test_plateau_case_really_reduces_the_lr(exported) -> None:
    # otherwise the plateau replay above would compare two constant sequences
    _, result = exported["plateau"]
    assert len(set(result.lrs)) > 1


def test_load_best_model_and_data_fit_together(exported) -> None:
    best = tuner.load_best(exported["cosine"][0])
    data = best.load_data()
    out = best.build_model()(data.X_val)
    assert out.shape == (len(data.X_val), data.n_outputs)
    assert (best.batch_size, best.mode, best.lr, best.interval) == (16, "max", 0.05, "step")


def test_build_scheduler_resizes_for_another_batch_count(exported) -> None:
    best = tuner.load_best(exported["warmup_cosine"][0])
    spe = best.steps_per_epoch
    resized = best.scheduler_spec_for(2 * spe)
    assert resized["milestones"][0] == pytest.approx(2 * best.scheduler_spec["milestones"][0],
                                                     abs=1)
    cos = resized["schedulers"][1]["kwargs"]
    assert cos["T_max"] + resized["milestones"][0] == 2 * spe * best.epochs
    one = tuner.load_best(exported["one_cycle"][0])
    model = one.build_model()
    opt = one.build_optimizer(model.parameters())
    sched = one.build_scheduler(opt, 3 * one.steps_per_epoch)
    assert sched.total_steps == 3 * one.steps_per_epoch * one.epochs


def test_yaml_export_loads_the_same(exported, tmp_path: Path) -> None:
    import yaml

    data = json.loads(exported["step"][0].read_text())
    path = tmp_path / "x.best.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert tuner.load_best(path).data == tuner.load_best(exported["step"][0]).data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not a valid export file"),
        ('{"format": 1}', "key 'study' is missing"),
        ("[1, 2]", "expected a mapping"),
    ],
)
def test_load_best_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.best.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        tuner.load_best(path)


def test_load_best_rejects_newer_format(exported, tmp_path: Path) -> None:
    data = json.loads(exported["step"][0].read_text())
    data["format"] = 99
    path = tmp_path / "new.best.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="format = 99 is invalid"):
        tuner.load_best(path)


def test_load_best_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such export file"):
        tuner.load_best(tmp_path / "nope.json")


# --- the README's plain-PyTorch rebuild, from the JSON alone ---------------------------------

def readme_block(marker: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"<!-- {marker} -->")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"README: no python block after <!-- {marker} -->"
    return match.group(1)


def test_readme_blocks_use_only_the_standard_library_numpy_sklearn_and_torch() -> None:
    code = "".join(readme_block(m) for m in ("rebuild-plain-pytorch", "train-plain-pytorch",
                                               "resize-plain-pytorch"))
    imports = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", code, re.M))
    assert imports == {"copy", "json", "math", "numpy", "sklearn", "torch"}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_readme_plain_pytorch_rebuild_matches_the_trained_lrs(exported, schedule: str) -> None:
    path, result = exported[schedule]
    code = readme_block("rebuild-plain-pytorch")
    code = code.replace('"studies/digits_mlp.best.json"', repr(str(path)))
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    best = json.loads(path.read_text())
    lrs = replay(namespace["optimizer"], namespace["scheduler"],
                 "step" if namespace["per_step"] else "epoch", best["epochs"],
                 best["steps_per_epoch"], [r.val_metric for r in result.history])
    assert lrs == result.lrs


# --- the README's recipe for another number of steps ------------------------------------------

@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_readme_resize_recipe_equals_build_scheduler(exported, schedule: str) -> None:
    """``resize`` (README) gives build_scheduler's spec, and the same learning rate at every
    step, for several run lengths (ExponentialLR's gamma and the rounded step counts
    included)."""
    path, result = exported[schedule]
    ns: dict[str, Any] = {}
    exec(compile(readme_block("resize-plain-pytorch"), "README.md", "exec"), ns)  # noqa: S102
    best = tuner.load_best(path)
    export = json.loads(path.read_text())
    spe = best.steps_per_epoch
    plateau_metrics = [r.val_metric for r in result.history] * 3
    for steps, epochs in [(1, 1), (2, 1), (1, 3), (spe, EPOCHS), (spe + 1, EPOCHS),
                          (2 * spe + 3, EPOCHS), (7, 5), (13, 2)]:
        spec = ns["resize"](export, steps, epochs)
        assert spec == best.scheduler_spec_for(steps, epochs), (steps, epochs)
        lrs = []
        for plain in (False, True):
            optimizer = best.build_optimizer(best.build_model().parameters())
            scheduler = (_plain_scheduler(optimizer, spec) if plain
                         else best.build_scheduler(optimizer, steps, epochs))
            lrs.append(replay(optimizer, scheduler, best.interval, epochs, steps,
                              plateau_metrics))
        assert lrs[0] == lrs[1], (steps, epochs)


def _plain_scheduler(optimizer: torch.optim.Optimizer, spec: dict[str, Any]) -> Any:
    """The README's make_scheduler, bound to ``optimizer``."""
    ns: dict[str, Any] = {"optimizer": optimizer, "torch": torch}
    code = readme_block("rebuild-plain-pytorch")
    start = code.index("def make_scheduler")
    exec(code[start:code.index("scheduler = make_scheduler")], ns)  # noqa: S102
    return ns["make_scheduler"](spec)


def test_readme_resize_recipe_matters_for_exponential(exported) -> None:
    # what the former recipe (scale the step counts) missed: gamma depends on the run length
    best = tuner.load_best(exported["exponential"][0])
    spe = best.steps_per_epoch
    assert (best.scheduler_spec_for(2 * spe)["kwargs"]["gamma"]
            != best.scheduler_spec["kwargs"]["gamma"])


# --- a damaged export: one line naming the file and the key, exit 2, never a traceback -------

def _set(path: str, value: Any) -> Any:
    """A mutation of the parsed export: set ``path`` ("epochs", "model.hidden", or a key of
    params such as "params.schedule.step_fraction") to ``value``."""

    def apply(data: dict[str, Any]) -> dict[str, Any]:
        if path.startswith("params."):
            data["params"][path.removeprefix("params.")] = value
        elif "." in path:
            section, key = path.split(".")
            data[section][key] = value
        else:
            data[path] = value
        return data

    return apply


def _drop(key: str) -> Any:
    def apply(data: dict[str, Any]) -> dict[str, Any]:
        del data[key]
        return data

    return apply


# name -> (mutation of the parsed export, or raw bytes of the file; the key the message names)
MUTATIONS: dict[str, tuple[Any, str | None]] = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", None),
    "latin-1": ('{"format": 1, "study": "café"}'.encode("latin-1"), None),
    "missing trial": (_drop("trial"), "trial"),
    "empty params": (_set("params", {}), "params.lr"),
    "negative lr": (_set("params.lr", -1), "params.lr"),
    "text lr": (_set("params.lr", "x"), "params.lr"),
    "dataset is a number": (_set("dataset", 5), "dataset"),
    "epochs as words": (_set("epochs", "many"), "epochs"),
    "huge hidden widths": (_set("model.hidden", [100_000, 100_000]), "hidden"),
    "zero steps per epoch": (_set("steps_per_epoch", 0), "steps_per_epoch"),
    "unknown optimizer": (_set("params.optimizer", "lbfgs"), "params.optimizer"),
    "schedule parameter out of range": (_set("params.schedule.step_fraction", 7.0),
                                        "params.schedule.step_fraction"),
    "optimizer not from params": (_set("optimizer", {"class": "SGD", "kwargs": {"lr": 9.0}}),
                                  "optimizer"),
    "epochs not the training's": (_set("epochs", 3), "epochs"),
    "confirmation is a number": (_set("confirmation", 5), "confirmation"),
    "confirmed mean is text": (_set("confirmation", {"test_mean": "nan", "test_std": None}),
                               "confirmation"),
    "unknown key": (_set("epoch", 3), "epoch"),
    "layers not the model's": (_set("layers", [{"class": "Linear", "args": [4, 3]}]), "layers"),
    "scaler too short": (_set("data.x_scale", [1.0]), "data.x_scale"),
    "zero scale": (_set("data.x_scale", [1.0, 0.0, 1.0, 1.0]), "data.x_scale"),
    "another dataset call": (_set("data.load", {"function": "load_wine", "kwargs": {}}),
                             "data.load"),
    "another split": (_set("data.split", {"test_size": [0.3, 0.5], "random_state": 0,
                                          "stratify": True}), "data.split"),
    "unknown data key": (_set("data.mean", [0.0]), "data.mean"),
    "not fused": (_set("loop.optimizer_kwargs", {}), "loop.optimizer_kwargs"),
    "unknown engine": (_set("loop.engine", "jax"), "loop.engine"),
    "top level list": (b"[1, 2, 3]", None),
    # from the fresh-user test: what json/yaml or torch raised past the checks
    "seed beyond numpy's": (_set("seed", 2**70), "seed"),
    "a 5,000-digit number": (b'{"format": 2, "seed": ' + b"7" * 5000 + b"}", None),
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, None),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_damaged_export_is_refused_in_one_line(
    exported, name: str, suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import yaml

    from tuner.cli import main

    mutation, key = MUTATIONS[name]
    path = tmp_path / f"damaged.best{suffix}"
    if isinstance(mutation, bytes):
        path.write_bytes(mutation)
    else:
        data = mutation(json.loads(exported["step"][0].read_text()))
        path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        tuner.load_best(path)
    assert str(path) in str(info.value)
    capsys.readouterr()
    assert main(["retrain", str(path)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and captured.out == ""
    assert err.count("\n") == 1 and err.startswith(f"tuner: error: {path}: "), err
    if key is not None:
        assert key in err, err


@pytest.mark.parametrize(("section", "values", "key"), [
    # valid keys that the generator refuses together (sklearn's own check)
    ("dataset", {"name": "make_classification", "n_samples": 60, "n_features": 4,
                 "n_informative": 1, "n_classes": 10}, "[dataset]"),
    # a device this machine does not have
    ("training", {"device": "cuda:7"}, "device"),
])
def test_retrain_refuses_what_the_data_or_machine_cannot_do_in_one_line(
    exported, section: str, values: dict[str, Any], key: str, tmp_path: Path,
    capsys: pytest.CaptureFixture
) -> None:
    from tuner.cli import main

    data = json.loads(exported["step"][0].read_text())
    data[section] = values if section == "dataset" else {**data[section], **values}
    if section == "dataset":
        data["objective"] = {"metric": "accuracy"}
        del data["data"], data["layers"]  # written from the former dataset
    path = tmp_path / "x.best.json"
    path.write_text(json.dumps(data))
    tuner.load_best(path)  # every key is valid on its own
    capsys.readouterr()
    assert main(["retrain", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tuner: error: {path}: "), err
    assert key in err and "Traceback" not in err
