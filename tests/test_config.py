"""The study file: every invalid value is refused with one message naming file, key, value."""

from __future__ import annotations

import dataclasses
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
