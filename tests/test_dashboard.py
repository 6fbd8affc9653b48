"""``tuner dashboard`` over HTTP: optuna-dashboard's API serves a tuner study with its note,
figures and trial notes, including trials with NaN/inf values and trials pruned before any
report; the CLI resolves the storage, prints the URL, and refuses what it cannot serve."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from dashboard_study import FinishedStudy, dashboard_server
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from tuner.cli import main
from tuner.dashboard import (
    DashboardError,
    dashboard_url,
    exposed_warning,
    is_loopback,
    open_server,
)
from tuner.dashboard_notes import AUTO_NOTE_MARKER, FIGURE_IDS, refresh_study_notes
from tuner.datasets import load_split
from tuner.storage import make_storage, resolve_storage_url
from tuner.study import trial_series


@pytest.fixture
def finished(finished_study: FinishedStudy) -> FinishedStudy:
    return finished_study


def _get_json(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=30) as response:
        # optuna-dashboard writes non-finite floats as strings; json also accepts NaN tokens
        return response.status, json.loads(response.read())


def _study_id(base: str, name: str) -> int:
    status, body = _get_json(f"{base}/api/studies")
    assert status == 200
    ids = {s["study_name"]: s["study_id"] for s in body["study_summaries"]}
    return ids[name]


def test_api_serves_the_study_with_note_figures_and_trial_notes(finished) -> None:
    with dashboard_server(finished.url) as base:
        study_id = _study_id(base, "dash_iris")
        status, detail = _get_json(f"{base}/api/studies/{study_id}")
        assert status == 200
        data = load_split(finished.cfg.dataset, finished.cfg.split)
        note = detail["note"]["body"]
        assert data.describe() in note and AUTO_NOTE_MARKER in note
        # two runs refreshed the figures: still exactly one of each
        graphs = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
        assert sorted(graphs) == sorted(FIGURE_IDS)
        assert graphs["tuner-metric-vs-lr"]["layout"]["xaxis"]["type"] == "log"
        diverged_x = [x for trace in graphs["tuner-diverged-trials"]["data"] for x in trace["x"]]
        assert diverged_x == [1000.0]

        trials = {t["number"]: t for t in detail["trials"]}
        assert "divergence guard" in trials[finished.diverged]["note"]["body"]
        assert "median pruner" in trials[finished.pruned]["note"]["body"]
        assert "before its first report" in trials[finished.no_report_trial]["note"]["body"]
        assert trials[finished.no_report_trial]["intermediate_values"] == []
        odd = [float(v["value"]) for v in trials[finished.nan_trial]["intermediate_values"]]
        assert math.isnan(odd[0]) and math.isinf(odd[1])
        assert detail["best_trials"][0]["number"] == finished.study.best_trial.number

        plots = ("contour", "slice", "parallel_coordinate", "rank", "edf", "timeline")
        for path in ("param_importances", *(f"plot/{p}" for p in plots)):
            with urllib.request.urlopen(f"{base}/api/studies/{study_id}/{path}") as r:
                assert r.status == 200
        with urllib.request.urlopen(f"{base}/dashboard/studies/{study_id}") as r:
            assert r.status == 200 and b"<html" in r.read().lower()


def test_journal_study_with_nan_values_loads(tiny_cfg, tmp_path) -> None:
    cfg = tiny_cfg()
    url = resolve_storage_url(cfg, str(tmp_path / "runs.journal"))
    assert url.startswith("journal:///")
    study = optuna.create_study(storage=make_storage(url), study_name=cfg.name)
    trial = study.ask({"lr": FloatDistribution(1e-4, 1.0, log=True)})
    trial.report(float("nan"), 1)
    trial.report(float("-inf"), 2)
    study.tell(trial, state=TrialState.PRUNED)
    study.tell(study.ask({"lr": FloatDistribution(1e-4, 1.0, log=True)}), state=TrialState.PRUNED)
    refresh_study_notes(study, cfg)
    with dashboard_server(url) as base:
        status, detail = _get_json(f"{base}/api/studies/{_study_id(base, cfg.name)}")
    assert status == 200
    assert "No complete trial yet." in detail["note"]["body"]
    assert sorted(g["id"] for g in detail["plotly_graph_objects"]) == sorted(FIGURE_IDS)
    assert [bool(t["note"]["body"]) for t in detail["trials"]] == [True, True]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_serves_a_study_file_given_relative_to_another_directory(finished, tmp_path) -> None:
    """``tuner dashboard ../x/STUDY.toml``: finds tuner.db next to it, binds loopback, prints
    the URL of the study's own page; the URL serves the study, and the study's per-epoch
    series are listed as artifacts of its trials."""
    study_file = Path(finished.cfg.path)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    relative = os.path.relpath(study_file, cwd)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPTUNA_STORAGE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "dashboard", relative, "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert f"sqlite:///{study_file.parent / 'tuner.db'}" in lines[0]
        assert "dash_iris" in lines[0]
        study_id = finished.study._study_id
        url = dashboard_url("127.0.0.1", port, study_id)
        assert url == f"http://127.0.0.1:{port}/dashboard/studies/{study_id}"
        assert f"open {url} " in lines[1]
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get_json(f"http://127.0.0.1:{port}/api/studies")
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        assert status == 200
        assert [s["study_name"] for s in body["study_summaries"]] == ["dash_iris"]
        # the series artifact of a trial is served from tuner.db.artifacts/
        study = _get_json(f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0")[1]
        trial = next(t for t in study["trials"] if t["number"] == 0)
        (artifact,) = trial["artifacts"]
        assert artifact["filename"] == "trial-0-series.json"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/artifacts/{study_id}/"
                                    f"{trial['trial_id']}/{artifact['artifact_id']}") as r:
            series = json.loads(r.read())
        assert len(series["lr_per_epoch"]) == finished.cfg.training.epochs
        assert series["lr_per_epoch"] == trial_series(finished.study.trials[0], "lr_per_epoch")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not (cwd / "studies").exists() and list(cwd.iterdir()) == []


def test_cli_missing_and_empty_storage(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard", "--storage", "nope.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuner: error: storage file ") and "nope.db does not exist" in err
    assert "Traceback" not in err
    (tmp_path / "empty.db").touch()
    assert main(["dashboard", "--storage", "empty.db"]) == 2
    assert "empty.db is empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_port_in_use_is_a_clear_error(tmp_path) -> None:
    storage = optuna.storages.InMemoryStorage()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DashboardError, match=rf"127.0.0.1:{port}: .*pass another --port"):
            open_server(storage, "127.0.0.1", port)
    with pytest.raises(DashboardError, match="70000"):
        open_server(storage, "127.0.0.1", 70000)


def test_server_binds_loopback_by_default() -> None:
    server = open_server(optuna.storages.InMemoryStorage(), port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
    assert dashboard_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/dashboard/"
    assert dashboard_url("::1", 9) == "http://[::1]:9/dashboard/"



@pytest.mark.postgres
def test_postgresql_study_with_notes_loads(tiny_cfg, postgres_url) -> None:
    cfg = tiny_cfg(study={"name": "tuner-dashboard-test"})
    storage = make_storage(postgres_url)
    study = optuna.create_study(storage=storage, study_name=cfg.name, load_if_exists=True)
    try:
        trial = study.ask({"lr": FloatDistribution(1e-4, 1.0, log=True)})
        trial.report(float("nan"), 1)
        study.tell(trial, state=TrialState.PRUNED)
        refresh_study_notes(study, cfg)
        with dashboard_server(postgres_url) as base:
            status, detail = _get_json(f"{base}/api/studies/{_study_id(base, cfg.name)}")
        assert status == 200
        assert f"## {cfg.name}" in detail["note"]["body"]
        assert sorted(g["id"] for g in detail["plotly_graph_objects"]) == sorted(FIGURE_IDS)
        assert "last reported value nan" in detail["trials"][0]["note"]["body"]
    finally:
        optuna.delete_study(study_name=cfg.name, storage=storage)


# A dashboard whose /slow request blocks (a long plot on a big study, say) until it is stopped.
SLOW_DASHBOARD = """
import sys, time
import optuna_dashboard
from tuner.cli import main

real = optuna_dashboard.wsgi

def wsgi(storage, **kwargs):
    app = real(storage, **kwargs)
    def slow(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            print("in request", flush=True)
            time.sleep(600)
        return app(environ, start_response)
    return slow

optuna_dashboard.wsgi = wsgi
sys.exit(main(sys.argv[1:]))
"""


def _dashboard_process(tmp_path: Path, *args: str) -> subprocess.Popen:
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    optuna.create_study(storage=url, study_name="dash")
    env = {k: v for k, v in os.environ.items() if k != "OPTUNA_STORAGE"}
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_DASHBOARD, "dashboard", "--storage", url, *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_ctrl_c_during_a_request_stops_the_dashboard_cleanly(tmp_path) -> None:
    port = _free_port()
    proc = _dashboard_process(tmp_path, "--port", str(port))
    try:
        assert "optuna-dashboard: open" in proc.stdout.readline() + proc.stdout.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(b"GET /slow HTTP/1.0\r\n\r\n")
            assert proc.stdout.readline() == "in request\n"  # the server is inside it
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    err = proc.stderr.read()
    assert code == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err == "dashboard stopped\n"  # one line; no warning for the loopback default


def test_a_non_loopback_bind_warns_once(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # free on every address, not only on loopback
        port = s.getsockname()[1]
    proc = _dashboard_process(tmp_path, "--host", "0.0.0.0", "--port", str(port))
    try:
        out = proc.stdout.readline() + proc.stdout.readline()
        assert "optuna-dashboard: open" in out, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    err = proc.stderr.read()
    assert code == 0, err
    assert err == exposed_warning("0.0.0.0", port) + "\ndashboard stopped\n"
    assert "no login" in err and "delete studies" in err


def test_loopback_addresses() -> None:
    for address in ("127.0.0.1", "127.0.1.1", "::1", "localhost"):
        assert is_loopback(address)
    for address in ("0.0.0.0", "::", "192.168.1.5", "10.0.0.1"):
        assert not is_loopback(address)
