"""``tuner report``: one self-contained HTML page of a study, plus PNG copies of its figures.

The page (``studies/reports/<study name>/report.html`` by default) opens without network
access: plotly's JavaScript is inlined once in its ``<head>`` and no figure loads anything from a
CDN (no MathJax). Figures, in order:

1. optimization history (``optuna.visualization.plot_optimization_history``);
2. final validation metric against learning rate on a log axis, coloured by schedule;
3. learning curves (intermediate values) of every trial, divergences marked, with a legend;
4. the learning-rate curves of the top trials (the schedules actually applied, per epoch);
5. parameter importances (:func:`tuner.figures.param_importances`: PED-ANOVA on the metric at a
   common epoch of complete and pruned trials, shown only on enough trials);
6. trials, epochs and wall seconds per state (complete / pruned / diverged / failed);
7. diverged trials: learning rate against the step where the loss blew up;
8. the confirmed top-K table (``tuner confirm``), when the study has one.

PNG copies (``<figure name>.png``) are rendered by plotly's static export, kaleido, which drives
a Chromium: ``$TUNER_CHROMIUM``, ``$BROWSER_PATH`` or ``chromium`` / ``google-chrome`` on the
PATH (Debian: ``apt-get install chromium``). Without one, the PNGs are skipped with a warning
and the HTML is still written; with one that fails, nothing is written.

Everything is written into a temporary folder next to the target and swapped into place at the
end (:func:`tuner.outputs.write_folder`), so a report folder is never half-written. An existing
``--out`` folder is replaced only when it is empty or holds a previous report (its marker
``.tuner-output`` plus ``report.html`` and figure PNGs); any other folder (``--out .``, a
folder of study files) is refused and left untouched. Storage URLs appear with their password
redacted.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from tuner.config import StudyConfig
from tuner.confirm import (
    confirmation_is_current,
    decision_text,
    fmt_comparison,
    fmt_mean_std,
    fmt_peak,
    load_confirmation,
    no_complete_message,
)
from tuner.errors import NoCompletedTrialError, TunerError
from tuner.figures import (
    diverged_trials,
    learning_curves,
    lr_curves,
    metric_vs_lr,
    param_importances,
)
from tuner.outputs import FolderKind, check_folder_target, write_folder
from tuner.space import TrialParams
from tuner.storage import redact_url
from tuner.study import completed, nonfinite_trials
from tuner.summary import KINDS, nonfinite_line, state_counts

__all__ = [
    "ReportError",
    "ReportOutcome",
    "BROWSER_ENV",
    "default_report_dir",
    "browser_env_warnings",
    "find_browser",
    "report_figures",
    "render_html",
    "write_report",
]

BROWSER_ENV = ("TUNER_CHROMIUM", "BROWSER_PATH")
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PNG_SIZE = {"width": 1000, "height": 560}
TOP_LR_CURVES = 5


class ReportError(TunerError):
    """The report cannot be written (e.g. PNG rendering failed); nothing was written."""


@dataclass(frozen=True)
class ReportOutcome:
    """Where the report went: the folder, the HTML file, the PNGs, and why PNGs were skipped."""

    folder: Path
    html: Path
    pngs: tuple[Path, ...]
    png_skipped: str | None = None


def default_report_dir(cfg: StudyConfig) -> Path:
    """``<folder of the study file>/reports/<study name>`` (git-ignored)."""
    return cfg.study_dir / "reports" / cfg.name


def browser_env_warnings() -> list[str]:
    """One line per browser variable that is set but names no executable file (it is
    ignored; :func:`find_browser` goes on to the next place)."""
    out = []
    for var in BROWSER_ENV:
        path = os.environ.get(var)
        if path and not (Path(path).is_file() and os.access(path, os.X_OK)):
            what = "does not exist" if not os.path.exists(path) else "is not an executable file"
            out.append(f"${var}={path} {what}; ignoring it (set it to a Chromium executable)")
    return out


def find_browser() -> str | None:
    """The Chromium that renders PNGs: ``$TUNER_CHROMIUM``, ``$BROWSER_PATH``, then the PATH."""
    for var in BROWSER_ENV:
        path = os.environ.get(var)
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# Figures.


def _without_nonfinite(study: optuna.Study) -> optuna.Study:
    """``study`` itself, or an in-memory copy in which its COMPLETE trials of value +-inf are
    FAIL (Optuna's plots would draw them as the best so far); trial numbers are kept."""
    bad = {t.number for t in nonfinite_trials(study)}
    if not bad:
        return study
    trials = []
    for t in study.get_trials(deepcopy=True):
        if t.number in bad:
            t.state, t.values = TrialState.FAIL, None
        trials.append(t)
    copy = optuna.create_study(study_name=study.study_name, direction=study.direction)
    copy.add_trials(trials)
    return copy


def _history(study: optuna.Study, metric: str) -> go.Figure:
    fig = optuna.visualization.plot_optimization_history(
        _without_nonfinite(study), target_name=f"validation {metric}"
    )
    fig.update_layout(title="Optimization history (complete trials and the best so far)")
    return fig


def _states(study: optuna.Study) -> go.Figure:
    counts = state_counts(study)
    kinds = [k for k in KINDS if counts.trials.get(k)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("trials", "epochs run", "wall seconds"))
    colours = {"complete": "#2ca02c", "pruned": "#ff7f0e", "diverged": "#d62728",
               "failed": "#7f7f7f", "running": "#1f77b4"}
    for col, values in enumerate((counts.trials, counts.epochs, counts.seconds), start=1):
        fig.add_trace(
            go.Bar(
                x=kinds,
                y=[values.get(k, 0) for k in kinds],
                marker_color=[colours.get(k, "#1f77b4") for k in kinds],
                showlegend=False,
            ),
            row=1, col=col,
        )
    fig.update_layout(title="Trials and compute per state")
    return fig


# The confirmation table's geometry (pixels). Plotly tables do not grow with their text: a cell
# taller than its row is cut, and a wrapped name breaks at any character. So each row gets the
# height of its longest cell (configurations go one part per line), and the figure the height
# of all rows; the widths fit the longest header word at TABLE_FONT.
TABLE_FONT = 12
TABLE_LINE = 18  # one line of text at TABLE_FONT
TABLE_PAD = 10  # above and below a cell's text
TABLE_MARGIN = {"l": 20, "r": 20, "t": 70, "b": 20}


def _lines(text: str) -> int:
    return text.count("<br>") + 1


def _confirmation_figure(payload: Mapping[str, Any]) -> go.Figure:
    """The confirmed top-K as a table whose height fits every row (no row cut in the PNG)."""
    metric = payload["metric"]
    rows = payload["candidates"]
    single = payload["single_best_trial"]
    header = ["rank", "trial", "single run", f"val {metric}<br>mean ± std",
              f"Δ vs #{single}<br>[95% CI] p (n)", f"test {metric}<br>mean ± std", "diverged",
              "peak loss", "verdict", "configuration"]
    config = [
        "<br>".join(TrialParams.from_optuna_params(c["params"]).describe().split(" | "))
        for c in rows
    ]
    cells = [
        [c["rank"] for c in rows],
        [f"#{c['trial']}" for c in rows],
        [f"{c['single_value']:.4f}" for c in rows],
        [fmt_mean_std(c["val_mean"], c["val_std"]) for c in rows],
        [fmt_comparison(c.get("comparison")) for c in rows],
        [fmt_mean_std(c["test_mean"], c["test_std"]) for c in rows],
        [f"{c['n_diverged']}/{c['n_runs']}" for c in rows],
        [fmt_peak(c) for c in rows],
        [c.get("verdict", "") for c in rows],
        config,
    ]
    row_height = TABLE_LINE * max([_lines(str(t)) for col in cells for t in col] + [1]) + TABLE_PAD
    header_height = TABLE_LINE * 2 + TABLE_PAD
    height = (TABLE_MARGIN["t"] + TABLE_MARGIN["b"] + header_height + row_height * len(rows)
              + TABLE_PAD)
    fig = go.Figure(
        go.Table(
            columnwidth=[35, 45, 60, 110, 170, 110, 55, 60, 90, 300],
            header={"values": header, "align": "left", "fill_color": "#e8e8e8",
                    "height": header_height, "font": {"size": TABLE_FONT}},
            cells={"values": cells, "align": "left", "height": row_height,
                   "font": {"size": TABLE_FONT}},
        )
    )
    fig.update_layout(
        title=f"Confirmed top {payload['top_k']}: {payload['n_seeds']} fresh seeds each, "
        f"compared with single-best #{single} on the same seeds (test never used to choose)",
        height=height,
        margin=TABLE_MARGIN,
    )
    return fig


def report_figures(study: optuna.Study, cfg: StudyConfig) -> dict[str, go.Figure]:
    """The report's figures by file name (without ``.png``), in page order.

    Raises:
        NoCompletedTrialError: the study has no COMPLETE trial.
    """
    if not completed(study):
        raise NoCompletedTrialError(no_complete_message(study, "report"))
    metric = cfg.objective.metric
    figs: dict[str, go.Figure] = {
        "optimization_history": _history(study, metric),
        "metric_vs_lr": metric_vs_lr(study, metric),
        "learning_curves": learning_curves(study, metric),
        "lr_curves": lr_curves(study, TOP_LR_CURVES),
        "param_importances": param_importances(study, metric),
        "states": _states(study),
        "diverged": diverged_trials(study),
    }
    payload = load_confirmation(study)
    if payload is not None:
        figs["confirmation"] = _confirmation_figure(payload)
    return figs


# ---------------------------------------------------------------------------------------------
# The page.

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }
table.kv { border-collapse: collapse; } table.kv td { padding: 2px 12px 2px 0; }
table.kv td:first-child { color: #555; }
.note { color: #8a5a00; }
"""


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    return f'<table class="kv">{body}</table>'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else str(v)
    return "n/a" if v is None else str(v)


def _summary_html(study: optuna.Study, cfg: StudyConfig, storage_url: str) -> str:
    best = completed(study)[0]
    counts = state_counts(study)
    metric = cfg.objective.metric
    rows = [
        ("study file", str(cfg.path)),
        ("storage", redact_url(storage_url)),
        ("objective", f"validation {metric} ({cfg.direction})"),
        ("trials", ", ".join(f"{counts.trials[k]} {k}" for k in KINDS if counts.trials.get(k))),
        ("best single trial", f"#{best.number}: validation {metric} {_fmt(best.value)}, test "
                              f"{_fmt(best.user_attrs.get('test_metric'))} (held out)"),
        ("its configuration", TrialParams.from_optuna_params(best.params).describe()),
    ]
    unranked = nonfinite_line(study)
    if unranked:
        rows.append(("not ranked", unranked))
    parts = [_kv_table(rows)]
    payload = load_confirmation(study)
    if payload is None:
        parts.append(
            '<p class="note">Not confirmed: run <code>tuner confirm '
            f"{html.escape(str(cfg.path))}</code> to retrain the top configurations with fresh "
            "seeds.</p>"
        )
    else:
        winner = payload["candidates"][0]
        single = next(
            (c for c in payload["candidates"] if c["trial"] == payload["single_best_trial"]),
            winner,
        )
        changed = (
            f"yes: trial #{winner['trial']} replaces #{single['trial']}"
            if payload["changed_winner"] else f"no: trial #{winner['trial']} stays the winner"
        )
        crows = [
            ("seeds", f"{payload['n_seeds']} fresh seeds per configuration "
                      f"({payload['seeds'][0]}..{payload['seeds'][-1]})"
                      + (f", {len(payload['extra_seeds'])} more for close calls (up to "
                         f"{payload['max_seeds']})" if payload.get("extra_seeds") else "")
                      + f", full {payload['epochs']} epochs, no pruning"),
            ("single-best trial", f"#{single['trial']}: {_fmt(single['single_value'])} (one "
                                  f"seed) -> {fmt_mean_std(single['val_mean'], single['val_std'])}"
                                  " confirmed"),
            ("confirmed winner", f"#{winner['trial']}: validation "
                                 f"{fmt_mean_std(winner['val_mean'], winner['val_std'])}, test "
                                 f"{fmt_mean_std(winner['test_mean'], winner['test_std'])}"),
            ("confirmation changed the winner", changed),
            ("decision", decision_text(payload)),
        ]
        parts.append("<h2>Confirmation</h2>" + _kv_table(crows))
        if not confirmation_is_current(payload, study, cfg):
            parts.append(
                '<p class="note">This confirmation is out of date: the study\'s top trials or '
                "settings changed since; run <code>tuner confirm</code> again.</p>"
            )
    return "\n".join(parts)


FIGURE_TITLES = {
    "optimization_history": "Optimization history",
    "metric_vs_lr": "Validation metric against learning rate",
    "learning_curves": "Learning curves (pruned: dotted, diverged: dashed, x: divergence)",
    "lr_curves": "Learning-rate curves of the top trials",
    "param_importances": "Parameter importances",
    "states": "Trials and compute per state",
    "diverged": "Diverged trials",
    "confirmation": "Confirmed top-K",
}


def render_html(
    study: optuna.Study, cfg: StudyConfig, storage_url: str, figs: Mapping[str, go.Figure]
) -> str:
    """The report page as one HTML string with plotly's JavaScript inlined (no network)."""
    from plotly.offline import get_plotlyjs

    sections = []
    for name, fig in figs.items():
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            div_id=f"fig-{name}",
            config={"displaylogo": False, "responsive": True},
        )
        title = html.escape(FIGURE_TITLES.get(name, name))
        sections.append(f'<section id="{name}"><h2>{title}</h2>\n{div}\n</section>')
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    name = html.escape(study.study_name)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>tuner report: {name}</title>\n<style>{STYLE}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"<h1>tuner report: {name}</h1>\n<p>written {stamp}</p>\n"
        f"{_summary_html(study, cfg, storage_url)}\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------
# Writing.


def png_size(fig: go.Figure) -> dict[str, int]:
    """The PNG's size in pixels: the figure's own width/height where set (the confirmation
    table grows with its rows), else :data:`PNG_SIZE`."""
    return {k: int(fig.layout[k] or v) for k, v in PNG_SIZE.items()}


def _write_pngs(figs: Mapping[str, go.Figure], folder: Path, browser: str) -> list[Path]:
    import kaleido

    paths = [folder / f"{name}.png" for name in figs]
    jobs = [
        {"fig": fig, "path": str(path), "opts": png_size(fig)}
        for fig, path in zip(figs.values(), paths, strict=True)
    ]
    try:
        kaleido.write_fig_from_object_sync(
            jobs, kopts={"path": browser, "mathjax": False}, cancel_on_error=True
        )
    except Exception as exc:  # kaleido and choreographer raise many kinds
        raise ReportError(
            f"PNG export with kaleido and {browser} failed: {type(exc).__name__}: {exc}; "
            f"rerun with --no-png to write the HTML only, or point $TUNER_CHROMIUM at a "
            f"working Chromium."
        ) from None
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ReportError(f"PNG export with kaleido and {browser} wrote no {missing[0]}.")
    return [p for p in paths]


def _owns(name: str) -> bool:
    """The entries a report folder holds: ``report.html`` and ``<figure>.png``."""
    return name == "report.html" or (name.endswith(".png") and name[:-4] in FIGURE_TITLES)


def _is_legacy_report(folder: Path) -> bool:
    """An unmarked report folder from before the marker: its ``report.html`` is a tuner page."""
    try:
        with open(folder / "report.html", encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith("<!DOCTYPE html>") and "<title>tuner report: " in head


REPORT_KIND = FolderKind("report", _owns, _is_legacy_report)


def write_report(
    study: optuna.Study,
    cfg: StudyConfig,
    storage_url: str,
    out: Path | None = None,
    *,
    png: bool = True,
    browser: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> ReportOutcome:
    """Write ``report.html`` and ``<figure>.png`` files into ``out``, atomically.

    Args:
        study: a study with at least one COMPLETE trial.
        cfg: its study file.
        storage_url: shown on the page with its password redacted.
        out: the report folder; default ``studies/reports/<study name>``. An existing report
            there is replaced as a whole; an empty folder is used; any other folder is refused.
        png: False to write the HTML only.
        browser: the Chromium for PNGs (default :func:`find_browser`).
        warn: called with a message when PNGs are skipped for want of a browser, and when
            ``$TUNER_CHROMIUM`` / ``$BROWSER_PATH`` name no executable.

    Raises:
        NoCompletedTrialError: the study has no COMPLETE trial (nothing is written).
        ReportError: PNG rendering failed (nothing is written).
        OutputError: ``out`` is a file or a folder holding anything but a previous report
            (nothing is written).
    """
    figs = report_figures(study, cfg)  # raises before anything touches the disk
    page = render_html(study, cfg, storage_url, figs)
    target = Path(out) if out is not None else default_report_dir(cfg)
    check_folder_target(target, REPORT_KIND)  # before any PNG work
    skipped: str | None = None
    if png:
        if browser is None and warn is not None:
            for message in browser_env_warnings():
                warn(message)
        browser = browser or find_browser()
        if browser is None:
            skipped = (
                "no Chromium found for the PNG copies ($TUNER_CHROMIUM, $BROWSER_PATH or "
                "chromium on the PATH; Debian: apt-get install chromium); wrote the HTML only"
            )
            if warn is not None:
                warn(skipped)
    else:
        skipped = "--no-png"

    def build(folder: Path) -> list[Path]:
        (folder / "report.html").write_text(page, encoding="utf-8")
        return _write_pngs(figs, folder, browser) if (png and browser) else []

    pngs = write_folder(target, build, REPORT_KIND)
    return ReportOutcome(
        folder=target,
        html=target / "report.html",
        pngs=tuple(target / p.name for p in pngs),
        png_skipped=skipped,
    )
