"""Storage failures end as one line and keep what was committed (issue 11, items 6, 7 and 9).

- disk full (SQLite on a tiny tmpfs; SQLite's ``max_page_count`` where mounting is not
  permitted): one ``StorageUnavailable`` line naming the file, committed trials intact, and
  running trials can still be closed;
- a study folder on a read-only mount (or, for a non-root user, without write permission):
  export, report and the dashboard read it; a write is one line saying why;
- PostgreSQL backends terminated mid-transaction and a server outage (a TCP proxy in front of
  the test server that cuts every connection and refuses new ones): operations are retried
  with back-off and succeed once it is back, or end as one line after the retry budget; a
  write whose commit went through before the connection dropped is not repeated;
- ``sqlite:///:memory:`` works for one process and is refused with ``--workers``; mistyped
  URLs are refused with a did-you-mean.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from tuner import storage_guard
from tuner.cli import main
from tuner.errors import ConfigError, StorageError, StorageUnavailable
from tuner.storage import (
    check_shareable,
    make_storage,
    resolve_storage_url,
    retry_budget,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.delenv(storage_guard.RETRY_ENV, raising=False)


def _mount(where: Path, *options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    args = ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)]
    try:
        return subprocess.run(args, capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def _umount(where: Path) -> None:
    # lazy: storages of the test may still hold the file open (they close when collected)
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


# --- disk full ------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """(folder, on_tmpfs): a 320 KiB tmpfs where this process may mount one, else a plain
    folder (the test then caps the database with SQLite's max_page_count: a real SQLITE_FULL
    from the same code path, without a full file system)."""
    folder = tmp_path / "small"
    mounted = os.geteuid() == 0 and _mount(folder, "size=320k")
    folder.mkdir(exist_ok=True)
    try:
        yield folder, mounted
    finally:
        if mounted:
            _umount(folder)


def test_disk_full_is_one_line_and_keeps_what_was_committed(small_disk) -> None:
    folder, on_tmpfs = small_disk
    db = folder / "tuner.db"
    storage = make_storage(f"sqlite:///{db}")
    if not on_tmpfs:  # no mount permitted here: cap the file at its size plus 60 pages
        pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
        sqlalchemy.event.listen(storage.engine, "connect", lambda conn, _r: conn.execute(
            f"PRAGMA max_page_count={pages + 60}"))
        storage.engine.dispose()
    study = optuna.create_study(storage=storage, study_name="s")
    written: list[int] = []
    with pytest.raises(StorageUnavailable) as info:
        for _ in range(1000):  # ~20 KB per trial: full long before
            trial = study.ask()
            trial.set_user_attr("blob", f"{trial.number}:" + "x" * 20_000)
            written.append(trial.number)
    message = str(info.value)
    assert message.startswith("disk full") and str(db) in message and "\n" not in message
    assert len(written) >= 1

    # what the runner does next: close the running trials, in one quick attempt each
    with retry_budget(0):
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)

    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    reloaded = optuna.load_study(study_name="s", storage=make_storage(f"sqlite:///{db}"))
    by_number = {t.number: t for t in reloaded.trials}
    for number in written:
        assert by_number[number].user_attrs["blob"].startswith(f"{number}:")
    assert all(t.state == TrialState.FAIL for t in reloaded.trials)


def test_tune_on_a_full_disk_is_one_line_and_the_next_run_closes_what_it_left(
    tmp_path: Path,
) -> None:
    """The whole command: one line, exit 1, the database intact; the trials the full disk
    left RUNNING (it refused even their FAIL) are closed and re-queued by the next run."""
    import sys

    disk = tmp_path / "disk"
    if not (os.geteuid() == 0 and _mount(disk, "size=400k")):
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        study_file = disk / "iris.toml"
        study_file.write_text(
            '[study]\nname = "full"\nn_trials = 400\nseed = 0\n[dataset]\nname = "iris"\n'
            '[training]\nepochs = 2\nbatch_size = 32\n[model]\nhidden = [8]\n'
            '[space]\nlr = [0.001, 0.1]\n'
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        proc = subprocess.run(
            [sys.executable, "-m", "tuner", "tune", str(study_file), "--no-confirm",
             "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("tuner: error: disk full") and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and str(disk / "tuner.db") in proc.stderr
        for part in ("tuner.db", "tuner.db-wal"):  # room again: the study moves to another
            if (disk / part).exists():  # disk, with its write-ahead log (committed pages)
                shutil.copy(disk / part, tmp_path / part)
    finally:
        _umount(disk)
    check = sqlite3.connect(tmp_path / "tuner.db")
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    study = optuna.load_study(study_name="full", storage=url)
    left = [t.number for t in study.trials if t.state == TrialState.RUNNING]
    from tuner.workers import reap_stale_trials

    assert sorted(reap_stale_trials(study)) == left  # their process is gone: closed now
    after = optuna.load_study(study_name="full", storage=url).trials
    assert not [t for t in after if t.state == TrialState.RUNNING]
    assert all("died" in t.user_attrs["failed_reason"] for t in after if t.number in left)


def test_a_busy_sqlite_file_is_retried_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLITE_BUSY ("database is locked") is another process's write: the operation runs again
    within the retry budget; only a file that stays locked past it is one line."""
    import optuna.storages._rdb.storage as rdb

    # optuna's own retries of a new trial (5, with random 0-2 s sleeps) go at once: what waits
    # out the lock is tuner's back-off
    monkeypatch.setattr(rdb, "time", types.SimpleNamespace(sleep=lambda _s: None))
    db = tmp_path / "busy.db"
    storage = make_storage(f"sqlite:///{db}")
    study = optuna.create_study(storage=storage, study_name="busy")
    blocker = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock, as another writer would
    release = threading.Timer(1.0, lambda: blocker.execute("COMMIT"))
    release.start()
    sqlalchemy.event.listen(storage.engine, "connect",  # no busy wait: SQLITE_BUSY at once
                            lambda conn, _r: conn.execute("PRAGMA busy_timeout=0"))
    storage.engine.dispose()
    with storage_guard.retry_budget(30):
        trial = study.ask()  # locked for a second, then goes through
    release.join()
    assert trial.number == 0 and len(study.trials) == 1
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with storage_guard.retry_budget(0.5), pytest.raises(StorageUnavailable) as info:
            study.ask()
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert "locked" in str(info.value) and "\n" not in str(info.value)


def test_a_database_error_from_optuna_itself_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """main(): a raw (unwrapped) SQLite error escaping from optuna's own storage -> exit 1."""
    import tuner.cli as cli

    db = tmp_path / "plain.db"

    def fill(_args) -> int:
        plain = optuna.storages.RDBStorage(f"sqlite:///{db}")  # not tuner's guarded one
        study = optuna.create_study(storage=plain)
        pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
        sqlalchemy.event.listen(plain.engine, "connect", lambda conn, _r: conn.execute(
            f"PRAGMA max_page_count={pages + 5}"))
        plain.engine.dispose()
        while True:
            study.ask().set_user_attr("blob", "x" * 20_000)

    monkeypatch.setitem(cli.COMMANDS, "cleanup", (fill, "fill"))
    assert main(["cleanup", "any.toml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk full" in err and "Traceback" not in err


def test_an_error_raised_while_handling_a_storage_failure_is_its_one_line(
    monkeypatch, capsys
) -> None:
    """optuna's study.optimize ends in "AssertionError: Should not reach" when its tell fails
    on a full disk: main() prints the storage failure behind it, one line, exit 1."""
    import tuner.cli as cli

    def fail(_args) -> int:
        try:
            raise StorageUnavailable("disk full: SQLite cannot write /x/tuner.db")
        except StorageUnavailable:
            raise AssertionError("Should not reach.") from None

    monkeypatch.setitem(cli.COMMANDS, "cleanup", (fail, "fail"))
    assert main(["cleanup", "any.toml"]) == 1
    assert capsys.readouterr().err == "tuner: error: disk full: SQLite cannot write /x/tuner.db\n"


def test_other_errors_are_not_mistaken_for_storage_failures(monkeypatch) -> None:
    import tuner.cli as cli

    def bug(_args) -> int:
        raise AssertionError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "cleanup", (bug, "bug"))
    with pytest.raises(AssertionError, match="a bug"):
        main(["cleanup", "any.toml"])


# --- read-only study folder -----------------------------------------------------------------

@pytest.fixture(params=["read-only mount", "no write permission"])
def read_only_study(finished_study, request) -> Iterator[tuple[Path, str, Path]]:
    """(study file, why, output folder) of a copy of the finished study (WAL journal mode
    stored in the file) in a folder this process cannot write: a read-only tmpfs (where
    mounting is permitted), or a folder and file without write permission (for root: while
    the test runs as user nobody, seteuid)."""
    top = Path(tempfile.mkdtemp(prefix="tuner-ro-"))
    top.chmod(0o755)
    folder, out = top / "study", top / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    mounted = request.param == "read-only mount"
    if mounted and not (os.geteuid() == 0 and _mount(folder, "size=16m")):
        shutil.rmtree(top)
        pytest.skip("mounting a tmpfs is not permitted here (the other case still runs)")
    folder.mkdir(exist_ok=True)
    study_file = folder / "dash_iris.toml"
    shutil.copy(finished_study.cfg.path, study_file)
    source = sqlite3.connect(Path(finished_study.url.removeprefix("sqlite:///")))
    copy = sqlite3.connect(folder / "tuner.db")
    source.backup(copy)
    source.close()
    assert copy.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    copy.close()  # the last connection: the -wal and -shm files go
    assert sorted(p.name for p in folder.iterdir()) == ["dash_iris.toml", "tuner.db"]
    as_nobody = False
    try:
        if mounted:
            assert subprocess.run(["mount", "-o", "remount,ro", str(folder)]).returncode == 0
            why = "read-only file system"
        else:
            (folder / "tuner.db").chmod(0o444)
            folder.chmod(0o555)
            why = "no permission"
            if os.geteuid() == 0:  # root writes anyway: be nobody for the test
                os.setegid(65534)
                os.seteuid(65534)
                as_nobody = True
        yield study_file, why, out
    finally:
        if as_nobody:
            os.seteuid(0)
            os.setegid(0)
        if mounted:
            _umount(folder)
        else:
            folder.chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)


def test_read_only_commands_read_a_read_only_study(read_only_study) -> None:
    study_file, _why, out = read_only_study
    assert main(["export", str(study_file), "--out", str(out / "best.json")]) == 0
    assert (out / "best.json").is_file()
    assert main(["report", str(study_file), "--out", str(out / "report"), "--no-png"]) == 0
    assert (out / "report" / "report.html").is_file()
    assert sorted(p.name for p in study_file.parent.iterdir()) == ["dash_iris.toml", "tuner.db"]


def test_dashboard_serves_a_read_only_study(read_only_study) -> None:
    import json
    import urllib.request

    from dashboard_study import dashboard_server

    study_file, _why, _out = read_only_study
    with dashboard_server(f"sqlite:///{study_file.parent / 'tuner.db'}") as base:
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as response:
            body = json.loads(response.read())
    assert [s["study_name"] for s in body["study_summaries"]] == ["dash_iris"]


def test_a_write_to_a_read_only_study_is_one_line(read_only_study) -> None:
    study_file, why, _out = read_only_study
    db = study_file.parent / "tuner.db"
    storage = make_storage(f"sqlite:///{db}")
    assert why in storage.read_only
    study = optuna.load_study(study_name="dash_iris", storage=storage)
    with pytest.raises(StorageUnavailable) as info:
        study.set_user_attr("k", 1)
    message = str(info.value)
    assert message.startswith(f"storage file {db} is read-only (") and why in message
    assert "cp -a" in message
    assert "\n" not in message


def test_commits_still_in_the_write_ahead_log_of_a_read_only_study(tmp_path) -> None:
    """With its ``-shm`` index the log is read (mode=ro); without it, one line says why."""
    source = tmp_path / "src"
    source.mkdir()
    storage = make_storage(f"sqlite:///{source / 'tuner.db'}")
    optuna.create_study(storage=storage, study_name="w")
    storage.engine.dispose()
    writer = sqlite3.connect(source / "tuner.db")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # the next commit stays in tuner.db-wal
    writer.execute("INSERT INTO study_user_attributes (study_id, key, value_json) "
                   "VALUES (1, 'late', '1')")
    writer.commit()
    folder = tmp_path / "ro"
    if not (os.geteuid() == 0 and _mount(folder, "size=8m")):
        writer.close()
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        (folder / "no-shm").mkdir()
        for name in ("tuner.db", "tuner.db-wal", "tuner.db-shm"):
            shutil.copy(source / name, folder / name)
        for name in ("tuner.db", "tuner.db-wal"):
            shutil.copy(source / name, folder / "no-shm" / name)
        writer.close()
        assert subprocess.run(["mount", "-o", "remount,ro", str(folder)]).returncode == 0
        study = optuna.load_study(study_name="w",
                                  storage=make_storage(f"sqlite:///{folder / 'tuner.db'}"))
        assert study.user_attrs == {"late": 1}
        with pytest.raises(StorageError, match="its last commits are still in tuner.db-wal"):
            make_storage(f"sqlite:///{folder / 'no-shm' / 'tuner.db'}")
    finally:
        _umount(folder)


# --- in memory, mistyped URLs -----------------------------------------------------------------

@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_in_memory_storage_works_in_one_process(url: str) -> None:
    study = optuna.create_study(storage=make_storage(url), study_name="m")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_in_memory_storage_is_refused_with_workers(url, tmp_path, capsys) -> None:
    with pytest.raises(StorageError, match="--workers needs a storage that processes share"):
        check_shareable(url)
    check_shareable(f"sqlite:///{tmp_path / 'x.db'}")  # a file is fine
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "s"\n[dataset]\nname = "iris"\n')
    assert main(["tune", str(study), "--storage", url, "--workers", "2"]) == 2
    captured = capsys.readouterr()
    assert "--workers needs a storage that processes share" in captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""  # refused before anything


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("sqlite:/x.db", "sqlite:///x.db"),
        ("sqlite//x.db", "sqlite:///x.db"),
        ("sqlite:x.db", "sqlite:///x.db"),
        ("journal:/runs.journal", "journal:///runs.journal"),
        ("postgresql:/u@h/db", "postgresql://u@h/db"),
        ("postgres://u:s3cr3t@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_mistyped_url_is_refused_with_did_you_mean(typed, meant, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match="did you mean") as info:
        resolve_storage_url(None, typed)
    assert meant in str(info.value) and "s3cr3t" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_real_folder_named_like_a_scheme_is_a_path(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_storage_url(None, "sqlite/x.db") == f"sqlite:///{tmp_path / 'sqlite/x.db'}"


def test_retry_budget_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(storage_guard.RETRY_ENV, "2.5")
    assert storage_guard.retry_budget_s() == 2.5
    with retry_budget(0):
        assert storage_guard.retry_budget_s() == 0
    monkeypatch.setenv(storage_guard.RETRY_ENV, "soon")
    with pytest.raises(ConfigError, match=f"{storage_guard.RETRY_ENV}='soon'"):
        storage_guard.retry_budget_s()
    with pytest.raises(ConfigError, match="expected seconds"):
        make_storage("sqlite:///:memory:")  # when the storage opens, not mid-run


# --- PostgreSQL: terminated backends, outages -------------------------------------------------

class _Proxy:
    """A TCP proxy to the PostgreSQL server on a fixed local port: :meth:`stop` is an outage
    (every connection cut, new ones refused), :meth:`start` ends it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(), which close() alone does not
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[tuple[_Proxy, str]]:
    url = sqlalchemy.engine.make_url(postgres_url)
    p = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    p.start()
    try:
        yield p, url.set(host="127.0.0.1", port=p.port).render_as_string(hide_password=False)
    finally:
        p.stop()


@pytest.fixture
def fresh_study_name(postgres_url: str, request) -> Iterator[str]:
    name = f"tuner-failures-{request.node.name}"[:60]
    storage = make_storage(postgres_url)
    if name in [s.study_name for s in optuna.get_all_study_summaries(storage)]:
        optuna.delete_study(study_name=name, storage=storage)
    yield name
    if name in [s.study_name for s in optuna.get_all_study_summaries(storage)]:
        optuna.delete_study(study_name=name, storage=storage)


class _Said(logging.Handler):
    """Sets an event when tuner.storage logs a message containing ``words``."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words, self.event, self.lines = words, threading.Event(), []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if self.words in record.getMessage():
            self.event.set()


@pytest.mark.postgres
def test_outage_shorter_than_the_budget_is_waited_out(proxy, fresh_study_name, monkeypatch):
    outage, url = proxy
    monkeypatch.setattr(storage_guard, "RETRY_BUDGET_S", 30.0)
    study = optuna.create_study(storage=make_storage(url), study_name=fresh_study_name)
    said = _Said("connection lost")
    logging.getLogger("tuner.storage").addHandler(said)
    errors: list[BaseException] = []

    def one_trial() -> None:
        try:
            trial = study.ask()
            trial.set_user_attr("k", "v")
            study.tell(trial, 0.5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        outage.stop()
        worker = threading.Thread(target=one_trial)
        worker.start()
        assert said.event.wait(30), said.lines  # it is retrying, not failing
        outage.start()
        worker.join(60)
    finally:
        logging.getLogger("tuner.storage").removeHandler(said)
    assert not worker.is_alive() and errors == []
    assert any("reconnected after" in line for line in said.lines)
    (trial,) = optuna.load_study(study_name=fresh_study_name, storage=make_storage(url)).trials
    assert (trial.state, trial.value, trial.user_attrs) == (TrialState.COMPLETE, 0.5, {"k": "v"})
    password = sqlalchemy.engine.make_url(url).password
    assert not password or all(password not in line for line in said.lines)


@pytest.mark.postgres
def test_outage_longer_than_the_budget_is_one_line(proxy, fresh_study_name, monkeypatch):
    outage, url = proxy
    password = sqlalchemy.engine.make_url(url).password
    monkeypatch.setattr(storage_guard, "RETRY_BUDGET_S", 1.0)
    study = optuna.create_study(storage=make_storage(url), study_name=fresh_study_name)
    trial = study.ask()
    outage.stop()
    with pytest.raises(StorageUnavailable) as info:
        trial.set_user_attr("k", "v")
    message = str(info.value)
    assert "unreachable for 1 s" in message and "run the same command again" in message
    assert "\n" not in message and (not password or password not in message)


@pytest.mark.postgres
def test_terminated_backends_are_retried(postgres_url, fresh_study_name) -> None:
    """Five times, the backend about to run a statement is terminated (pg_terminate_backend
    from a second connection): each operation still completes, once."""
    storage = make_storage(postgres_url)
    admin = sqlalchemy.create_engine(storage.engine.url, poolclass=sqlalchemy.pool.NullPool)
    statements = [0]
    terminated = []

    def terminate_some(conn, _cursor, _statement, _params, _context, _many) -> None:
        statements[0] += 1
        if statements[0] not in (5, 17, 29, 41, 53):
            return
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with admin.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            # wait until the server has ended it (an event, not a fixed sleep)
            for _ in range(500):
                gone = other.exec_driver_sql(
                    f"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = {pid}").scalar()
                if gone:
                    break
        terminated.append(pid)

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", terminate_some)
    study = optuna.create_study(storage=storage, study_name=fresh_study_name)
    for k in range(6):
        trial = study.ask()
        trial.set_user_attr("k", k)
        study.tell(trial, float(k))
    sqlalchemy.event.remove(storage.engine, "before_cursor_execute", terminate_some)
    admin.dispose()
    assert len(terminated) == 5
    trials = optuna.load_study(study_name=fresh_study_name, storage=make_storage(postgres_url))
    assert [(t.number, t.state, t.value, t.user_attrs["k"]) for t in trials.trials] == [
        (k, TrialState.COMPLETE, float(k), k) for k in range(6)]


def _drop_after_commit(storage, monkeypatch) -> list[int]:
    """Make the next commit go through and then fail like a dropped connection."""
    dialect = storage.engine.dialect
    real = dialect.do_commit
    armed = [1]

    def commit_then_drop(dbapi_connection) -> None:
        real(dbapi_connection)
        if armed and armed.pop():
            raise dialect.loaded_dbapi.OperationalError("server closed the connection")

    monkeypatch.setattr(dialect, "do_commit", commit_then_drop)
    return armed


@pytest.mark.postgres
@pytest.mark.parametrize("dedupe", [True, False])
def test_a_new_trial_whose_commit_went_through_is_not_created_twice(
    postgres_url, fresh_study_name, monkeypatch, dedupe
) -> None:
    storage = make_storage(postgres_url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], fresh_study_name)
    storage._dedupe = dedupe  # False: what a plain retry would do (the check that this can fail)
    armed = _drop_after_commit(storage, monkeypatch)
    trial_id = storage.create_new_trial(study_id)
    assert armed == []  # the commit was dropped once
    trials = storage.get_all_trials(study_id)
    if dedupe:
        assert [t._trial_id for t in trials] == [trial_id]
    else:
        assert len(trials) == 2


@pytest.mark.postgres
def test_a_finished_trial_whose_commit_went_through_counts_as_done(
    postgres_url, fresh_study_name, monkeypatch
) -> None:
    storage = make_storage(postgres_url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], fresh_study_name)
    trial_id = storage.create_new_trial(study_id)
    armed = _drop_after_commit(storage, monkeypatch)
    assert storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.25]) is True
    assert armed == []
    trial = storage.get_trial(trial_id)
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.25)


@pytest.mark.postgres
def test_a_heartbeat_thread_skips_a_beat_instead_of_raising(proxy, fresh_study_name,
                                                            monkeypatch) -> None:
    """optuna's heartbeat thread must not die with a traceback in an outage: it skips the beat
    (a missed beat is within the grace period); the trial's own thread reports the outage."""
    outage, url = proxy
    monkeypatch.setattr(storage_guard, "RETRY_BUDGET_S", 0.5)
    storage = make_storage(url, heartbeat_interval=1)
    trial = optuna.create_study(storage=storage, study_name=fresh_study_name).ask()
    outage.stop()
    raised: list[BaseException] = []

    def beat() -> None:
        try:
            storage.record_heartbeat(trial._trial_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            raised.append(exc)

    thread = threading.Thread(target=beat)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and raised == []
    with pytest.raises(StorageUnavailable, match="unreachable"):
        storage.record_heartbeat(trial._trial_id)  # the main thread: one line after the budget


def test_the_guarded_storage_pickles(tmp_path) -> None:
    import pickle

    storage = make_storage(f"sqlite:///{tmp_path / 'p.db'}")
    optuna.create_study(storage=storage, study_name="p")
    copy = pickle.loads(pickle.dumps(storage))
    assert [s.study_name for s in copy.get_all_studies()] == ["p"]
    assert copy._scrub("postgresql://u:s3cr3t@h/db") == "postgresql://u:***@h/db"
