"""Reuse without tuner: the README's plain-PyTorch blocks rebuild the split, model, optimizer
and schedule from the export alone and reproduce the trial; ``tuner retrain --out DIR`` saves
the trained model, which ``tuner.load_best(DIR).load_model()`` (or plain PyTorch) loads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import tuner
from tests._trust import fixed_params, make_cfg, trained_study
from tuner.datasets import load_split
from tuner.errors import ConfigError
from tuner.export import export_best
from tuner.models import build_model

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = '"studies/digits_mlp.best.json"'

# name -> (study overrides, params): every metric, every optimizer class, both engines (with
# dropout tuner trains with autograd and torch.optim, "torch"; without, its "stacked" engine),
# a generated and a regression dataset, a per-epoch (plateau) and per-step schedules
CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "iris accuracy, sgd, plateau": (
        {"training": {"epochs": 6}}, fixed_params("plateau", lr=0.2)),
    "iris loss, sgd, dropout, step": (
        {"training": {"epochs": 8}, "objective": {"metric": "loss"}, "model": {"dropout": 0.1}},
        fixed_params("step", lr=0.05)),
    "iris loss, sgd, plateau (stacked)": (
        {"training": {"epochs": 4}, "objective": {"metric": "loss"}},
        fixed_params("plateau", lr=0.05)),
    "iris loss, rmsprop, dropout, warmup_cosine": (
        {"training": {"epochs": 4}, "objective": {"metric": "loss"},
         "model": {"hidden": [16, 8], "dropout": 0.2, "activation": "gelu"}},
        fixed_params("warmup_cosine", lr=0.005, optimizer="rmsprop")),
    "diabetes rmse, adam, dropout, one_cycle": (
        {"dataset": {"name": "diabetes"}, "objective": {"metric": "rmse"},
         "training": {"epochs": 3, "batch_size": 32}, "model": {"dropout": 0.1}},
        fixed_params("one_cycle", lr=0.01, optimizer="adam")),
    "make_classification loss, adamw, exponential": (
        {"dataset": {"name": "make_classification", "n_samples": 200, "n_features": 6,
                     "n_informative": 3, "n_classes": 3},
         "objective": {"metric": "loss"}, "training": {"epochs": 8},
         "model": {"dropout": 0.1}},
        fixed_params("exponential", lr=0.01, optimizer="adamw")),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real trial per case, exported as JSON."""
    out: dict[str, Path] = {}
    for i, (name, (overrides, params)) in enumerate(CASES.items()):
        folder = tmp_path_factory.mktemp(f"case{i}")
        cfg = make_cfg(folder, **overrides)
        study = trained_study(cfg, [params])
        out[name] = export_best(study, cfg, "sqlite:///x.db")
    return out


def readme_block(marker: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"<!-- {marker} -->")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"README: no python block after <!-- {marker} -->"
    return match.group(1)


def run_block(path: Path, *markers: str) -> dict[str, Any]:
    """Execute README blocks (in this process) on the export ``path``; their namespace."""
    code = "".join(readme_block(m) for m in markers)
    assert PLACEHOLDER in code
    namespace: dict[str, Any] = {}
    exec(compile(code.replace(PLACEHOLDER, repr(str(path))), "README.md", "exec"),  # noqa: S102
         namespace)
    return namespace


# a process in which `import tuner` fails: a package named tuner that raises ImportError comes
# first on sys.path (the script's own folder), and -E -s drop PYTHONPATH and the user site
SHADOW = 'raise ImportError("tuner is not installed in this process")\n'
HARNESS = '''
import json, sys
try:
    import tuner
except ImportError as exc:
    print(json.dumps({{"import_tuner": str(exc)}}))
else:
    sys.exit("tuner was importable")
code = {code!r}
for path in {paths!r}:
    namespace = {{}}
    exec(compile(code.replace({placeholder!r}, repr(path)), "README.md", "exec"), namespace)
    print(json.dumps({{"path": path, "metric": namespace["metric"]}}))
'''


def test_readme_blocks_reproduce_the_trial_in_a_process_without_tuner(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "tuner").mkdir()
    (tmp_path / "tuner" / "__init__.py").write_text(SHADOW)
    code = readme_block("rebuild-plain-pytorch") + readme_block("train-plain-pytorch")
    paths = [str(p) for p in exports.values()]
    script = tmp_path / "run.py"
    script.write_text(HARNESS.format(code=code, paths=paths, placeholder=PLACEHOLDER))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-E", "-s", str(script)], capture_output=True,
                          text=True, env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines[0] == {"import_tuner": "tuner is not installed in this process"}
    got = {line["path"]: line["metric"] for line in lines[1:]}
    assert set(got) == set(paths)
    engines = set()
    for name, path in exports.items():
        export = json.loads(path.read_text())
        value, engine = export["value"], export["loop"]["engine"]
        engines.add(engine)
        if engine == "torch":  # the same operations in the same order: exactly the trial's
            assert got[str(path)] == value, (name, got[str(path)], value)
        else:  # tuner's stacked engine: the same steps, summed in another order
            assert got[str(path)] == pytest.approx(value, rel=1e-5), name
    assert engines == {"torch", "stacked"}


@pytest.mark.parametrize("name", list(CASES))
def test_readme_block_rebuilds_tuners_split_and_initial_weights(
    exports: dict[str, Path], name: str
) -> None:
    path = exports[name]
    ns = run_block(path, "rebuild-plain-pytorch")
    best = tuner.load_best(path)
    cfg = best.study_config()
    data = load_split(cfg.dataset, cfg.split)
    for part, mine in [("X_train", "X_tr"), ("X_val", "X_va"), ("X_test", "X_te"),
                       ("y_train", "y_tr"), ("y_val", "y_va"), ("y_test", "y_te")]:
        theirs = getattr(data, part)
        assert ns[mine].dtype == theirs.dtype and torch.equal(ns[mine], theirs), part
    torch.manual_seed(best.data["seed"])
    model = build_model(cfg.model, data.n_features, data.n_outputs)
    assert str(ns["model"]) == str(model)
    mine_state, theirs_state = ns["model"].state_dict(), model.state_dict()
    assert list(mine_state) == list(theirs_state)
    assert all(torch.equal(mine_state[k], theirs_state[k]) for k in theirs_state)


@pytest.mark.parametrize("name", [n for n in CASES if "dropout" in n])
def test_readme_training_gives_the_engines_weights_bit_for_bit(
    exports: dict[str, Path], name: str
) -> None:
    """Stronger than the metric: every weight after training equals tuner.engine.train's (the
    fused optimizer included: without it Adam's weights differ in the last bits)."""
    from tuner.engine import train
    from tuner.space import TrialParams

    path = exports[name]
    best = tuner.load_best(path)
    assert best.data["loop"]["engine"] == "torch"
    ns = run_block(path, "rebuild-plain-pytorch", "train-plain-pytorch")
    cfg = best.study_config()
    result = train(cfg, load_split(cfg.dataset, cfg.split),
                   TrialParams.from_optuna_params(best.params), best.data["seed"],
                   keep_model=True)
    assert ns["metric"] == result.val_metric == best.data["value"]
    mine, theirs = ns["model"].state_dict(), result.model.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_export_format_1_still_loads(exports: dict[str, Path], tmp_path: Path) -> None:
    data = json.loads(exports["iris accuracy, sgd, plateau"].read_text())
    for key in ("data", "layers", "loop"):
        del data[key]
    data["format"] = 1
    path = tmp_path / "old.best.json"
    path.write_text(json.dumps(data))
    best = tuner.load_best(path)
    assert best.build_model()(best.load_data().X_val).shape == (30, 3)


# --- tuner retrain --out DIR -------------------------------------------------------------------

def test_retrain_out_saves_a_model_that_loads_back(
    exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuner.cli import main
    from tuner.engine import evaluate
    from tuner.retrain import merge_train_validation

    source = exports["iris loss, rmsprop, dropout, warmup_cosine"]
    out = tmp_path / "deploy"
    assert main(["retrain", str(source), "--out", str(out)]) == 0, capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        ".tuner-output", "export.json", "metrics.json", "model.pt"]
    assert json.loads((out / "export.json").read_text()) == json.loads(source.read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    best = tuner.load_best(out)
    model = best.load_model()
    assert not model.training
    data = merge_train_validation(best.load_data())
    # the saved weights are the retrained model's: they give the recorded test metric
    loss, value = evaluate(model, data.X_test, data.y_test, data, "loss")
    assert value == metrics["test_metric"] and loss == metrics["test_loss"]
    assert metrics["trial"] == best.data["trial"] and metrics["seed"] == best.data["seed"]
    assert len(metrics["history"]) == best.epochs
    # plain PyTorch loads the same weights into the README's model
    ns = run_block(out / "export.json", "rebuild-plain-pytorch")
    ns["model"].load_state_dict(torch.load(out / "model.pt", weights_only=True))
    ns["model"].eval()
    with torch.no_grad():
        assert torch.equal(ns["model"](ns["X_te"]), model(data.X_test))
    # a second run replaces the previous retrain folder (tuner's own)
    assert main(["retrain", str(source), "--out", str(out), "--seed", "5"]) == 0
    assert json.loads((out / "metrics.json").read_text())["seed"] == 5


def test_retrain_out_refuses_a_folder_tuner_did_not_write_before_training(
    exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuner.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["retrain", str(exports["iris accuracy, sgd, plateau"]), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the retrain started
    assert captured.err.count("\n") == 1 and "notes.txt" in captured.err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_diverged_retrain_writes_nothing(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture
) -> None:
    import tuner.retrain
    from tuner.cli import main
    from tuner.engine import TrainResult

    monkeypatch.setattr(tuner.retrain, "train_one",
                        lambda *a, **k: TrainResult(status="diverged", epochs=1, steps=3))
    out = tmp_path / "deploy"
    assert main(["retrain", str(exports["iris accuracy, sgd, plateau"]), "--out", str(out)]) == 1
    printed = capsys.readouterr().out.replace("\n", "")  # the console wraps long lines
    assert f"nothing was written to {out}" in printed
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_load_model_needs_a_retrain_folder(exports: dict[str, Path], tmp_path: Path) -> None:
    path = exports["iris accuracy, sgd, plateau"]
    with pytest.raises(ConfigError, match="holds no trained weights.*--out DIR"):
        tuner.load_best(path).load_model()
    with pytest.raises(ConfigError, match="not a retrain folder"):
        tuner.load_best(tmp_path)
    # weights of another model: one line naming the file
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "export.json").write_text(path.read_text())
    torch.save(torch.nn.Linear(2, 2).state_dict(), folder / "model.pt")
    with pytest.raises(ConfigError, match="model.pt: not the weights of this export's model"):
        tuner.load_best(folder).load_model()
