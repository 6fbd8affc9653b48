"""End to end in a real browser: optuna-dashboard over a finished tuner study, in headless
Chromium (Debian's package, driven by Playwright; never ``playwright install``).

The study list shows the study; its page shows the best value and tuner's three figures; the
trial list shows a pruned trial with the note that says why; the note page shows the study's
note. While a new study's first run is still going (held after its first trial), its page
already shows tuner's figures and the metric's name, a trial lists its per-epoch series as an
artifact instead of long user attributes, and a diverged trial says so. Screenshots go to
``tests/artifacts/`` (git-ignored), and their paths are printed.

Skips locally without Chromium (set TUNER_CHROMIUM to its path); fails when CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import IN_CI
from dashboard_study import STUDY_TOML, FinishedStudy, dashboard_server
from optuna.trial import TrialState

import tuner.dashboard_notes
from tuner.config import load_study_config
from tuner.datasets import load_split
from tuner.runner import run_tune
from tuner.study import open_study

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIGURE_TITLES = (
    "Validation accuracy against learning rate",
    "Learning-rate schedules of the top 5 trials",
    "Diverged trials: learning rate and the step where the loss blew up",
)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason} (.ci/run installs chromium and sets TUNER_CHROMIUM)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = os.environ.get("TUNER_CHROMIUM", "/usr/bin/chromium")
    if not (Path(executable).is_file() or shutil.which(executable)):
        _unavailable(f"no Chromium at {executable} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _shot(page, name: str) -> Path:  # noqa: ANN001
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_dashboard_shows_the_study_in_chromium(browser, finished_study: FinishedStudy) -> None:
    study = finished_study.study
    errors: list[str] = []
    with dashboard_server(finished_study.url) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(30_000)

        # the study list
        page.goto(f"{base}/dashboard/")
        link = page.get_by_role("link", name=re.compile(r"dash_iris"))
        link.wait_for()
        _shot(page, "dashboard_studies")

        # the study's page: best value and the three figures tuner saved
        link.click()
        page.wait_for_url(re.compile(r"/dashboard/studies/\d+$"))
        study_path = page.url.removeprefix(base)
        best = page.get_by_text("Best Trial", exact=False).first
        best.wait_for()
        for graph_id in ("tuner-metric-vs-lr", "tuner-lr-curves", "tuner-diverged-trials"):
            page.locator(f'[id="user-defined-plot:{graph_id}"] .main-svg').first.wait_for()
        text = page.inner_text("body")
        assert f"Best Trial (number={study.best_trial.number})" in text
        assert repr(study.best_value) in text  # the dashboard prints the full double
        for title in FIGURE_TITLES:
            assert title in text
        shot = _shot(page, "dashboard")

        # the trial list, on the pruned trial: its state and the note that says why
        page.goto(f"{base}{study_path}/trials?numbers={finished_study.pruned}")
        page.get_by_text(f"Trial {finished_study.pruned}: pruned").wait_for()
        text = page.inner_text("body")
        assert "Pruned" in text and "median pruner" in text and "lagged behind" in text
        _shot(page, "dashboard_pruned_trial")

        page.goto(f"{base}{study_path}/trials?numbers={finished_study.diverged}")
        page.get_by_text(f"Trial {finished_study.diverged}: diverged").wait_for()
        assert "divergence guard" in page.inner_text("body")

        # the study's note
        page.goto(f"{base}{study_path}/note")
        page.get_by_text("Trials so far").wait_for()
        text = page.inner_text("body")
        data = load_split(finished_study.cfg.dataset, finished_study.cfg.split)
        assert data.describe() in text
        assert f"tuner export {finished_study.cfg.path}" in text
        assert 'name = "dash_iris"' in text
        _shot(page, "dashboard_note")
        page.close()
    assert errors == []
    assert shot.stat().st_size > 10_000


GRAPH_IDS = ("tuner-metric-vs-lr", "tuner-lr-curves", "tuner-diverged-trials")


def test_the_dashboard_shows_tuners_figures_during_a_run(
    browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new study's first run, held right after the live refresh that follows a finished
    trial (so the page is looked at while the run is still going)."""
    path = tmp_path / "dash_iris.toml"
    path.write_text(STUDY_TOML.replace("n_trials = 4", "n_trials = 6"))
    cfg = load_study_config(path)
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    study = open_study(cfg, url)
    study.enqueue_trial({"lr": 1000.0, "optimizer": "sgd", "schedule": "constant",
                         "optimizer.momentum": 0.9, "optimizer.nesterov": False})  # diverges
    study.enqueue_trial({"lr": 0.05, "optimizer": "adam", "schedule": "constant"})

    held, release = threading.Event(), threading.Event()
    real = tuner.dashboard_notes.LiveRefresh.__call__

    def hold_after_two_trials(self) -> bool:  # noqa: ANN001
        did = real(self)
        finished = self.study.get_trials(deepcopy=False,
                                         states=(TrialState.COMPLETE, TrialState.PRUNED))
        if did and len(finished) >= 2 and not held.is_set():
            held.set()
            assert release.wait(timeout=120), "the browser check never finished"
        return did

    monkeypatch.setattr(tuner.dashboard_notes.LiveRefresh, "__call__", hold_after_two_trials)
    # refresh after every trial (a clock that stands still): the hold comes after the second
    monkeypatch.setattr(tuner.dashboard_notes.LiveRefresh, "__init__", _no_min_interval(
        tuner.dashboard_notes.LiveRefresh.__init__))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_tune(cfg, url, progress=False, batch_trials=1)
        except BaseException as exc:  # noqa: BLE001 (reported by the test below)
            errors.append(exc)
            held.set()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        assert held.wait(timeout=120) and not errors, errors
        live = optuna.load_study(study_name=cfg.name, storage=url)
        running = live.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        assert len(running) == 2 < cfg.study.n_trials  # the run is not over
        diverged, complete = running
        with dashboard_server(url) as base:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/dashboard/studies/{live._study_id}")
            for graph_id in GRAPH_IDS:
                page.locator(f'[id="user-defined-plot:{graph_id}"] .main-svg').first.wait_for()
            page.get_by_text("validation accuracy").first.wait_for()
            text = page.inner_text("body")
            for title in FIGURE_TITLES:
                assert title in text
            assert "Objective 0" not in text  # the metric has its name
            _shot(page, "dashboard_during_run")

            # a complete trial: short user attributes, the series as an artifact
            page.goto(f"{base}/dashboard/studies/{live._study_id}/trials"
                      f"?numbers={complete.number}")
            page.get_by_text(f"trial-{complete.number}-series.json").first.wait_for()
            text = page.inner_text("body")
            assert "outcome complete" in text
            assert "lr_per_epoch" not in text and "train_loss_per_epoch" not in text
            _shot(page, "dashboard_during_run_trial")

            # a diverged trial: PRUNED for the sampler, but says diverged at a glance
            page.goto(f"{base}/dashboard/studies/{live._study_id}/trials"
                      f"?numbers={diverged.number}")
            page.get_by_text(f"Trial {diverged.number}: diverged").wait_for()
            assert "outcome diverged" in page.inner_text("body")
            _shot(page, "dashboard_during_run_diverged")
            page.close()
    finally:
        release.set()
        runner.join(timeout=120)
    assert not errors, errors
    assert not runner.is_alive()


def _no_min_interval(init):  # noqa: ANN001, ANN202
    def patched(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        init(self, *args, **{**kwargs, "min_interval_s": 0.0, "clock": lambda: 0.0})
    return patched
