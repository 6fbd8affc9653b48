"""End to end in a real browser: optuna-dashboard over a finished tuner study, in headless
Chromium (Debian's package, driven by Playwright; never ``playwright install``).

The study list shows the study; its page shows the best value and tuner's three figures; the
trial list shows a pruned trial with the note that says why; the note page shows the study's
note. Screenshots go to ``tests/artifacts/`` (git-ignored), and their paths are printed.

Skips locally without Chromium (set TUNER_CHROMIUM to its path); fails when CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI
from dashboard_study import FinishedStudy, dashboard_server

from tuner.datasets import load_split

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
