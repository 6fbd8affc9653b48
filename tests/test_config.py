"""The study file: every invalid value is refused with one message naming file, key, value."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from tests.conftest import tiny_study_dict
from tuner.config import SECTIONS, load_study_config, parse_study_config
from tuner.errors import ConfigError

STUDIES = sorted(Path(__file__).resolve().parent.parent.joinpath("studies").glob("*.toml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_shipped_study_files_are_valid(path: Path) -> None:
    cfg = load_study_config(path)
    assert cfg.name == path.stem
    assert cfg.study_dir == path.parent


BAD = [
    # (section, key, value, words the message must contain)
    ("study", "seed", 2**32, ["[study] seed = 4294967296", "[0, 2147483647]"]),
    ("split", "seed", 2**32, ["[split] seed", "[0, 4294967295]"]),
    ("space", "lrr", [1e-3, 1e-1], ["unknown [space] key 'lrr'", "Did you mean 'lr'"]),
    ("space", "lr", [0.0, 1.0], ["[space] lr = [0.0, 1.0]", "0 < low < high"]),
    ("space", "lr", [-1e-3, 1.0], ["[space] lr", "0 < low < high"]),
    ("space", "lr", [0.1, 0.01], ["[space] lr = [0.1, 0.01]", "0 < low < high"]),
    ("space", "lr", [0.1, 0.1], ["[space] lr", "0 < low < high"]),
    ("space", "lr", "fast", ['[space] lr = "fast"', '"auto"']),
    ("space", "weight_decay", [0.0, 0.1], ["[space] weight_decay", "0 < low < high"]),
    ("space", "optimizers", ["adam", "lion"], ["[space] optimizers", "sgd, adam, adamw"]),
    ("space", "optimizers", [], ["[space] optimizers", "non-empty"]),
    ("space", "schedules", ["cosine", "cosine"], ["[space] schedules", "distinct"]),
    ("space", "schedules", ["cosin"], ["[space] schedules", "warmup_cosine"]),
    ("space", "momentum", [0.5, 1.0], ["[space] momentum", "high < 1"]),
    ("training", "epochs", 0, ["[training] epochs = 0", "integer in [1, 100000]"]),
    ("training", "epochs", 2.5, ["[training] epochs = 2.5", "integer"]),
    ("training", "epochs", "10", ['[training] epochs = "10"', "integer"]),
    ("training", "batch_size", True, ["[training] batch_size = true", "integer"]),
    ("training", "device", "gpu", ['[training] device = "gpu"', "'cuda'"]),
    ("model", "hidden", [64, 0], ["[model] hidden = [64, 0]", "integers >= 1"]),
    ("model", "hidden", [100_000], ["[model] hidden = [100000]", "<= 16384"]),
    ("model", "hidden", [8] * 65, ["[model] hidden", "at most 64"]),
    ("model", "activation", "relu6", ['[model] activation = "relu6"', "'gelu'"]),
    ("model", "dropout", 1.0, ["[model] dropout = 1.0", "[0, 1)"]),
    ("dataset", "name", "mnist_784", ['[dataset] name = "mnist_784"', "'digits'"]),
    ("dataset", "name", "california_housing", ["needs a download", "fetch_california_housing"]),
    ("dataset", "name", "fetch_covtype", ["needs a download", "fetch_covtype"]),
    ("dataset", "n_samples", 500, ["[dataset] n_samples", "only to generated datasets"]),
    ("objective", "metric", "rmse", ['metric = "rmse"', "classification", "'accuracy'"]),
    ("objective", "metric", "f1", ['[objective] metric = "f1"', "'accuracy'"]),
    ("sampler", "name", "tpee", ['[sampler] name = "tpee"', "'tpe'", 'Did you mean "tpe"?']),
    ("space", "schedules", ["onecycle"], ["[space] schedules", 'Did you mean "one_cycle"?']),
    ("pruner", "n_warmup_steps", 3, ['n_warmup_steps is invalid with name = "none"']),
    ("pruner", "name", "sha", ['[pruner] name = "sha"', "'hyperband'"]),
    ("pruner", "reduction_factor", 1, ["[pruner] reduction_factor = 1", ">= 2"]),
    ("divergence", "factor", 1.0, ["[divergence] factor = 1.0", "> 1"]),
    ("split", "train", 1.2, ["[split] train = 1.2", "(0, 1)"]),
    ("split", "test", 0.3, ["train + validation + test = 1.1 ", "sum to 1"]),
    ("study", "name", "", ['[study] name = ""', "letters, digits"]),
    ("study", "n_trials", -3, ["[study] n_trials = -3", "integer in [1, 100000]"]),
]


@pytest.mark.parametrize(("section", "key", "value", "words"), BAD,
                         ids=[f"{b[0]}.{b[1]}={b[2]!r}" for b in BAD])
def test_bad_values_are_refused_with_a_message(
    tmp_path: Path, section: str, key: str, value: object, words: list[str]
) -> None:
    data = tiny_study_dict(**{section: {key: value}})
    with pytest.raises(ConfigError) as info:
        parse_study_config(data, "studies/bad.toml")
    message = str(info.value)
    assert message.startswith("studies/bad.toml: "), message
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    assert "\n" not in message


def test_unknown_section_is_named() -> None:
    data = tiny_study_dict()
    data["trainig"] = {"epochs": 3}
    with pytest.raises(ConfigError, match=r"unknown section \[trainig\]. Did you mean 'training'"):
        parse_study_config(data, "x.toml")


def test_missing_required_section_and_key() -> None:
    data = tiny_study_dict()
    del data["dataset"]
    with pytest.raises(ConfigError, match=r"section \[dataset\] is missing"):
        parse_study_config(data, "x.toml")
    data = tiny_study_dict()
    del data["study"]["name"]
    with pytest.raises(ConfigError, match=r"\[study\] name is missing"):
        parse_study_config(data, "x.toml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such study file"):
        load_study_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[study\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_study_config(broken)


def test_every_field_declares_a_constraint_and_a_doc() -> None:
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):  # filled in by tuner, not a study-file key
                assert f.metadata["doc"]
                continue
            assert "constraint" in f.metadata, f"[{name}] {f.name} has no constraint"
            assert f.metadata["doc"], f"[{name}] {f.name} has no doc"


def test_defaults_and_derived_values(tiny_cfg) -> None:
    cfg = tiny_cfg()
    assert cfg.direction == "maximize"
    assert cfg.space.lr == (1e-3, 0.3)
    assert isinstance(cfg.model.hidden, tuple)
    hash(cfg)  # frozen and hashable all the way down (datasets are cached per config)
    regression = parse_study_config(
        tiny_study_dict(dataset={"name": "diabetes"}, objective={"metric": "rmse"}), "r.toml"
    )
    assert regression.direction == "minimize"
    auto = parse_study_config(tiny_study_dict(space={"lr": "auto"}), "a.toml")
    assert auto.space.lr == "auto"


def test_generated_dataset_checks_informative_features() -> None:
    data = tiny_study_dict(
        dataset={"name": "make_classification", "n_features": 5, "n_informative": 8}
    )
    with pytest.raises(ConfigError, match=r"n_informative = 8 .* <= n_features \(5\)"):
        parse_study_config(data, "g.toml")


# --- a mistake is reported at once: validation imports neither torch nor scikit-learn ---------

HEAVY = ("torch", "sklearn", "scipy")

_VALIDATE_ONLY = """
import sys
from pathlib import Path

import tuner.config
loaded = [m for m in {heavy!r} if m in sys.modules]
assert not loaded, f"import tuner.config loaded {{loaded}}"
for path in sorted(Path({studies!r}).glob("*.toml")):  # valid files, generated datasets too
    tuner.config.load_study_config(path)
try:  # the documented bounds of a generated dataset: refused by the memory estimate
    tuner.config.parse_study_config({{"study": {{"name": "huge"}}, "dataset": {{
        "name": "make_classification", "n_samples": 10_000_000, "n_features": 100_000}}}})
    raise AssertionError("a 29 TiB dataset was accepted")
except tuner.config.ConfigError as exc:
    assert "n_samples = 10000000, n_features = 100000" in str(exc), exc
from tuner.cli import main
code = main(["tune", {bad!r}])  # the whole path of `tuner tune bad.toml`, up to the error
loaded = [m for m in {heavy!r} if m in sys.modules]
assert code == 2 and not loaded, (code, loaded)
"""


def test_validating_a_study_file_imports_neither_torch_nor_sklearn(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "bad"\n[dataset]\nname = "iris"\n[training]\nepoch = 5\n')
    script = _VALIDATE_ONLY.format(heavy=HEAVY, studies=str(STUDIES[0].parent), bad=str(bad))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"tuner: error: {bad}: unknown [training] key 'epoch'. Did you mean 'epochs'? "
        "Allowed: epochs, batch_size, device."
    ]


# --- "Did you mean": case (and - for _) first --------------------------------------------------

CASE = [
    ("space", "optimizers", ["adam", "adamW"], 'Did you mean "adamw"?'),
    ("space", "schedules", ["One-Cycle"], 'Did you mean "one_cycle"?'),
    ("space", "schedules", ["Cosine"], 'Did you mean "cosine"?'),
    ("dataset", "name", "Iris", 'Did you mean "iris"?'),
    ("dataset", "name", "Breast_Cancer", 'Did you mean "breast_cancer"?'),
    ("sampler", "name", "TPE", 'Did you mean "tpe"?'),
    ("sampler", "name", "QMC", 'Did you mean "qmc"?'),
    ("pruner", "name", "Median", 'Did you mean "median"?'),
    ("model", "activation", "GELU", 'Did you mean "gelu"?'),
    ("objective", "metric", "RMSE", 'Did you mean "rmse"?'),
]


@pytest.mark.parametrize(("section", "key", "value", "hint"), CASE,
                         ids=[f"{c[0]}.{c[1]}={c[2]!r}" for c in CASE])
def test_did_you_mean_matches_case_insensitively_first(
    section: str, key: str, value: object, hint: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_study_config(tiny_study_dict(**{section: {key: value}}), "c.toml")
    assert str(info.value).endswith(hint), str(info.value)


def test_did_you_mean_for_keys_and_sections_ignores_case() -> None:
    with pytest.raises(ConfigError, match=r"unknown \[training\] key 'Epochs'. Did you mean "
                                          r"'epochs'\?"):
        parse_study_config(tiny_study_dict(training={"Epochs": 3}), "c.toml")
    data = tiny_study_dict()
    data["Training"] = data.pop("training")
    with pytest.raises(ConfigError, match=r"unknown section \[Training\]. Did you mean "
                                          r"'training'\?"):
        parse_study_config(data, "c.toml")


def test_no_hint_from_the_words_of_a_message() -> None:
    # "lst" is close to "list" in "a non-empty list of distinct optimizers"; it names no optimizer
    with pytest.raises(ConfigError) as info:
        parse_study_config(tiny_study_dict(space={"optimizers": ["lst"]}), "c.toml")
    assert "Did you mean" not in str(info.value)


# --- packaging: the SPDX license string, no setuptools deprecation warning ---------------------


def test_pyproject_license_is_an_spdx_string_setuptools_reads_without_a_warning() -> None:
    setuptools = pytest.importorskip("setuptools")
    from packaging.requirements import Requirement
    from packaging.version import Version
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    pyproject = STUDIES[0].parent.parent / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    assert data["project"]["license"] == "MIT"
    (req,) = [Requirement(r) for r in data["build-system"]["requires"]
              if Requirement(r).name == "setuptools"]
    # PEP 639 strings need setuptools 77; the build must not accept one that warns or fails
    assert not req.specifier.contains("76.9") and req.specifier.contains("77.0")
    if Version(setuptools.__version__) < Version("77"):
        pytest.skip(f"setuptools {setuptools.__version__} here is older than the build needs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), pyproject)
    assert [str(w.message) for w in caught if "license" in str(w.message).lower()] == []
    assert dist.metadata.license_expression == "MIT"


def test_the_registries_never_import_the_config_at_run_time() -> None:
    """config -> datasets / models / space / schedules, one way (type hints aside)."""
    import ast

    for module in ("datasets", "models", "space", "schedules"):
        source = STUDIES[0].parent.parent / "tuner" / f"{module}.py"
        tree = ast.parse(source.read_text())
        hinted = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                  and ast.unparse(node.test) == "TYPE_CHECKING" for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "tuner.config":
                assert id(node) in hinted, f"tuner/{module}.py imports tuner.config"
    config = ast.parse((STUDIES[0].parent.parent / "tuner" / "config.py").read_text())
    for fn in ast.walk(config):
        if isinstance(fn, ast.FunctionDef):
            lazy = [n.module for n in ast.walk(fn) if isinstance(n, ast.ImportFrom)]
            assert not lazy, f"tuner/config.py {fn.name}() imports {lazy} lazily"
