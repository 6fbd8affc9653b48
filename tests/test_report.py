"""The HTML report: self-contained, every figure, atomic, redacted, PNGs, opens in Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import IN_CI
from optuna.trial import TrialState

from tests._trust import (
    FAKE_PASSWORD,
    FAKE_PG_URL,
    add_told_trial,
    all_pruned_study,
    fixed_params,
    make_cfg,
    trained_study,
)
from tuner.confirm import run_confirm
from tuner.errors import NoCompletedTrialError
from tuner.outputs import MARKER, OutputError
from tuner.report import ReportError, find_browser, report_figures, write_report

FIGURES = ("optimization_history", "metric_vs_lr", "learning_curves", "lr_curves",
           "param_importances", "states", "diverged", "confirmation")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A small finished study: complete trials, a pruned one, a diverged one, a confirmation."""
    cfg = make_cfg(tmp_path_factory.mktemp("report"))
    study = trained_study(cfg, [
        fixed_params("cosine"),
        fixed_params("warmup_cosine", lr=0.02),
        fixed_params("plateau", lr=0.1),
    ])
    add_told_trial(study, cfg, fixed_params("step", lr=0.003), 0.5, TrialState.PRUNED)
    add_told_trial(study, cfg, fixed_params("constant", lr=0.3), 0.3, TrialState.PRUNED,
                   divergence={"reason": "nan", "step": 3, "epoch": 1, "loss": "nan"})
    run_confirm(study, cfg, top=2, seeds=2, progress=False)
    return study, cfg


def chromium() -> str:
    """The Chromium to drive; skips locally without one, fails in CI (.ci/run installs it)."""
    path = os.environ.get("TUNER_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).is_file():
        if IN_CI:
            pytest.fail(f"CI=true but no Chromium at {path} (.ci/run installs Debian's chromium)")
        pytest.skip(f"no Chromium at {path}: apt-get install chromium, or set TUNER_CHROMIUM")
    return path


def test_report_has_every_figure_inline_and_no_password(finished, tmp_path: Path) -> None:
    study, cfg = finished
    out = write_report(study, cfg, FAKE_PG_URL, tmp_path / "r", png=False)
    assert out.html == tmp_path / "r" / "report.html" and out.pngs == ()
    page = out.html.read_text(encoding="utf-8")
    for name in FIGURES:
        assert f'id="fig-{name}"' in page
    assert "<script src=" not in page.replace("<script src=\"data:", "")  # nothing fetched
    assert "Plotly.newPlot" in page and len(page) > 3_000_000  # plotly.js is inlined
    assert "postgresql://tuner_user:***@db.example.org" in page
    assert FAKE_PASSWORD not in page
    assert "Confirmation changed the winner" not in page  # that is the console's wording
    assert "confirmed winner" in page


def test_report_replaces_an_old_report_atomically(finished, tmp_path: Path) -> None:
    study, cfg = finished
    target = tmp_path / "reports" / "tiny"
    write_report(study, cfg, "sqlite:///x.db", target, png=False)
    (target / "confirmation.png").write_bytes(b"old")  # a figure of an earlier report
    write_report(study, cfg, "sqlite:///x.db", target, png=False)
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "report.html"]
    assert [p.name for p in target.parent.iterdir()] == ["tiny"]  # no temporary folder left


def test_report_refuses_a_folder_it_did_not_write(finished, tmp_path: Path) -> None:
    study, cfg = finished
    target = tmp_path / "mine"
    target.mkdir()
    (target / "stale.png").write_bytes(b"not a report figure")
    (target / "tuner.db").write_bytes(b"SQLite format 3\x00")
    with pytest.raises(OutputError, match=r"mine holds 'stale.png', which is not part of a tuner "
                       r"report.*choose a new or empty folder"):
        write_report(study, cfg, "sqlite:///x.db", target, png=False)
    assert sorted(p.name for p in target.iterdir()) == ["stale.png", "tuner.db"]
    assert (target / "stale.png").read_bytes() == b"not a report figure"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_a_browser_variable_naming_nothing_is_reported(finished, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    study, cfg = finished
    monkeypatch.setenv("TUNER_CHROMIUM", "/nope")
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr("tuner.report.BROWSER_NAMES", ())  # none on the PATH either
    warnings: list[str] = []
    out = write_report(study, cfg, "sqlite:///x.db", tmp_path / "r", warn=warnings.append)
    assert out.html.is_file() and out.pngs == ()
    assert len(warnings) == 2
    assert warnings[0].startswith("$TUNER_CHROMIUM=/nope does not exist; ignoring it")
    assert "no Chromium found" in warnings[1]
    (tmp_path / "not-exec").write_text("")
    monkeypatch.setenv("TUNER_CHROMIUM", str(tmp_path / "not-exec"))
    warnings.clear()
    write_report(study, cfg, "sqlite:///x.db", tmp_path / "r", warn=warnings.append)
    assert "not-exec is not an executable file" in warnings[0]
    assert find_browser() is None
    # with --no-png there is nothing to warn about
    warnings.clear()
    write_report(study, cfg, "sqlite:///x.db", tmp_path / "r", png=False, warn=warnings.append)
    assert warnings == []


def test_all_pruned_study_reports_nothing(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "study")
    study = all_pruned_study(cfg)
    with pytest.raises(NoCompletedTrialError, match="nothing to report"):
        write_report(study, cfg, "sqlite:///x.db", tmp_path / "reports" / "tiny", png=False)
    assert not (tmp_path / "reports").exists()


def test_report_default_folder_is_next_to_the_study(finished) -> None:
    study, cfg = finished
    out = write_report(study, cfg, "sqlite:///x.db", png=False)
    assert out.folder == cfg.study_dir / "reports" / "tiny"


def test_report_without_confirmation_says_how_to_confirm(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    study = trained_study(cfg, [fixed_params("cosine")])
    assert "confirmation" not in report_figures(study, cfg)
    out = write_report(study, cfg, "sqlite:///x.db", tmp_path / "r", png=False)
    assert "Not confirmed: run <code>tuner confirm" in out.html.read_text()


def test_pngs_skipped_with_a_warning_without_a_browser(finished, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    study, cfg = finished
    monkeypatch.setattr("tuner.report.find_browser", lambda: None)
    warnings: list[str] = []
    out = write_report(study, cfg, "sqlite:///x.db", tmp_path / "r", warn=warnings.append)
    assert out.pngs == () and out.html.is_file()
    assert len(warnings) == 1 and "no Chromium found" in warnings[0]


def test_failing_browser_writes_nothing(finished, tmp_path: Path) -> None:
    study, cfg = finished
    with pytest.raises(ReportError, match="PNG export with kaleido"):
        write_report(study, cfg, "sqlite:///x.db", tmp_path / "r", browser="/bin/false")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.browser
def test_pngs_are_written(finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNER_CHROMIUM", chromium())
    assert find_browser() == os.environ["TUNER_CHROMIUM"]
    study, cfg = finished
    out = write_report(study, cfg, "sqlite:///x.db", tmp_path / "r")
    assert sorted(p.stem for p in out.pngs) == sorted(FIGURES)
    for png in out.pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
def test_report_opens_in_headless_chromium_without_errors(finished, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    study, cfg = finished
    out = write_report(study, cfg, FAKE_PG_URL, tmp_path / "r", png=False)
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.html.as_uri(), wait_until="load")
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(FIGURES)}",
                timeout=30_000,
            )
            rendered = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
            text = page.inner_text("body")
        finally:
            browser.close()
    assert problems == []
    assert requests == [out.html.as_uri()]  # self-contained: nothing else was fetched
    assert rendered == len(FIGURES)
    assert "tuner report: tiny" in text and FAKE_PASSWORD not in text


def test_metric_vs_lr_colours_by_schedule(finished) -> None:
    fig = report_figures(*finished)["metric_vs_lr"]
    colours: dict[str, set[str]] = {}
    for trace in fig.data:
        colours.setdefault(trace.legendgroup, set()).add(trace.marker.color)
    assert fig.layout.xaxis.type == "log"
    assert all(len(c) == 1 for c in colours.values())  # complete and pruned: same colour
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # one per schedule


def test_report_never_shows_a_non_finite_trial_as_best(tmp_path: Path) -> None:
    import math

    import optuna

    cfg = make_cfg(tmp_path)
    study = optuna.create_study(study_name=cfg.name, direction=cfg.direction)
    for i, v in enumerate([0.8, float("inf"), 0.9]):
        add_told_trial(study, cfg, fixed_params("constant", lr=0.01 * (i + 1)), v)
    figs = report_figures(study, cfg)
    for trace in figs["optimization_history"].data:  # trials and the best-so-far line
        assert all(math.isfinite(y) for y in trace.y), trace.name
    best_line = [t for t in figs["optimization_history"].data if t.name == "Best Value"]
    assert max(best_line[0].y) == 0.9
    assert [t for t in figs["metric_vs_lr"].data for y in t.y if not math.isfinite(y)] == []
    text = write_report(study, cfg, "sqlite:///x.db", tmp_path / "r", png=False).html.read_text()
    assert "#2: validation accuracy 0.9000" in text
    assert "not ranked" in text and "#1 (inf)" in text


def test_report_learning_curves_show_every_trial_with_a_legend(finished) -> None:
    study, cfg = finished
    fig = report_figures(study, cfg)["learning_curves"]
    assert fig.layout.showlegend is True
    traces = {t.text: t for t in fig.data if isinstance(t.text, str)}
    for t in study.trials:  # one trace per trial that reported, complete and pruned alike
        assert any(text.startswith(f"trial {t.number} ") for text in traces), t.number
    pruned = traces[f"trial {study.trials[3].number} (pruned)"]  # pruned after one report
    assert pruned.mode == "markers" and pruned.showlegend and pruned.name == "pruned (1)"
    (mark,) = [t for t in fig.data if t.name == "divergence (1)"]
    assert list(mark.x) == [1] and "step 3" in mark.text[0]  # where it diverged
    values = [v for t in study.trials for v in t.intermediate_values.values()]
    lo, hi = fig.layout.yaxis.range
    assert lo < min(values) and max(values) < hi


def test_report_importances_say_on_how_many_trials_or_why_not(finished) -> None:
    from tuner.figures import IMPORTANCE_MIN_TRIALS

    study, cfg = finished
    fig = report_figures(study, cfg)["param_importances"]
    assert len(study.trials) < IMPORTANCE_MIN_TRIALS
    assert fig.data == ()  # no bars from 5 trials
    assert f"need {IMPORTANCE_MIN_TRIALS} trials" in fig.layout.annotations[0].text


def test_report_confirmation_table_fits_its_rows(finished) -> None:
    from tuner.report import TABLE_LINE, png_size

    study, cfg = finished
    fig = report_figures(study, cfg)["confirmation"]
    (table,) = fig.data
    configs = table.cells.values[-1]
    assert len(configs) == 2 and all("<br>" in c for c in configs)  # one part per line
    lines = max(c.count("<br>") + 1 for c in configs)
    assert table.cells.height >= lines * TABLE_LINE  # no row cut
    margin = fig.layout.margin
    assert fig.layout.height >= (margin.t + margin.b + table.header.height
                                 + len(configs) * table.cells.height)
    assert png_size(fig) == {"width": 1000, "height": fig.layout.height}  # the PNG is that tall
    assert png_size(report_figures(study, cfg)["states"]) == {"width": 1000, "height": 560}


def test_report_diverged_figure_has_whole_steps(finished) -> None:
    study, cfg = finished
    fig = report_figures(study, cfg)["diverged"]
    assert fig.layout.yaxis.dtick == 1 and fig.layout.yaxis.tickformat == "d"
    (trace,) = fig.data
    assert trace.name == "sgd (1)" and [c[0] for c in trace.customdata] == [3]
