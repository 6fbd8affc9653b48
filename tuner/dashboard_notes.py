"""What a study shows in optuna-dashboard: its note, its figures, and why trials were stopped.

:func:`refresh_study_notes` runs while ``tuner tune`` runs (when it starts, after its first
finished trial, then as often as costs at most 5 % of the run: :class:`LiveRefresh`) and at
its end; it sets the study's metric name (``validation accuracy``, so that optuna-dashboard's
plots do not say "Objective 0") and writes, through
optuna-dashboard's public API (which keeps them in the study's system attributes, so any Optuna
storage holds them: SQLite, journal file, PostgreSQL):

- the **study note** (``optuna_dashboard.save_note``, Markdown): the study file's settings, the
  dataset's size and classes, what the metric is, the best trial so far, the confirmation (the
  decision, how sure it is, the table; :func:`refresh_study_note` rewrites the note after
  ``tuner confirm`` and the confirmation that ends ``tuner tune``) and how to export it.
  It is rewritten at every run unless a person has edited it and removed its last line
  (:data:`AUTO_NOTE_MARKER`);
- three **figures** (``optuna_dashboard.save_plotly_graph_object``, ids in :data:`FIGURE_IDS`,
  so a refresh replaces them instead of adding copies), built by :mod:`tuner.figures`: the
  final metric against the learning rate, the learning-rate curves of the top trials, and the
  diverged trials with the learning rate and step at which they diverged;
- a **trial note** on every pruned or diverged trial that has none yet: the step, the
  loss and the rule that stopped it (from the user attributes ``pruned_reason`` and
  ``divergence`` that :func:`tuner.study.record_result` writes). Existing trial notes, including
  a person's, are never overwritten.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from tuner import figures
from tuner._private import dashboard_module
from tuner.config import GENERATOR_KEYS, StudyConfig
from tuner.datasets import DATASETS, SplitData, describe_source, load_split
from tuner.shared_reads import study_attrs_together
from tuner.storage import set_study_system_attrs
from tuner.study import completed, trial_kind, trial_series
from tuner.summary import nonfinite_line, state_counts

# optuna-dashboard's note and figure writers, without its web server (tuner/_private.py)
_note = dashboard_module("_note")
_plots = dashboard_module("_custom_plot_data")
get_note_from_system_attrs, note_ver_key, split_body = (
    _note.get_note_from_system_attrs, _note.note_ver_key, _note.split_body)

__all__ = [
    "AUTO_NOTE_MARKER",
    "FIGURE_IDS",
    "LiveRefresh",
    "NotesRefresh",
    "metric_name",
    "metric_description",
    "refresh_study_note",
    "refresh_study_notes",
    "study_note",
    "trial_note",
]

AUTO_NOTE_MARKER = (
    "*tuner rewrites this note at the end of every run; delete this line to keep your edits.*"
)

# graph_object_id -> figure builder; stable ids, so a refresh replaces each figure in place
FIGURE_IDS: dict[str, Callable[[optuna.Study, StudyConfig], go.Figure]] = {
    "tuner-metric-vs-lr": lambda s, c: figures.metric_vs_lr(s, c.objective.metric),
    "tuner-lr-curves": lambda s, c: figures.lr_curves(s),
    "tuner-diverged-trials": lambda s, c: figures.diverged_trials(s),
}

METRIC_TEXT = {
    "accuracy": "the fraction of validation rows classified correctly",
    "loss": (
        "the mean validation loss (cross-entropy for classification, mean squared error on "
        "standardized targets for regression)"
    ),
    "rmse": "the root mean squared error on the validation rows, in the target's units",
}


@dataclass(frozen=True)
class NotesRefresh:
    """What :func:`refresh_study_notes` wrote: the study note (or not), figure ids, trial notes."""

    study_note: bool
    figures: tuple[str, ...]
    trial_notes: tuple[int, ...]


def metric_name(cfg: StudyConfig) -> str:
    """The study's metric as optuna-dashboard labels it: ``validation accuracy``, ...``RMSE``."""
    m = cfg.objective.metric
    return f"validation {'RMSE' if m == 'rmse' else m}"


def metric_description(cfg: StudyConfig) -> str:
    """One sentence: the metric, what it measures and its direction."""
    m = cfg.objective.metric
    return f"validation {m}: {METRIC_TEXT[m]} ({cfg.direction})"


def _toml_value(value: Any) -> str:
    # JSON scalars and arrays of str/int/float/bool are valid TOML; a table ([model] kwargs)
    # is written as an inline table
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    return json.dumps(value)


# settings that only apply to some choices: shown only where they do
_APPLIES: dict[tuple[str, str], Callable[[StudyConfig], bool]] = {
    **{("dataset", k): (lambda c, k=k: c.dataset.name is not None
                        and k in DATASETS[c.dataset.name].tuner_keys) for k in GENERATOR_KEYS},
    ("pruner", "min_resource"): lambda c: c.pruner.name in ("successive_halving", "hyperband"),
    ("pruner", "reduction_factor"): lambda c: c.pruner.name in ("successive_halving", "hyperband"),
    ("pruner", "n_startup_trials"): lambda c: c.pruner.name == "median",
    ("pruner", "n_warmup_steps"): lambda c: c.pruner.name == "median",
}


def _settings_toml(cfg: StudyConfig) -> str:
    """The study file's effective settings (defaults filled in) as TOML."""
    lines: list[str] = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [
            f"{k} = {_toml_value(v)}"
            for k, v in values.items()
            if v is not None and _APPLIES.get((section, k), lambda c: True)(cfg)
        ]
        lines.append("")
    return "\n".join(lines).rstrip()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def study_note(study: optuna.Study, cfg: StudyConfig, data: SplitData) -> str:
    """The study's Markdown note: settings, dataset, metric, best trial, figures, export."""
    counts = state_counts(study).trials
    tally = ", ".join(
        f"{counts.get(k, 0)} {k}" for k in ("complete", "pruned", "diverged", "failed")
    )
    lines = [
        f"## {cfg.name}",
        "",
        f"Study file `{cfg.path}`. Trials so far: {tally}.",
        "",
        "### Dataset",
        f"{describe_source(cfg.dataset)}: {data.describe()}. "
        f"Split {cfg.split.train:g} / {cfg.split.validation:g} / {cfg.split.test:g} "
        f"(seed {cfg.split.seed}"
        + (", stratified" if data.task == "classification" else "")
        + "); features standardized with the training part's mean and deviation.",
        "",
        "### Metric",
        f"The objective is the **{metric_description(cfg)}**, reported after every epoch "
        "(the trial's intermediate values; step = epoch). A trial's value is its last epoch's; "
        "the test metric (user attribute `test_metric`) is measured once, at the end of a "
        "complete trial, and never used for the search.",
        "",
    ]
    best = completed(study)
    unranked = nonfinite_line(study)
    if best:
        t = best[0]
        params = ", ".join(f"`{k}` = {_fmt(v)}" for k, v in t.params.items())
        test = t.user_attrs.get("test_metric")
        lines += [
            "### Best trial",
            f"Trial {t.number}: validation {cfg.objective.metric} **{t.value:.4g}**"
            + (f", test {_fmt(test)}" if test is not None else "")
            + f". {params}.",
            "",
        ]
    else:
        finite = " with a finite value" if unranked else ""
        lines += ["### Best trial", f"No complete trial{finite} yet.", ""]
    if unranked:
        lines[-1:-1] = ["", unranked]
    lines += _confirmation_lines(study, cfg)
    lines += [
        "### Figures",
        "- **Validation metric against learning rate** (log axis), coloured by schedule; "
        "open circles are pruned trials at their last report.",
        "- **Learning-rate schedules of the top trials**: the learning rate at each epoch.",
        "- **Diverged trials**: the learning rate of each and the optimizer step at which its "
        "loss blew up. Pruned and diverged trials carry a note that says why they stopped.",
        "",
        "### Export",
        f"`tuner export {cfg.path}` (or `make export STUDY={cfg.path}`) writes "
        f"`{cfg.name}.best.json` next to the study file: the optimizer and schedule as "
        "`torch.optim` / `torch.optim.lr_scheduler` classes with their arguments.",
        "",
        "### Settings",
        "```toml",
        _settings_toml(cfg),
        "```",
        "",
        AUTO_NOTE_MARKER,
    ]
    return "\n".join(lines)


def _confirmation_lines(study: optuna.Study, cfg: StudyConfig) -> list[str]:
    """The note's Confirmation section: the decision and how sure it is, then the table."""
    from tuner.confirm import (
        confirmation_is_current,
        decision_text,
        fmt_comparison,
        fmt_mean_std,
        fmt_peak,
        load_confirmation,
    )

    payload = load_confirmation(study)
    if payload is None:
        return []
    single = payload["single_best_trial"]
    lines = ["### Confirmation", decision_text(payload), ""]
    if not confirmation_is_current(payload, study, cfg):
        lines += ["*Out of date: the study's top trials or settings changed since; run "
                  f"`tuner confirm {cfg.path}` again.*", ""]
    lines += [
        f"| rank | trial | validation mean ± std (runs) | Δ vs #{single} [95% CI] p (n) | "
        "test mean ± std | diverged | peak loss | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in payload["candidates"]:
        lines.append(
            f"| {c['rank']} | {c['trial']} | {fmt_mean_std(c['val_mean'], c['val_std'])} "
            f"({c['n_runs']}) | {fmt_comparison(c.get('comparison'))} | "
            f"{fmt_mean_std(c['test_mean'], c['test_std'])} | {c['n_diverged']} | "
            f"{fmt_peak(c)} | {c.get('verdict', '')} |"
        )
    factor = cfg.divergence.factor
    lines += [
        "",
        "Δ: challenger minus single best on the same seeds; p: one-sided paired t-test that "
        "the challenger is better. Peak loss: the largest mini-batch loss over the first "
        f"one, over the runs; `!` above half the divergence factor ({factor:g}x). The test "
        "metric never chooses.",
        "",
    ]
    return lines


def _divergence_rule(div: dict[str, Any]) -> str:
    reason = div.get("reason")
    if reason == "nan":
        return "divergence guard: the loss became NaN"
    if reason == "inf":
        return "divergence guard: the loss became infinite"
    factor, initial = div.get("factor"), div.get("initial_loss")
    try:
        limit = f" = {float(factor) * float(initial):.4g}"
    except (TypeError, ValueError):
        limit = ""
    return (
        f"divergence guard: the loss exceeded `[divergence] factor` = {_fmt(factor)} x the "
        f"initial loss {_fmt(initial)}{limit}"
    )


def _pruner_rule(cfg: StudyConfig) -> str:
    p = cfg.pruner
    if p.name == "successive_halving":
        return (
            f"successive-halving pruner (min_resource = {p.min_resource} epoch, "
            f"reduction_factor = {p.reduction_factor}): at each rung only the best "
            f"1/{p.reduction_factor} of the trials that reached it go on"
        )
    if p.name == "hyperband":
        return (
            f"Hyperband pruner (min_resource = {p.min_resource} epoch, reduction_factor = "
            f"{p.reduction_factor}, max_resource = {cfg.training.epochs} epochs): at each rung "
            f"only the best 1/{p.reduction_factor} of the trials in its bracket go on"
        )
    if p.name == "median":
        return (
            f"median pruner (n_startup_trials = {p.n_startup_trials}, n_warmup_steps = "
            f"{p.n_warmup_steps}): its best value so far was worse than the median of earlier "
            "trials at the same epoch"
        )
    return "pruned (no pruner is configured now; the study file may have changed since)"


def _last(values: Any) -> Any:
    return values[-1] if isinstance(values, list) and values else None


def _lr_line(t: FrozenTrial) -> str:
    p = t.params
    if "lr" not in p:
        return ""
    return (
        f"| learning rate | {p['lr']:.4g} ({p.get('optimizer', '?')}, schedule "
        f"{p.get('schedule', '?')}) |"
    )


def trial_note(trial: FrozenTrial, cfg: StudyConfig) -> str | None:
    """The Markdown note that says why a pruned or diverged trial stopped, else None."""
    kind = trial_kind(trial)
    attrs = trial.user_attrs
    metric = cfg.objective.metric
    if kind == "diverged":
        div = attrs["divergence"]
        rows = [
            f"| rule | {_divergence_rule(div)} |",
            f"| step | optimizer step {div.get('step')} (epoch {div.get('epoch')}) |",
            f"| loss | {_fmt(div.get('loss'))} (initial {_fmt(div.get('initial_loss'))}) |",
            _lr_line(trial),
        ]
        head = (
            f"### Trial {trial.number}: diverged\n\n"
            f"Stopped by the divergence guard: {div.get('message', div.get('reason'))}. It ends "
            "PRUNED, not FAILED, so that the sampler learns where divergence begins."
        )
    elif kind == "pruned":
        steps = sorted(trial.intermediate_values)
        if "pruned_reason" not in attrs:  # not recorded by tuner's objective
            where = (
                f"after step {steps[-1]} (last reported value "
                f"{_fmt(trial.intermediate_values[steps[-1]])})"
                if steps
                else "before its first report"
            )
            return (
                f"### Trial {trial.number}: pruned\n\nPruned {where}; no reason was recorded "
                "(tuner's objective did not run this trial to its end)."
            )
        epoch = attrs.get("epochs_run", steps[-1] if steps else "?")
        value = trial.intermediate_values.get(steps[-1]) if steps else attrs.get("val_metric")
        train_loss = _last(trial_series(trial, "train_loss_per_epoch"))
        rows = [
            f"| rule | {_pruner_rule(cfg)} |",
            f"| step | epoch {epoch} (optimizer step {attrs.get('steps', '?')}) |",
            f"| validation {metric} | {_fmt(value)} |",
            f"| loss | training {_fmt(train_loss)}, validation {_fmt(attrs.get('val_loss'))} |",
            _lr_line(trial),
        ]
        head = f"### Trial {trial.number}: pruned\n\n{attrs['pruned_reason']}."
    else:
        return None
    table = "\n".join(["| | |", "| --- | --- |", *[r for r in rows if r]])
    return f"{head}\n\n{table}"


def _save_new_trial_notes(study: optuna.Study, cfg: StudyConfig) -> list[int]:
    """Write the note of every pruned trial that has never had one; their numbers.

    optuna-dashboard's ``save_note``/``get_note`` read all of the study's system attributes on
    every call (every note and figure chunk), which is quadratic over a study's trials: on a
    500-trial SQLite study, 10 s for the trial notes alone against 3.5 s for this whole refresh
    (``bench/bench_dashboard_notes.py``). So the attributes are read once here, and a trial
    that never had a note (version 0) gets version 1 and its body, exactly as ``save_note``
    writes a first note, through optuna-dashboard's own key and chunk helpers.
    """
    storage, study_id = study._storage, study._study_id
    attrs = storage.get_study_system_attrs(study_id)
    written: list[int] = []
    new: dict[str, object] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        if get_note_from_system_attrs(attrs, t._trial_id)["version"] > 0:
            continue  # written before, by tuner or by a person (even if emptied since)
        body = trial_note(t, cfg)
        if body is None:
            continue
        new[note_ver_key(t._trial_id)] = 1
        new.update(split_body(body, t._trial_id))
        written.append(t.number)
    set_study_system_attrs(study, new)  # one transaction, not one per chunk
    return written


def refresh_study_note(
    study: optuna.Study, cfg: StudyConfig, data: SplitData | None = None
) -> bool:
    """Rewrite only the study note (after a confirmation), unless a person has edited it.

    Returns:
        True if the note was (re)written.
    """
    current = _note.get_note(study)
    if current.strip() and AUTO_NOTE_MARKER not in current:
        return False
    data = data if data is not None else load_split(cfg.dataset, cfg.split)
    body = study_note(study, cfg, data)
    if body != current:
        _note.save_note(study, body)
    return True


def refresh_study_notes(
    study: optuna.Study, cfg: StudyConfig, data: SplitData | None = None
) -> NotesRefresh:
    """Write the study note, the figures and the missing trial notes (see the module doc).

    Args:
        study: the study, on any Optuna storage.
        cfg: its validated study file.
        data: the split (default: ``load_split`` of the study file, cached).

    Returns:
        What was written. Safe to call any number of times: figures are replaced in place, a
        person's edits to the study note (marker line removed) and every existing trial note
        are kept.
    """
    name = metric_name(cfg)
    if study.metric_names != [name]:  # the dashboard's axes say this instead of "Objective 0"
        study.set_metric_names([name])
    with study_attrs_together(study):  # a few dozen attribute chunks: one transaction
        write_note = refresh_study_note(study, cfg, data)
        for graph_id, build in FIGURE_IDS.items():
            _plots.save_plotly_graph_object(
                study, build(study, cfg), graph_object_id=graph_id
            )
        written = _save_new_trial_notes(study, cfg)
    return NotesRefresh(write_note, tuple(FIGURE_IDS), tuple(written))


class LiveRefresh:
    """Refresh the note, figures and trial notes while a study runs, at a bounded cost.

    Call :meth:`start` when the run starts, then the instance after every finished trial
    (or poll): it refreshes ``min_interval_s`` after the start, then only once the time since
    the last refresh is at least :data:`COST_FACTOR` times what that refresh took (and at least
    ``min_interval_s``). So refreshing takes at most 1 / (1 + COST_FACTOR) = 5 % of the run's
    wall time, however large the study grows; a small study refreshes every
    ``min_interval_s`` seconds.

    Args:
        study, cfg, data: as for :func:`refresh_study_notes`.
        min_interval_s: seconds between refreshes at least.
        clock: seconds, monotonic (tests pass their own).
    """

    COST_FACTOR = 19.0

    def __init__(
        self,
        study: optuna.Study,
        cfg: StudyConfig,
        data: SplitData | None = None,
        *,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.study, self.cfg, self.data = study, cfg, data
        self.min_interval_s, self.clock = min_interval_s, clock
        self.next_at: float | None = None  # None: refresh at the next call
        self.count = 0  # refreshes so far

    def start(self) -> None:
        """At the start of a run: the study note (and the metric's name) at once; the
        figures and trial notes at the first call ``min_interval_s`` later, or at the end (a
        new study has no trial to plot yet, and building the figures costs a plotly import)."""
        name = metric_name(self.cfg)
        if self.study.metric_names != [name]:
            self.study.set_metric_names([name])
        refresh_study_note(self.study, self.cfg, self.data)
        self.next_at = self.clock() + self.min_interval_s

    def refresh(self) -> float:
        """Refresh now (:func:`refresh_study_notes`); the seconds it took."""
        start = self.clock()
        refresh_study_notes(self.study, self.cfg, self.data)
        self.count += 1
        cost = self.clock() - start
        self.next_at = self.clock() + max(self.min_interval_s, self.COST_FACTOR * cost)
        return cost

    def __call__(self) -> bool:
        """Refresh if it is time (see the class doc); True if it did."""
        if self.next_at is not None and self.clock() < self.next_at:
            return False
        self.refresh()
        return True
