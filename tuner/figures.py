"""Plotly figures of a study, shared by the HTML report and the dashboard.

Each function takes a finished (or running) ``optuna.Study`` and returns a
``plotly.graph_objects.Figure``; none of them raises on an empty study, NaN or infinite
intermediate values, or trials pruned before any report.
"""

from __future__ import annotations

import math
from collections import defaultdict

import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from tuner.study import completed, trial_kind

__all__ = ["metric_vs_lr", "lr_curves", "diverged_trials", "learning_curves"]


def _final_value(t: FrozenTrial) -> float | None:
    """The trial's value, or its last finite intermediate value for a pruned trial; None for a
    COMPLETE trial whose value is not finite (it is never ranked, see tuner.study.completed)."""
    if t.state == TrialState.COMPLETE:
        return t.value if t.value is not None and math.isfinite(t.value) else None
    finite = [v for _, v in sorted(t.intermediate_values.items()) if math.isfinite(v)]
    return finite[-1] if finite else None


def metric_vs_lr(study: optuna.Study, metric: str = "value") -> go.Figure:
    """Final validation metric against learning rate (log axis), coloured by schedule.

    Complete trials are filled circles; pruned trials (their last reported value) open circles.
    Diverged trials have no metric and are left to :func:`diverged_trials`.
    """
    groups: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        kind = trial_kind(t)
        value = _final_value(t)
        if kind == "diverged" or value is None or "lr" not in t.params:
            continue
        groups[(t.params.get("schedule", "?"), kind)].append((t.params["lr"], value, t.number))
    fig = go.Figure()
    palette = plotly.colors.qualitative.Plotly
    colour = {s: palette[i % len(palette)] for i, s in enumerate(sorted({s for s, _ in groups}))}
    for (schedule, kind), points in sorted(groups.items()):
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="markers",
                name=f"{schedule} ({kind})",
                legendgroup=schedule,
                text=[f"trial {p[2]}" for p in points],
                marker={"symbol": "circle" if kind == "complete" else "circle-open", "size": 9,
                        "color": colour[schedule]},  # one colour per schedule, either state
            )
        )
    fig.update_layout(
        title=f"Validation {metric} against learning rate",
        xaxis={"title": "learning rate (log)", "type": "log"},
        yaxis={"title": f"validation {metric}"},
    )
    return fig


def lr_curves(study: optuna.Study, k: int = 5) -> go.Figure:
    """The learning rate applied at each epoch by the top ``k`` complete trials."""
    fig = go.Figure()
    for t in completed(study)[:k]:
        lrs = t.user_attrs.get("lr_per_epoch") or []
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(lrs) + 1)),
                y=lrs,
                mode="lines+markers",
                name=f"#{t.number} {t.params.get('schedule', '?')} ({t.value:.4g})",
            )
        )
    fig.update_layout(
        title=f"Learning-rate schedules of the top {k} trials",
        xaxis={"title": "epoch"},
        yaxis={"title": "learning rate (log)", "type": "log"},
    )
    return fig


def diverged_trials(study: optuna.Study) -> go.Figure:
    """Diverged trials: learning rate against the optimizer step at which they diverged."""
    by_opt: dict[str, list[tuple[float, int, str, int]]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        div = t.user_attrs.get("divergence")
        if not div or "lr" not in t.params:
            continue
        by_opt[t.params.get("optimizer", "?")].append(
            (t.params["lr"], int(div.get("step", 0)), str(div.get("reason", "")), t.number)
        )
    fig = go.Figure()
    for opt, points in sorted(by_opt.items()):
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="markers",
                name=opt,
                text=[f"trial {p[3]}: {p[2]}" for p in points],
                marker={"symbol": "x", "size": 10},
            )
        )
    fig.update_layout(
        title="Diverged trials: learning rate and the step where the loss blew up",
        xaxis={"title": "learning rate (log)", "type": "log"},
        yaxis={"title": "optimizer step at divergence"},
    )
    return fig


def learning_curves(study: optuna.Study, metric: str = "value") -> go.Figure:
    """Intermediate values (validation metric per epoch) of every trial.

    Complete trials are solid lines, pruned ones dotted; diverged trials end in an 'x' at the
    epoch they diverged. Non-finite values are left out of the lines.
    """
    fig = go.Figure()
    for t in study.get_trials(deepcopy=False):
        kind = trial_kind(t)
        items = [(s, v) for s, v in sorted(t.intermediate_values.items()) if math.isfinite(v)]
        style = {"complete": "solid", "pruned": "dot"}.get(kind, "dash")
        fig.add_trace(
            go.Scatter(
                x=[s for s, _ in items],
                y=[v for _, v in items],
                mode="lines+markers" if kind == "diverged" else "lines",
                name=f"#{t.number} {kind}",
                line={"dash": style, "width": 1.5 if kind == "complete" else 1},
                marker={"symbol": "x"} if kind == "diverged" else None,
                opacity=1.0 if kind == "complete" else 0.5,
            )
        )
    fig.update_layout(
        title=f"Learning curves (validation {metric} per epoch)",
        xaxis={"title": "epoch"},
        yaxis={"title": f"validation {metric}"},
        showlegend=False,
    )
    return fig
