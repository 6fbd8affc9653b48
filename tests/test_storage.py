"""tuner.storage.set_trial_attrs: several trial attributes in one transaction on SQLite, the
same stored values as Optuna's one-attribute calls on every storage."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from tuner.storage import make_storage, set_trial_attrs

ATTRS = {
    "outcome": "complete",
    "lr_per_epoch": [0.1, 0.05],
    "train_loss_per_epoch": [1.5, "nan"],
    "divergence": {"step": 3, "loss": math.inf, "note": None},
    "seed": 7,
}


def _storages(tmp_path: Path) -> dict[str, optuna.storages.BaseStorage]:
    return {
        "sqlite": make_storage(f"sqlite:///{tmp_path / 'tuner.db'}"),
        "journal": make_storage(f"journal:///{tmp_path / 's.journal'}"),
        "memory": optuna.storages.InMemoryStorage(),
        "sqlite-memory": make_storage("sqlite:///:memory:"),  # optuna's in-memory storage
    }


@pytest.mark.parametrize("kind", ["sqlite", "journal", "memory", "sqlite-memory"])
def test_stores_what_one_attribute_at_a_time_stores(tmp_path: Path, kind: str) -> None:
    storage = _storages(tmp_path)[kind]
    study = optuna.create_study(storage=storage, study_name="s")
    together, one_by_one = study.ask(), study.ask()
    together.set_user_attr("outcome", "running")  # overwritten below
    set_trial_attrs(together, ATTRS, system_attrs={"tuner:owner": "m:1", "k": [1, 2]})
    for key, value in ATTRS.items():
        one_by_one.set_user_attr(key, value)
    for key, value in {"tuner:owner": "m:1", "k": [1, 2]}.items():
        storage.set_trial_system_attr(one_by_one._trial_id, key, value)

    assert together.user_attrs == ATTRS  # the Trial object answers too, as set_user_attr does
    reloaded = optuna.load_study(study_name="s", storage=storage).trials
    assert reloaded[0].user_attrs == reloaded[1].user_attrs
    assert reloaded[0].user_attrs["divergence"]["loss"] == math.inf
    assert reloaded[0].system_attrs == reloaded[1].system_attrs == {"tuner:owner": "m:1",
                                                                    "k": [1, 2]}


def test_one_transaction_on_sqlite(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 'tuner.db'}")
    trial = optuna.create_study(storage=storage).ask()
    commits = []
    sqlalchemy.event.listen(storage.engine, "commit", lambda _conn: commits.append(1))
    set_trial_attrs(trial, ATTRS, system_attrs={"tuner:owner": "m:1"})
    assert len(commits) == 1
    for key, value in ATTRS.items():
        trial.set_user_attr(key, value)
    assert len(commits) == 1 + len(ATTRS)  # what it saves


@pytest.mark.parametrize("kind", ["sqlite", "journal", "memory"])
def test_a_finished_trial_is_refused_and_left_as_it_was(tmp_path: Path, kind: str) -> None:
    study = optuna.create_study(storage=_storages(tmp_path)[kind])
    trial = study.ask()
    trial.set_user_attr("outcome", "complete")
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_trial_attrs(trial, {"outcome": "pruned", "extra": 1})
    assert study.trials[0].user_attrs == {"outcome": "complete"}


@pytest.mark.parametrize("scheme", ["sqlite:///", "journal:///"])
def test_a_storage_in_a_missing_folder_is_refused_and_no_folder_is_made(
    tmp_path: Path, scheme: str
) -> None:
    from tuner.errors import StorageError

    missing = tmp_path / "typo" / "dir"
    suffix = "x.journal" if scheme.startswith("journal") else "x.db"
    with pytest.raises(StorageError, match=f"folder {missing} does not exist"):
        make_storage(f"{scheme}{missing / suffix}")
    assert list(tmp_path.iterdir()) == []


def test_a_percent_encoded_sqlite_path_is_the_file_sqlite_opens(tmp_path: Path) -> None:
    """SQLAlchemy decodes %XX in the path: storage_file (artifacts, read-only checks) names
    that same file, not a second one."""
    from tuner.storage import storage_file

    url = f"sqlite:///{tmp_path}/a%20b.db"
    optuna.create_study(storage=make_storage(url), study_name="s")
    assert storage_file(url) == tmp_path / "a b.db"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("a b.db-")) == [
        "a b.db"
    ]
