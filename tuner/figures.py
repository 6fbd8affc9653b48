"""Plotly figures of a study, shared by the HTML report and the dashboard.

Each function takes a finished (or running) ``optuna.Study`` and returns a
``plotly.graph_objects.Figure``; none of them raises on an empty study, NaN or infinite
intermediate values, or trials pruned before any report.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict

import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from tuner.study import completed, trial_kind, trial_series

__all__ = ["metric_vs_lr", "lr_curves", "diverged_trials", "learning_curves", "param_importances"]


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
        lrs = trial_series(t, "lr_per_epoch")
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


def _integer_axis(values: list[int]) -> dict[str, object]:
    """Axis settings for integer data (steps, epochs): whole-number ticks, no half steps."""
    lo, hi = (min(values), max(values)) if values else (1, 1)
    axis: dict[str, object] = {"tickformat": "d", "range": [lo - 0.5, hi + 0.5]}
    if hi - lo <= 10:
        axis.update(tick0=0, dtick=1)  # plotly's automatic ticks would put 0.5 steps here
    return axis


# Diverged trials that share an optimizer step are drawn side by side (not on top of each
# other): optimizer i of n is moved by (i - (n - 1) / 2) * DODGE steps; the hover text and the
# integer ticks give the true step.
DODGE = 0.12


def diverged_trials(study: optuna.Study) -> go.Figure:
    """Diverged trials: learning rate (log x) against the optimizer step at which they diverged.

    One trace per optimizer (legend: its name and count). Steps are integers: the y axis has
    whole-number ticks; each optimizer's markers sit a fixed fraction of a step off the tick
    (:data:`DODGE`) and are half transparent, so trials at the same step and a similar rate stay
    visible. The hover text gives the trial, its exact step and the reason.
    """
    by_opt: dict[str, list[tuple[float, int, str, int]]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        div = t.user_attrs.get("divergence")
        if not div or "lr" not in t.params:
            continue
        by_opt[t.params.get("optimizer", "?")].append(
            (t.params["lr"], int(div.get("step", 0)), str(div.get("reason", "")), t.number)
        )
    fig = go.Figure()
    n_opt = len(by_opt)
    for i, (opt, points) in enumerate(sorted(by_opt.items())):
        offset = (i - (n_opt - 1) / 2) * DODGE
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] + offset for p in points],
                mode="markers",
                name=f"{opt} ({len(points)})",
                customdata=[[p[1], p[3], p[2]] for p in points],
                hovertemplate="trial %{customdata[1]}: lr %{x:.3g}, step %{customdata[0]} "
                "(%{customdata[2]})<extra>" + opt + "</extra>",
                marker={"symbol": "x", "size": 11, "opacity": 0.65,
                        "line": {"width": 1, "color": "white"}},
            )
        )
    n = sum(len(p) for p in by_opt.values())
    steps = [p[1] for points in by_opt.values() for p in points]
    fig.update_layout(
        title=f"Diverged trials: learning rate and the step where the loss blew up ({n} trials)",
        xaxis={"title": "learning rate (log)", "type": "log"},
        yaxis={"title": "optimizer step at divergence", **_integer_axis(steps)},
        legend={"title": {"text": "optimizer (trials)"}},
    )
    return fig


# Divergence marks of one epoch are spread over MARK_SPREAD of its width on the x axis (and on
# two rows), in trial order; the hover text gives the trial, its step and epoch.
MARK_SPREAD = 0.6
LEGEND_RANK = {"complete": 1, "pruned": 2, "running": 3, "failed": 4, "diverged": 5}
CURVE_COLOURS = {"pruned": "#ff7f0e", "diverged": "#d62728", "running": "#1f77b4",
                 "waiting": "#7f7f7f", "failed": "#7f7f7f"}


def learning_curves(study: optuna.Study, metric: str = "value") -> go.Figure:
    """Intermediate values (validation metric per epoch) of every trial, with a legend.

    Complete trials are solid lines, one legend entry each (trial number and value); pruned
    trials are dotted orange lines, diverged ones dashed red, one legend entry per kind (a click
    hides or shows the whole kind). A trial with a single reported value (pruned at its first
    epoch) is a marker. Every diverged trial is an 'x' at the epoch it diverged in, in a strip
    under the curves (those that diverged before their first report have only that), spread
    across the width of that epoch so that none hides another. Non-finite values are left out;
    the y range spans exactly the finite values drawn.
    """
    fig = go.Figure()
    palette = plotly.colors.qualitative.Plotly
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    kinds = {t.number: trial_kind(t) for t in trials}
    counts: dict[str, int] = defaultdict(int)
    for k in kinds.values():
        counts[k] += 1
    shown: set[str] = set()
    ys: list[float] = []
    epochs: list[int] = []
    marks: dict[int, list[FrozenTrial]] = defaultdict(list)  # divergence epoch -> trials
    n_complete = 0
    for t in trials:
        kind = kinds[t.number]
        items = [(s, v) for s, v in sorted(t.intermediate_values.items()) if math.isfinite(v)]
        ys += [v for _, v in items]
        epochs += [s for s, _ in items]
        div = t.user_attrs.get("divergence") if kind == "diverged" else None
        if div:
            marks[int(div.get("epoch") or (items[-1][0] + 1 if items else 1))].append(t)
        if not items:
            continue
        if kind == "complete":
            colour = palette[n_complete % len(palette)]
            n_complete += 1
            name = f"#{t.number} ({t.value:.4g})" if t.value is not None else f"#{t.number}"
            legend = {"legendgroup": "complete", "showlegend": True,
                      "legendgrouptitle": {"text": f"complete ({counts['complete']})"}}
        else:
            colour = CURVE_COLOURS.get(kind, "#7f7f7f")
            name = f"{kind} ({counts[kind]})"
            legend = {"legendgroup": kind, "showlegend": kind not in shown}
            shown.add(kind)
        fig.add_trace(
            go.Scatter(
                x=[s for s, _ in items],
                y=[v for _, v in items],
                mode="lines" if len(items) > 1 else "markers",
                name=name,
                text=f"trial {t.number} ({kind})",
                hovertemplate="%{text}: epoch %{x}, %{y:.4g}<extra></extra>",
                line={"dash": {"complete": "solid", "diverged": "dash"}.get(kind, "dot"),
                      "color": colour, "width": 2 if kind == "complete" else 1},
                marker={"color": colour, "size": 7 if kind == "complete" else 6,
                        "symbol": "circle" if kind == "complete" else "circle-open"},
                opacity=1.0 if kind == "complete" else 0.6,
                legendrank=LEGEND_RANK.get(kind, 6),
                **legend,
            )
        )
    if marks:
        xs, ys2, text = [], [], []
        for epoch, group in sorted(marks.items()):
            for k, t in enumerate(group):  # spread over their epoch: none hides another
                div = t.user_attrs["divergence"]
                xs.append(epoch + (k / (len(group) - 1) - 0.5) * MARK_SPREAD
                          if len(group) > 1 else epoch)
                ys2.append(0.3 if k % 2 else 0.7)
                text.append(f"trial {t.number} diverged at step {div.get('step')} (epoch "
                            f"{epoch}): {div.get('reason')}")
            epochs.append(epoch)
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys2, yaxis="y2", mode="markers", text=text,
                name=f"divergence ({len(xs)})", legendgroup="diverged",
                legendrank=LEGEND_RANK["diverged"],
                hovertemplate="%{text}<extra></extra>",
                marker={"symbol": "x", "size": 8, "color": CURVE_COLOURS["diverged"],
                        "opacity": 0.7},
            )
        )
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1.0)
    x_axis = {"title": "epoch", **_integer_axis(epochs)}
    y_axis: dict[str, object] = {"title": f"validation {metric}", "range": [lo - pad, hi + pad]}
    if marks:
        x_axis["anchor"] = "y2"  # the epoch ticks go under the strip
        y_axis["domain"] = [0.2, 1.0]
        fig.update_layout(yaxis2={"domain": [0.0, 0.13], "range": [0, 1], "showticklabels": False,
                                  "showgrid": False, "zeroline": False,
                                  "title": {"text": "diverged", "font": {"size": 11}}})
    fig.update_layout(
        title=f"Learning curves (validation {metric} per epoch) of all {len(trials)} trials",
        xaxis=x_axis,
        yaxis=y_axis,
        showlegend=True,
        legend={"groupclick": "togglegroup"},
    )
    return fig


# Parameter importances. Optuna's default evaluator, PED-ANOVA, says which parameters matter to
# reach the top ``IMPORTANCE_QUANTILE`` of the trials; its documentation asks for "at least 5
# trials above target_quantile" to be stable. With the top quarter that makes 20 trials, and
# the same 20 for each parameter (a conditional one such as schedule.min_lr_ratio exists only
# in the trials of its schedule). Most trials of a pruned study never complete, so importances
# are computed on what every trial reported: the validation metric at one common epoch, the
# last epoch that at least IMPORTANCE_MIN_TRIALS trials (complete or pruned) reached.
IMPORTANCE_QUANTILE = 0.25
IMPORTANCE_MIN_TOP = 5  # PED-ANOVA's documented minimum of trials above the quantile
IMPORTANCE_MIN_TRIALS = math.ceil(IMPORTANCE_MIN_TOP / IMPORTANCE_QUANTILE)  # 20


def importance_epoch(study: optuna.Study) -> tuple[int | None, list[FrozenTrial]]:
    """The common epoch the importances use, and the trials with a finite value there.

    The epoch is the last one at which at least :data:`IMPORTANCE_MIN_TRIALS` complete or
    pruned trials reported a finite value; (None, []) when no epoch has that many.
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    reached: dict[int, list[FrozenTrial]] = defaultdict(list)
    for t in trials:
        for step, v in t.intermediate_values.items():
            if math.isfinite(v):
                reached[step].append(t)
    for step in sorted(reached, reverse=True):
        if len(reached[step]) >= IMPORTANCE_MIN_TRIALS:
            return step, reached[step]
    return None, []


def _note(fig: go.Figure, title: str, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def param_importances(study: optuna.Study, metric: str = "value") -> go.Figure:
    """Parameter importances (PED-ANOVA, Optuna's default) of the validation metric at a common
    epoch (:func:`importance_epoch`), over complete and pruned trials alike.

    The title gives the epoch, the number of trials (complete / pruned) and the quantile; each
    bar is labelled with the number of trials that have the parameter. Parameters found in
    fewer than :data:`IMPORTANCE_MIN_TRIALS` of them are left out and named under the plot.
    Below that many trials at every epoch, or when all their values are equal, the figure is
    a note saying so instead of bars.
    """
    from optuna.importance import PedAnovaImportanceEvaluator

    base = "Parameter importances"
    epoch, trials = importance_epoch(study)
    if epoch is None:
        n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        return _note(go.Figure(), base, (
            f"not shown: they need {IMPORTANCE_MIN_TRIALS} trials with a value at a common "
            f"epoch<br>(at least {IMPORTANCE_MIN_TOP} in the top {IMPORTANCE_QUANTILE:.0%}, as "
            f"Optuna's PED-ANOVA asks); this study has {n} complete or pruned trials, fewer at "
            "every epoch"))
    values = [t.intermediate_values[epoch] for t in trials]
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    title = (f"{base} for validation {metric} at epoch {epoch}: {len(trials)} trials "
             f"({n_complete} complete, {len(trials) - n_complete} pruned), top "
             f"{IMPORTANCE_QUANTILE:.0%} (PED-ANOVA)")
    if max(values) == min(values):
        return _note(go.Figure(), title, (
            f"all {len(trials)} trials have the same validation {metric} ({values[0]:.4g}) at "
            f"epoch {epoch}: no parameter explains a difference"))
    have: dict[str, int] = defaultdict(int)
    for t in trials:
        for name, dist in t.distributions.items():
            if not dist.single():  # one possible value (one schedule only): nothing to rank
                have[name] += 1
    kept = sorted(p for p, c in have.items() if c >= IMPORTANCE_MIN_TRIALS)
    left_out = sorted((p for p, c in have.items() if c < IMPORTANCE_MIN_TRIALS),
                      key=lambda p: (-have[p], p))
    at_epoch = optuna.create_study(direction=study.direction)
    try:
        for t in trials:
            at_epoch.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions,
                value=t.intermediate_values[epoch], state=TrialState.COMPLETE,
            ))
        importances = optuna.importance.get_param_importances(
            at_epoch, params=kept,
            evaluator=PedAnovaImportanceEvaluator(target_quantile=IMPORTANCE_QUANTILE),
        ) if kept else {}
    except (ValueError, RuntimeError) as exc:  # e.g. a parameter whose range changed
        return _note(go.Figure(), title, f"not computable for this study: {html.escape(str(exc))}")
    order = sorted(importances, key=lambda p: importances[p])  # plotly draws bottom-up
    fig = go.Figure(
        go.Bar(
            x=[importances[p] for p in order],
            y=[f"{p} ({have[p]} trials)" for p in order],
            orientation="h",
            text=[f"{importances[p]:.2f}" for p in order],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    if left_out:
        names = [f"{p} ({have[p]})" for p in left_out]
        shown = "<br>".join(", ".join(names[i:i + 5]) for i in range(0, len(names), 5))
        fig.add_annotation(
            text=f"left out, in fewer than {IMPORTANCE_MIN_TRIALS} of these trials:<br>{shown}",
            align="left", yanchor="top",
            showarrow=False, xref="paper", yref="paper", x=0, y=-0.16, xanchor="left",
            font={"size": 11},
        )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        xaxis={"title": "importance (sums to 1 over the parameters shown)"},
        yaxis={"automargin": True},
        margin={"b": 150},
    )
    return fig
