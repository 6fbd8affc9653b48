"""The dashboard finds the storage exactly as ``tune`` does, and never creates an empty one."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tuner.config import load_study_config
from tuner.dashboard import dashboard_storage_url
from tuner.errors import StorageError
from tuner.storage import make_storage, resolve_storage_url

STUDY = '[study]\nname = "s"\n[dataset]\nname = "iris"\n'


@pytest.fixture(autouse=True)
def _no_env_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)


def _sqlite_with_study(path: Path, name: str = "s") -> Path:
    optuna.create_study(storage=make_storage(f"sqlite:///{path}"), study_name=name)
    return path


def _journal_with_study(path: Path, name: str = "s") -> Path:
    optuna.create_study(storage=make_storage(f"journal:///{path}"), study_name=name)
    return path


def _names(url: str) -> list[str]:
    return [s.study_name for s in optuna.study.get_all_study_summaries(make_storage(url))]


def test_bare_path_is_an_absolute_sqlite_url(tmp_path, monkeypatch) -> None:
    db = _sqlite_with_study(tmp_path / "runs.db")
    monkeypatch.chdir(tmp_path)
    url = dashboard_storage_url(None, "runs.db")
    assert url == f"sqlite:///{db}"
    assert url == resolve_storage_url(None, "runs.db")
    assert _names(url) == ["s"]


def test_relative_path_from_another_directory(tmp_path, monkeypatch) -> None:
    db = _sqlite_with_study(tmp_path / "runs.db")
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert dashboard_storage_url(None, "../../runs.db") == f"sqlite:///{db}"
    assert dashboard_storage_url(None, "sqlite:///../../runs.db") == f"sqlite:///{db}"


def test_study_file_storage_is_found_from_any_directory(tmp_path, monkeypatch) -> None:
    """Default ``tuner.db`` and a relative ``[study] storage`` are next to the study file."""
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "s.toml").write_text(STUDY)
    (folder / "own.toml").write_text(STUDY.replace('"s"\n', '"s"\nstorage = "own.db"\n', 1))
    default = _sqlite_with_study(folder / "tuner.db")
    own = _sqlite_with_study(folder / "own.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for study_file, db in (("../studies/s.toml", default), ("../studies/own.toml", own)):
        url = dashboard_storage_url(study_file, None)
        assert url == f"sqlite:///{db}"
        assert url == resolve_storage_url(load_study_config(study_file), None)  # as tune does
    # --storage wins over the study file, then $OPTUNA_STORAGE, as for tune
    other = _sqlite_with_study(tmp_path / "other.db")
    assert dashboard_storage_url("../studies/own.toml", str(other)) == f"sqlite:///{other}"
    monkeypatch.setenv("OPTUNA_STORAGE", f"sqlite:///{other}")
    assert dashboard_storage_url("../studies/own.toml", None) == f"sqlite:///{other}"


def test_journal_file(tmp_path, monkeypatch) -> None:
    journal = _journal_with_study(tmp_path / "runs.journal")
    monkeypatch.chdir(tmp_path)
    url = dashboard_storage_url(None, "runs.journal")
    assert url == f"journal:///{journal}"
    assert _names(url) == ["s"]


@pytest.mark.parametrize("name", ["missing.db", "missing.journal"])
def test_missing_file_is_an_error_and_is_not_created(tmp_path, monkeypatch, name) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match=r"missing\.\w+ does not exist; run `tuner tune"):
        dashboard_storage_url(None, name)
    assert list(tmp_path.iterdir()) == []


def test_missing_default_storage_of_a_study_file(tmp_path) -> None:
    (tmp_path / "s.toml").write_text(STUDY)
    with pytest.raises(StorageError, match="tuner.db does not exist"):
        dashboard_storage_url(str(tmp_path / "s.toml"), None)
    assert not (tmp_path / "tuner.db").exists()


@pytest.mark.parametrize("name", ["empty.db", "empty.journal"])
def test_empty_file_is_an_error_and_stays_empty(tmp_path, name) -> None:
    empty = tmp_path / name
    empty.touch()
    with pytest.raises(StorageError, match="is empty: it holds no study"):
        dashboard_storage_url(None, str(empty))
    assert empty.stat().st_size == 0


def test_folder_and_in_memory_storages_are_errors(tmp_path) -> None:
    with pytest.raises(StorageError, match="is a folder"):
        dashboard_storage_url(None, str(tmp_path))
    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(StorageError, match="in memory"):
            dashboard_storage_url(None, url)


def test_sqlite_url_with_query_string(tmp_path) -> None:
    db = _sqlite_with_study(tmp_path / "runs.db")
    url = f"sqlite:///{db}?timeout=5"
    assert dashboard_storage_url(None, url) == url


@pytest.mark.postgres
def test_postgresql_url_is_served_as_given(postgres_url) -> None:
    name = "tuner-dashboard-storage-test"
    storage = make_storage(postgres_url)
    optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
    try:
        assert dashboard_storage_url(None, postgres_url) == postgres_url
        assert name in _names(postgres_url)
    finally:
        optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cr3t@127.0.0.1:1/db",
        "postgresql://:s3cr3t@127.0.0.1:1/db",
        "postgresql://u@127.0.0.1:1/db?password=s3cr3t",
        "postgresql:///db?host=127.0.0.1&port=1&password=s3cr3t",
        "postgresql://u:s3c@r3t@127.0.0.1:1/db",
    ],
)
def test_unreachable_storage_never_shows_its_password(url: str, monkeypatch) -> None:
    from tuner.errors import StorageError
    from tuner.storage import make_storage, redact_url

    monkeypatch.setenv("TUNER_STORAGE_RETRY_S", "0.5")  # connection refused: retried first
    assert "s3c" not in redact_url(url)
    with pytest.raises(StorageError) as info:
        make_storage(url)
    assert "s3c" not in str(info.value) and "r3t" not in str(info.value)
