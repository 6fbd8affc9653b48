"""Workers sharing a study: exact counts, stale-trial cleanup, interrupts (tuner.workers).

The unit tests drive the gate, the reaper and the heartbeat on small storages with a trivial
objective; the end-to-end tests (slow) run real ``python -m tuner tune`` processes on iris.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_study_dict
from optuna.trial import TrialState

from tuner import reaping, workers
from tuner.cli import main
from tuner.storage import _with_driver, make_storage
from tuner.workers import (
    OWNER_ATTR,
    REASON_ATTR,
    WORKER_ATTR,
    Gate,
    TrialCancelled,
    claim_trial,
    heartbeat_kwargs,
    reap_stale_trials,
    run_trials,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _study(url: str, name: str = "w", **storage_kwargs: Any) -> optuna.Study:
    return optuna.create_study(
        study_name=name, storage=make_storage(url, **storage_kwargs), load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def _quadratic(trial: optuna.Trial) -> float:
    return (trial.suggest_float("x", -1.0, 1.0) - 0.3) ** 2


def _states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


# --- the gate: exact counts -------------------------------------------------------------------

def test_gate_cancels_a_trial_that_would_pass_the_target(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    study.optimize(_quadratic, n_trials=2)  # 2 finished
    ahead = study.ask()  # an earlier trial still running elsewhere
    calls: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        return _quadratic(trial)

    study.optimize(Gate(objective, target=3), n_trials=1, catch=(TrialCancelled,))
    refused = study.trials[-1]
    assert calls == [] and refused.state == TrialState.FAIL
    assert refused.user_attrs[REASON_ATTR].startswith("cancelled: 2 trials had finished and 1")
    assert refused.user_attrs[WORKER_ATTR].endswith(f":{os.getpid()}")

    study.tell(ahead, state=TrialState.FAIL)  # the earlier one failed: its slot is free again
    study.optimize(Gate(objective, target=3), n_trials=1, catch=(TrialCancelled,))
    assert calls == [study.trials[-1].number]
    assert len(study.get_trials(states=FINISHED)) == 3


def test_concurrent_run_trials_stop_at_exactly_the_target(sqlite_url: str) -> None:
    """Four workers racing on a fast objective: never one finished trial more than asked."""
    make_storage(sqlite_url)
    _study(sqlite_url)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            run_trials(_study(sqlite_url), _quadratic, target=40)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    study = _study(sqlite_url)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == 40
    assert len({t.number for t in finished}) == 40
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    for t in study.get_trials(states=(TrialState.FAIL,)):  # only the race's cancellations
        assert t.user_attrs[REASON_ATTR].startswith("cancelled")


def test_run_trials_tops_up_and_never_runs_past_the_target(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    assert run_trials(study, _quadratic, target=3) == 3
    assert run_trials(study, _quadratic, target=3) == 0
    assert run_trials(study, _quadratic, target=5) == 2
    assert len(study.trials) == 5


# --- interrupts ------------------------------------------------------------------------------

def test_interrupt_closes_the_trial_as_fail_with_its_reason(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    handler = signal.getsignal(signal.SIGINT)

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:
            raise KeyboardInterrupt("SIGINT")
        return _quadratic(trial)

    with pytest.raises(KeyboardInterrupt):
        run_trials(study, objective, target=5)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs[REASON_ATTR] == "interrupted: SIGINT"
    assert signal.getsignal(signal.SIGINT) is handler  # restored


def test_a_signal_outside_training_is_held_until_a_safe_point() -> None:
    """SIGINT while asking for or telling a trial must not leave it half-written."""
    handler = signal.getsignal(signal.SIGINT)
    with workers.Interrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here, and holds the interrupt
        assert interrupts.pending == "SIGINT"
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            interrupts.check()
    assert signal.getsignal(signal.SIGINT) is handler
    with workers.Interrupts() as interrupts, pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupts.interruptible():  # training: stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is handler


# --- stale trials ----------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_trial_of_a_dead_local_worker_is_failed_and_requeued(tmp_path: Path) -> None:
    """Journal files have no heartbeat: the owner process being gone is what marks the trial."""
    study = _study(f"journal:///{tmp_path / 's.journal'}")
    machine = reaping._machine_key()
    trials = {}
    for label, owner in [("dead", f"{machine}:{_dead_pid()}"), ("alive", reaping._owner()),
                         ("elsewhere", f"other-machine:{_dead_pid()}")]:
        trial = study.ask()
        trial.suggest_float("x", -1.0, 1.0)
        trial.set_user_attr(WORKER_ATTR, f"host:{label}")
        study._storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, owner)
        trials[label] = trial.number

    assert reap_stale_trials(study) == [trials["dead"]]
    dead = study.trials[trials["dead"]]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs[REASON_ATTR] == (
        "worker host:dead died while training it; its parameters are re-queued (at most 3 times)"
    )
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == dead.number
    assert WORKER_ATTR not in retry.user_attrs and OWNER_ATTR not in retry.system_attrs
    for label in ("alive", "elsewhere"):
        assert study.trials[trials[label]].state == TrialState.RUNNING


def test_an_orphaned_worker_stops_before_it_reaps_or_asks(tmp_path: Path) -> None:
    """A worker process whose command is gone stops as SIGTERM stops it, before it reaps the
    dead command's trial and re-runs its parameters: a re-queued copy it started would be
    closed as interrupted a moment later (its parent watch), and the parameters lost; left
    RUNNING, the next run reaps and re-queues them."""
    study = _study(f"journal:///{tmp_path / 's.journal'}")
    command = study.ask()  # the killed command's trial: its owner is gone
    command.suggest_float("x", -1.0, 1.0)
    study._storage.set_trial_system_attr(command._trial_id, OWNER_ATTR,
                                         f"{reaping._machine_key()}:{_dead_pid()}")
    asked: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        asked.append(trial.number)
        return _quadratic(trial)

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run_trials(study, objective, target=10, orphaned=lambda: True)
    assert study.trials[command.number].state == TrialState.RUNNING  # left for the next run
    assert not study.get_trials(states=(TrialState.WAITING,))  # nothing re-queued here
    assert asked == [] and len(study.trials) == 1
    assert run_trials(study, objective, target=2, orphaned=lambda: False) == 2  # not orphaned:
    assert study.trials[command.number].state == TrialState.FAIL  # reaped, and its copy run
    assert study.trials[command.number].params in [t.params for t in study.trials[1:]]


def test_a_zombie_or_ended_process_counts_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    end = time.monotonic() + 30
    while not workers._gone(child.pid) and time.monotonic() < end:
        time.sleep(0.01)  # exited, not yet reaped by this process: a zombie
    assert workers._gone(child.pid) and child.poll() == 0
    assert workers._gone(child.pid)  # reaped: no such process
    assert not workers._gone(os.getpid())


@pytest.fixture(params=["sqlite", "postgres"])
def rdb_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return request.getfixturevalue("postgres_url")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_heartbeat_marks_a_silent_trial_fail_and_requeues_it(rdb_url: str) -> None:
    name = f"hb-{uuid.uuid4().hex[:8]}"
    study = _study(rdb_url, name, **heartbeat_kwargs(rdb_url, heartbeat_s=1))
    try:
        trial = study.ask()  # asked, then its process "dies": no owner, one heartbeat
        trial.suggest_float("x", -1.0, 1.0)
        study._storage.record_heartbeat(trial._trial_id)
        assert reap_stale_trials(study) == []  # fresh heartbeat: still running
        reaped: list[int] = []
        end = time.monotonic() + 30
        while not reaped and time.monotonic() < end:  # stale once 3 s old
            reaped = reap_stale_trials(study)
            time.sleep(0.1)
        assert reaped == [trial.number]
        assert study.trials[trial.number].state == TrialState.FAIL
        assert study.trials[trial.number].user_attrs[REASON_ATTR].startswith("no heartbeat")
        (retry,) = study.get_trials(states=(TrialState.WAITING,))
        assert retry.params == study.trials[trial.number].params
        run_trials(study, _quadratic, target=1)  # the retry is what runs next
        assert study.trials[retry.number].state == TrialState.COMPLETE
    finally:
        optuna.delete_study(study_name=name, storage=make_storage(rdb_url))


def test_heartbeat_settings_per_storage() -> None:
    sqlite = heartbeat_kwargs("sqlite:////x/tuner.db", 5)
    assert (sqlite["heartbeat_interval"], sqlite["grace_period"]) == (5, 15)
    assert heartbeat_kwargs("postgresql://u:p@h/db")["heartbeat_interval"] == 10
    assert heartbeat_kwargs("journal:////x/s.journal") == {}
    assert heartbeat_kwargs("sqlite:////x/tuner.db", 0) == {}


class _HeartbeatLog:
    """A storage stand-in that logs heartbeats (``Heartbeats`` only needs these two methods)."""

    def __init__(self, interval: float | None) -> None:
        self.interval, self.beats = interval, []
        self.enough = threading.Event()

    def get_heartbeat_interval(self) -> float | None:
        return self.interval

    def record_heartbeat(self, trial_id: int) -> None:
        self.beats.append(trial_id)
        if self.beats.count(1) >= 6:
            self.enough.set()


def test_heartbeats_come_from_a_thread_while_the_main_thread_is_busy() -> None:
    storage = _HeartbeatLog(interval=0.01)
    a, b = (types.SimpleNamespace(_trial_id=i) for i in (1, 2))
    with workers.Heartbeats(types.SimpleNamespace(_storage=storage)) as beats:
        beats.add(a)
        beats.add(b)
        assert storage.beats == [1, 2]  # at once, when a trial starts
        beats.remove(b)  # told: no more beats for it
        b_beats = storage.beats.count(2)
        assert storage.enough.wait(30)  # the main thread only waits here: the thread beats
    assert storage.beats.count(2) <= b_beats + 1  # at most one already under way
    assert not beats._thread.is_alive()  # the thread ended with the block

    off = _HeartbeatLog(interval=None)  # journal files, heartbeats off
    with workers.Heartbeats(types.SimpleNamespace(_storage=off)) as beats:
        beats.add(a)
    assert off.beats == []


def test_counting_reaps_first(tmp_path: Path) -> None:
    """run_trials counts finished and running trials after reaping those of dead workers."""
    study = _study(f"journal:///{tmp_path / 's.journal'}")
    study.optimize(_quadratic, n_trials=2)
    for owner in (f"{reaping._machine_key()}:{_dead_pid()}", reaping._owner()):
        trial = study.ask()
        study._storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, owner)
    assert workers._counts(study) == (2, 2)
    assert workers._counts(study, reap=True) == (2, 1)  # the dead worker's trial: FAIL
    assert _states(study) == {"COMPLETE": 2, "FAIL": 1, "RUNNING": 1, "WAITING": 1}


def test_postgresql_url_gets_an_installed_driver() -> None:
    url = _with_driver("postgresql://u:p@h:5432/db")
    assert url.startswith(("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert _with_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert _with_driver("sqlite:////x.db") == "sqlite:////x.db"


def test_cleanup_all_running_marks_and_requeues(tiny_cfg, tmp_path: Path, capsys) -> None:
    cfg = tiny_cfg()
    url = f"journal:///{tmp_path / 's.journal'}"
    study = _study(url, cfg.name)
    study.optimize(_quadratic, n_trials=1)
    running = study.ask()
    running.suggest_float("x", -1.0, 1.0)
    (tmp_path / "tiny.toml").write_text(_toml(tiny_study_dict()))
    assert main(["cleanup", str(tmp_path / "tiny.toml"), "--storage", url]) == 0
    assert study.trials[running.number].state == TrialState.RUNNING  # no proof it is dead
    assert main(["cleanup", str(tmp_path / "tiny.toml"), "--storage", url, "--all-running"]) == 0
    assert f"trial {running.number}: FAIL" in capsys.readouterr().out
    assert _states(_study(url, cfg.name)) == {"COMPLETE": 1, "FAIL": 1, "WAITING": 1}


# --- the worker server: what workers are forked from --------------------------------------------

_SERVER_CHECK = """
import json, multiprocessing, os, signal, tempfile
from tuner import workers

environ = dict(os.environ)
workers.start_worker_server(1)  # torch threads: every core
assert dict(os.environ) == environ and not signal.pthread_sigmask(signal.SIG_BLOCK, [])
ctx = multiprocessing.get_context("forkserver")
# a process forked from the server (its parent is the server) says what it found there; no
# multiprocessing.Pool: its terminate() cannot stop a worker that blocks SIGTERM, as ours do
with tempfile.TemporaryDirectory() as tmp:
    found = os.path.join(tmp, "found.json")
    probe = ctx.Process(target=exec, args=(
        "import gc, json, os, sys\\n"
        f"open({found!r}, 'w').write(json.dumps([os.getppid(), sorted("
        "{'tuner._server_preload', 'tuner.lifecycle', 'tuner.study', 'tuner._server_loaded'}"
        " & set(sys.modules)), gc.isenabled(), gc.get_freeze_count() > 10000]))", {}))
    probe.start()
    probe.join(60)
    server, preloaded, collecting, frozen = json.load(open(found))
print("preloaded", ",".join(preloaded), "collecting", collecting, "frozen", frozen)
print(server, open(f"/proc/{server}/status").read(), open(f"/proc/{server}/maps").read())
print(open(f"/proc/{server}/environ").read().replace("\\0", "\\n"))
worker = ctx.Process(target=workers.exit_process, args=(3,))
worker.start()
worker.join(60)
print("exit", worker.exitcode)
"""


def test_workers_fork_from_a_one_thread_server_with_torch_loaded_and_signals_blocked() -> None:
    """start_worker_server (issue 12), in a process with no thread settings (numpy's OpenBLAS
    would start a thread per core): the server has torch imported and runs one thread, so that
    forking it is safe; it blocks SIGINT/SIGTERM (each worker inherits that until its handlers
    are installed); this process's environment and signal mask are left as they were. A
    worker ends through exit_process with the status it gives."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", _SERVER_CHECK], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    # tuner's modules come loaded, the server's imports frozen and the collector on (so a
    # library user's own forkserver processes of the session get it on too)
    assert ("preloaded tuner._server_loaded,tuner._server_preload,tuner.lifecycle,tuner.study "
            "collecting True frozen True\n") in done.stdout
    server, rest = done.stdout.split("\n", 1)[1].split(None, 1)
    assert int(server) != os.getpid()
    status = dict(line.split(":", 1) for line in rest.splitlines() if ":\t" in line)
    assert int(status["Threads"]) == 1
    # numpy's OpenBLAS starts no thread pool in it (a pool it shuts down at each fork)
    assert "\nOPENBLAS_NUM_THREADS=1\n" in rest
    blocked = int(status["SigBlk"], 16)
    assert all(blocked & (1 << (s - 1)) for s in (signal.SIGINT, signal.SIGTERM))
    assert "libtorch" in rest  # its memory maps: torch imported before forking
    assert done.stdout.rstrip().endswith("exit 3")


# --- end to end: real worker processes --------------------------------------------------------

def _toml(data: dict[str, dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "\n".join(
        f"[{section}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in values.items())
        for section, values in data.items()
    )


SLOW_TRIALS = {  # ~1 s per trial, never diverging: long enough to catch one RUNNING
    "training": {"epochs": 150, "batch_size": 8},
    "space": {"lr": [1e-3, 1e-2], "optimizers": ["sgd"], "schedules": ["constant"]},
}


def _study_file(tmp_path: Path, name: str, **overrides: Any) -> Path:
    data = tiny_study_dict(**overrides)
    data["study"]["name"] = name
    path = tmp_path / f"{name}.toml"
    path.write_text(_toml(data))
    return path


# `tuner tune` whose trials wait at their second epoch until a file exists (tests/_gated_tune.py)
GATED_TUNE = Path(__file__).with_name("_gated_tune.py")

_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Any:
    """A test that fails while its `tuner tune` runs does not leave it running (or stopped)."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _tune(
    study_file: Path, *args: str, url: str | None = None, new_session: bool = False,
    gate: Path | None = None,
) -> subprocess.Popen[str]:
    if url is not None:
        make_storage(url)  # create the tables first: the test reads the storage while it runs
    # one torch thread: the machines running the suite are shared, and spinning intra-op
    # threads on busy cores make a tiny trial a hundred times slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = ["-m", "tuner"]
    if gate is not None:
        command, env["TUNER_TEST_GATE"] = [str(GATED_TUNE)], str(gate)
    proc = subprocess.Popen(
        [sys.executable, *command, "tune", str(study_file), "--no-progress", "--no-confirm",
         *args],
        cwd=study_file.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=new_session,
    )
    _started.append(proc)
    return proc


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _wait_for_running(url: str, name: str, count: int = 1, timeout: float = 90) -> list:
    """Poll like a dashboard would, until ``count`` trials are training (an epoch reported)."""
    storage = make_storage(url)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # not created yet
            time.sleep(0.1)
            continue
        running = [t for t in study.get_trials(states=(TrialState.RUNNING,))
                   if WORKER_ATTR in t.user_attrs and t.intermediate_values]
        if len(running) >= count:
            return running
        time.sleep(0.1)
    raise AssertionError(f"no {count} running trial(s) of {name} within {timeout} s")


def _assert_exact(url: str, name: str, n: int) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=make_storage(url))
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == n
    assert len({t.number for t in finished}) == n
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for t in finished:
        assert {"seconds", "epochs_run", "val_metric", WORKER_ATTR} <= set(t.user_attrs)
    return study


@pytest.mark.slow
def test_four_workers_on_the_default_sqlite_storage(tmp_path: Path) -> None:
    """--workers 4 on studies' default SQLite file while a reader polls it like a dashboard."""
    study_file = _study_file(tmp_path, "four")
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    proc = _tune(study_file, "--workers", "4", "--n-trials", "30", url=url)
    reads = 0
    storage = make_storage(url)
    while proc.poll() is None:  # the dashboard's reads must neither fail nor block the workers
        with contextlib.suppress(KeyError):
            optuna.load_study(study_name="four", storage=storage).get_trials()
            reads += 1
        time.sleep(0.2)
    code, out, err = _finish(proc)
    assert code == 0, err
    assert "database is locked" not in err and "Traceback" not in err
    assert reads > 0
    study = _assert_exact(url, "four", 30)
    assert len({t.user_attrs[WORKER_ATTR] for t in study.trials}) >= 2  # work was shared
    assert "Trials and compute by state" in out


@pytest.mark.slow
@pytest.mark.postgres
def test_three_processes_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """Three `tuner tune` commands, as on three machines, create and share one study."""
    name = f"pg3-{uuid.uuid4().hex[:8]}"
    study_file = _study_file(tmp_path, name)
    procs = [_tune(study_file, "--storage", postgres_url, "--n-trials", "30",
                   "--worker-index", str(k)) for k in range(3)]
    try:
        for proc in procs:
            code, _, err = _finish(proc)
            assert code == 0, err
        study = _assert_exact(postgres_url, name, 30)
        assert len({t.user_attrs[WORKER_ATTR] for t in study.trials}) >= 2
        finished = study.get_trials(states=FINISHED)
        # a trial cancelled at the target (FAIL, before sampling) has no parameters
        assert len({tuple(sorted(t.params.items())) for t in finished}) == len(finished)
    finally:
        optuna.delete_study(study_name=name, storage=make_storage(postgres_url))


@pytest.fixture(params=["sqlite", "journal"])
def file_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The two embedded storages (PostgreSQL's heartbeat is tested above, without processes)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuner.db'}"
    return f"journal:///{tmp_path / 'tuner.journal'}"


@pytest.mark.slow
@pytest.mark.parametrize("batch", ["1", "3"], ids=["one-at-a-time", "batched"])
def test_sigkill_mid_trial_then_rerun_reaches_the_target(
    tmp_path: Path, file_url: str, batch: str
) -> None:
    name = "kill"
    study_file = _study_file(tmp_path, name, space=SLOW_TRIALS["space"])
    # its trials wait at their second epoch: none ends between being seen training and the kill
    proc = _tune(study_file, "--storage", file_url, "--n-trials", "3", "--heartbeat", "1",
                 "--batch-trials", batch, url=file_url, gate=tmp_path / "never")
    victims = _wait_for_running(file_url, name, count=int(batch))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = optuna.load_study(study_name=name, storage=make_storage(file_url))
    for victim in victims:
        assert left.trials[victim.number].state == TrialState.RUNNING  # what a crash leaves

    code, _, err = _finish(_tune(study_file, "--storage", file_url, "--n-trials", "3",
                                 "--heartbeat", "1", "--batch-trials", batch))
    assert code == 0, err
    study = _assert_exact(file_url, name, 3)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for victim in victims:
        killed = study.trials[victim.number]
        assert killed.state == TrialState.FAIL
        # the dead owner (any storage) or the silent heartbeat (RDB), whichever is seen first
        reason = killed.user_attrs[REASON_ATTR]
        assert "died while training" in reason or "no heartbeat for 3 s" in reason
        retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
        assert len(retried) == 1 and retried[0].params == killed.params
        assert retried[0].state in FINISHED


@pytest.mark.slow
def test_workers_close_their_trials_and_exit_when_the_command_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the command itself (`tuner tune --workers 2`): its worker process, a child of
    the worker server, notices within a second, closes its trials as an interrupt does and
    exits, instead of training on unseen; the command's own trial (it is worker 0) is left
    RUNNING, as any crash leaves one, and the next run reaps it."""
    name = "orphans"
    study_file = _study_file(tmp_path, name, space=SLOW_TRIALS["space"])
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    gate = tmp_path / "gate"  # the trials wait at their second epoch until it exists
    proc = _tune(study_file, "--workers", "2", "--n-trials", "5000", "--batch-trials", "1",
                 url=url, gate=gate)  # one trial each: two running are one per process
    running = _wait_for_running(url, name, count=2)
    owner = {t.number: int(t.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]) for t in running}
    pids = set(owner.values()) - {proc.pid}
    assert proc.pid in owner.values() and pids  # the command trains, and so does a worker
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gate.touch()  # let them go on: only the missing command can stop them now
    end = time.monotonic() + 60
    while time.monotonic() < end and any(_alive(pid) for pid in pids):
        time.sleep(0.1)  # processes that are not this test's children: polled
    assert not any(_alive(pid) for pid in pids)
    study = optuna.load_study(study_name=name, storage=make_storage(url))
    left = study.get_trials(states=(TrialState.RUNNING,))  # the command's, if not reaped yet
    assert all(t.user_attrs[WORKER_ATTR].endswith(f":{proc.pid}") for t in left)
    reap_stale_trials(study)  # as the next run does (the worker may have done it already)
    study = optuna.load_study(study_name=name, storage=make_storage(url))
    assert not study.get_trials(states=(TrialState.RUNNING,))
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) < 5000  # stopped, not trained to the end
    failed = study.get_trials(states=(TrialState.FAIL,))
    mine = [t for t in failed if t.user_attrs[WORKER_ATTR].endswith(f":{proc.pid}")]
    assert {t.number for t in mine} >= {n for n, pid in owner.items() if pid == proc.pid}
    for t in failed:
        if t in mine:  # its owner is gone: reaped
            assert "died while training" in t.user_attrs[REASON_ATTR]
        else:  # the worker process's: closed as an interrupt closes
            assert t.user_attrs[REASON_ATTR] == "interrupted: SIGTERM"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    return True


@pytest.mark.slow
def test_a_worker_killed_during_the_run_is_replaced(tmp_path: Path) -> None:
    """SIGKILL one of two workers: the other re-runs its trial; the run still ends exact."""
    study_file = _study_file(tmp_path, "survive", space=SLOW_TRIALS["space"])
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    gate = tmp_path / "gate"  # the trials wait at their second epoch until it exists
    proc = _tune(study_file, "--workers", "2", "--n-trials", "3", "--batch-trials", "1",
                 url=url, gate=gate)  # one trial each: two running are one per process
    running = _wait_for_running(url, "survive", count=2)  # the command's trial and the worker's
    victim = next(t for t in running if not t.user_attrs[WORKER_ATTR].endswith(f":{proc.pid}"))
    os.kill(int(victim.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]), signal.SIGKILL)
    gate.touch()
    code, out, err = _finish(proc)
    assert code == 0, err
    pid = int(victim.user_attrs[WORKER_ATTR].rsplit(":", 1)[1])
    assert (f"worker 1 (pid {pid}) was killed by SIGKILL; its 1 trial(s) in training were "
            f"marked failed, their parameters re-queued") in " ".join(out.split())
    study = _assert_exact(url, "survive", 3)
    assert study.trials[victim.number].state == TrialState.FAIL


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n_workers", "batch", "in_flight", "sig"),
    [(1, 1, 1, "SIGINT"), (1, 4, 4, "SIGINT"), (2, 1, 2, "SIGINT"), (2, 2, 4, "SIGTERM")],
    ids=["one-at-a-time", "batched", "two-workers", "two-batched-workers-sigterm"],
)
def test_ctrl_c_closes_trials_prints_the_summary_and_exits_130(
    tmp_path: Path, n_workers: int, batch: int, in_flight: int, sig: str
) -> None:
    # trials far longer than the test: none ends (and frees its slot) around the signal
    study_file = _study_file(tmp_path, "stop", **{**SLOW_TRIALS, "training": {
        "epochs": 5000, "batch_size": 8}})
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    proc = _tune(study_file, "--workers", str(n_workers), "--batch-trials", str(batch),
                 "--n-trials", "20", url=url)
    _wait_for_running(url, "stop", count=in_flight)
    proc.send_signal(signal.Signals[sig])  # to the parent only; it forwards to its workers
    code, out, err = _finish(proc, timeout=90)
    assert code == 130, err
    assert "Trials and compute by state" in out
    assert f"Interrupted: the {in_flight} trial(s) in training were closed as FAIL" in out
    assert "Traceback" not in err
    study = optuna.load_study(study_name="stop", storage=make_storage(url))
    assert not study.get_trials(states=(TrialState.RUNNING,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == in_flight
    assert all(t.user_attrs[REASON_ATTR] == f"interrupted: {sig}" for t in failed)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _worker_processes(pid: int) -> list[int]:
    """The worker processes of `tuner tune` ``pid``: children of its worker server (a child
    of ``pid``, like multiprocessing's resource tracker)."""
    return [w for child in _children(pid) for w in _children(child)]


@pytest.mark.slow
def test_ctrl_c_while_workers_load_exits_130_without_tracebacks(tmp_path: Path) -> None:
    """Ctrl-C (the whole process group) while the worker processes still import (issue 11.8)."""
    study_file = _study_file(tmp_path, "early", **SLOW_TRIALS)
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    proc = _tune(study_file, "--workers", "2", "--n-trials", "5", url=url, new_session=True)
    end = time.monotonic() + 60
    while not _worker_processes(proc.pid) and time.monotonic() < end:  # the command is the 2nd
        time.sleep(0.01)  # polling for the workers: nothing to await across processes
    os.killpg(proc.pid, signal.SIGINT)
    code, out, err = _finish(proc, timeout=90)
    assert code == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    study = optuna.load_study(study_name="early", storage=make_storage(url))
    assert not study.get_trials(states=(TrialState.RUNNING,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    if not study.trials:
        assert "Interrupted before any trial started" in out
        assert "closed as FAIL" not in out and "No trial completed" not in out
    elif failed:
        assert f"Interrupted: the {len(failed)} trial(s) in training were closed" in out
    else:
        assert "Interrupted: no trial was in training" in out


@pytest.mark.slow
def test_a_failure_in_the_commands_own_trials_stops_its_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The command is worker 0: when its own trials fail (here: the storage is lost), it stops
    the worker processes (SIGTERM: they close their trials) and exits with the error."""
    from tuner.errors import StorageUnavailable

    stopped: list[tuple[list[Any], str]] = []
    real_stop = workers._stop

    def stop(procs: list[Any], how: str = "SIGINT") -> None:
        real_stop(procs, how)
        stopped.append((procs, how))

    def lost(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailable("storage gone for 60 s")

    monkeypatch.setattr(workers, "_stop", stop)
    monkeypatch.setattr(workers, "_train_here", lost)
    study_file = _study_file(tmp_path, "lost")
    monkeypatch.chdir(tmp_path)
    code = main(["tune", str(study_file), "--no-progress", "--no-confirm", "--workers", "2",
                 "--n-trials", "50"])
    err = capfd.readouterr().err
    assert code == 1 and "storage gone for 60 s" in err
    assert "Traceback" not in err
    [(procs, how)] = stopped
    assert how == "SIGTERM" and len(procs) == 1  # the one worker process of --workers 2
    assert all(p.exitcode is not None for p in procs)  # it has exited
    study = optuna.load_study(study_name="lost",
                              storage=make_storage(f"sqlite:///{tmp_path / 'tuner.db'}"))
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=FINISHED)) < 50


@pytest.mark.slow
def test_workers_each_train_a_batch_and_stop_at_exactly_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """--workers 2 --batch-trials 3: two processes, each three trials in lockstep (issue 12)."""
    study_file = _study_file(tmp_path, "compose")
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    monkeypatch.chdir(tmp_path)  # `tuner tune` called here; its workers are processes
    code = main(["tune", str(study_file), "--no-progress", "--no-confirm", "--workers", "2",
                 "--batch-trials", "3", "--n-trials", "13"])
    err = capfd.readouterr().err  # the workers' stderr too
    assert code == 0, err
    assert "Traceback" not in err
    study = _assert_exact(url, "compose", 13)
    owners = {t.user_attrs[WORKER_ATTR] for t in study.trials}
    assert len(owners) == 2  # work was shared
    assert f"{socket.gethostname()}:{os.getpid()}" in owners  # the command trains as worker 0


@pytest.mark.slow
def test_a_stopped_worker_drops_its_reaped_trials_and_goes_on(tmp_path: Path) -> None:
    """SIGSTOP past the grace period, reaped by another process, SIGCONT (issue 11.7)."""
    name = "stopped"
    study_file = _study_file(tmp_path, name, space=SLOW_TRIALS["space"])
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    gate = tmp_path / "gate"  # the two trials wait at their second epoch until it exists
    proc = _tune(study_file, "--heartbeat", "1", "--batch-trials", "2", "--n-trials", "4",
                 url=url, gate=gate)
    _wait_for_running(url, name, count=2)
    proc.send_signal(signal.SIGSTOP)
    reaper = optuna.load_study(study_name=name,
                               storage=make_storage(url, **heartbeat_kwargs(url, 1)))
    reaped: list[int] = []
    try:
        end = time.monotonic() + 60
        while not reaped and time.monotonic() < end:  # the heartbeats go stale: 3 s
            reaped = reap_stale_trials(reaper)
            time.sleep(0.25)
    finally:
        proc.send_signal(signal.SIGCONT)
        gate.touch()  # the reaped trials report their next epoch: they are dropped
    code, _, err = _finish(proc)
    assert reaped and code == 0, err
    assert "Traceback" not in err
    assert err.count("was closed by another process") == len(reaped)
    study = _assert_exact(url, name, 4)
    for number in reaped:
        assert study.trials[number].state == TrialState.FAIL
        assert study.trials[number].user_attrs[REASON_ATTR].startswith("no heartbeat")


def test_the_program_ignores_a_late_ctrl_c_once_its_work_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After main() of the program has done its work, a Ctrl-C cannot kill the exit (issue
    11.8); the program then exits at once with its status (tuner._private.exit_process)."""
    import tuner._private

    (tmp_path / "tiny.toml").write_text(_toml(tiny_study_dict()))
    monkeypatch.setattr(sys, "argv", ["tuner", "cleanup", str(tmp_path / "tiny.toml"),
                                      "--storage", str(tmp_path / "missing.db")])
    exits: list[tuple[int, object]] = []

    def exit_process(code: int):  # noqa: ANN202 - records instead of ending the test run
        exits.append((code, signal.getsignal(signal.SIGINT)))
        raise SystemExit(code)

    monkeypatch.setattr(tuner._private, "exit_process", exit_process)
    handler, term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit):
            main()
        assert exits == [(2, signal.SIG_IGN)]  # no such storage: exit 2, Ctrl-C ignored by then
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, term)
    assert main(["cleanup", str(tmp_path / "tiny.toml"), "--storage",
                 str(tmp_path / "missing.db")]) == 2  # called as a function: untouched
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_live_trial_here_is_not_reaped_by_a_shorter_heartbeat(tmp_path: Path) -> None:
    """`tuner cleanup --heartbeat 1` beside workers started with the default 10 s: a trial whose
    process runs on this machine is alive, however old its heartbeat looks at 1 s; a trial of
    a process that is gone is reaped."""
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    study = optuna.create_study(study_name="hb", storage=make_storage(
        url, **heartbeat_kwargs(url, 10)))
    live = study.ask()
    claim_trial(live)  # owned by this (running) process
    study._storage.record_heartbeat(live._trial_id)
    gone = study.ask()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    study._storage.set_trial_system_attr(
        gone._trial_id, reaping.OWNER_ATTR, f"{reaping._machine_key()}:{proc.pid}")
    study._storage.record_heartbeat(gone._trial_id)
    reaper = optuna.load_study(study_name="hb", storage=make_storage(
        url, **heartbeat_kwargs(url, 1)))
    deadline = time.monotonic() + 30
    while not reaper._storage._get_stale_trial_ids(reaper._study_id):  # both 3 s silent
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert reap_stale_trials(reaper) == [gone.number]
    states = {t.number: t.state for t in reaper.get_trials()}
    assert states[live.number] == TrialState.RUNNING and states[gone.number] == TrialState.FAIL


def test_a_signal_during_a_workers_exit_is_ignored() -> None:
    """The command forwards an interrupt to workers that may be exiting on the terminal's own
    Ctrl-C already: a SIGINT or SIGTERM that arrives during a worker's exit handlers neither
    prints a traceback nor changes its exit status."""
    script = (
        "import atexit, os, signal\n"
        "from tuner import workers\n"
        "atexit.register(os.kill, os.getpid(), signal.SIGINT)\n"
        "atexit.register(os.kill, os.getpid(), signal.SIGTERM)\n"
        "workers._exit_worker(130)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 130
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
