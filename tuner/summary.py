"""The end-of-run summary: top trials, the best configuration, counts and compute per state."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import optuna
from rich.console import Console
from rich.table import Table

from tuner.config import StudyConfig
from tuner.space import TrialParams
from tuner.study import completed, nonfinite_trials, trial_kind

__all__ = [
    "StateCounts", "state_counts", "top_trials_table", "nonfinite_line", "print_summary",
]

KINDS = ("complete", "pruned", "diverged", "failed", "running")


@dataclass(frozen=True)
class StateCounts:
    """Trials, epochs and wall seconds per kind ('complete', 'pruned', 'diverged', ...)."""

    trials: dict[str, int]
    epochs: dict[str, int]
    seconds: dict[str, float]


def state_counts(study: optuna.Study) -> StateCounts:
    """Count trials and the compute (epochs run, wall seconds) they used, per kind."""
    trials: Counter[str] = Counter()
    epochs: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for t in study.get_trials(deepcopy=False):
        kind = trial_kind(t)
        trials[kind] += 1
        epochs[kind] += int(t.user_attrs.get("epochs_run", 0))
        seconds[kind] += float(t.user_attrs.get("seconds", 0.0))
    return StateCounts(dict(trials), dict(epochs), dict(seconds))


# short names for the table's narrow columns
ABBREV = {
    "momentum": "mom", "nesterov": "nesterov", "weight_decay": "wd",
    "warmup_fraction": "warmup", "min_lr_ratio": "min", "final_lr_ratio": "final",
    "step_fraction": "every", "pct_start": "pct", "div_factor": "div",
    "final_div_factor": "fdiv", "patience": "pat",
}


def _kv(items: dict) -> str:
    parts = []
    for k, v in items.items():
        if k == "nesterov":
            parts.append("nesterov" if v else "")
            continue
        parts.append(f"{ABBREV.get(k, k)}={v:.2g}" if isinstance(v, float) else
                     f"{ABBREV.get(k, k)}={v}")
    return " ".join(p for p in parts if p)


def _params_text(t: optuna.trial.FrozenTrial) -> tuple[str, str, str]:
    p = TrialParams.from_optuna_params(t.params)
    opt = f"{p.optimizer} {_kv(dict(p.optimizer_kwargs))}".strip()
    sched = f"{p.schedule} {_kv(dict(p.schedule_params))}".strip()
    return f"{p.lr:.3g}", opt, sched


def top_trials_table(study: optuna.Study, cfg: StudyConfig, k: int = 5) -> Table:
    """The top ``k`` COMPLETE trials with a finite value: value, learning rate, optimizer,
    schedule, epochs, state."""
    table = Table(title=f"Top {k} trials of '{study.study_name}' ({cfg.objective.metric}, "
                        f"{cfg.direction})")
    for col in ("trial", "value", "lr", "optimizer", "schedule", "epochs", "state"):
        numeric = col in ("trial", "value", "lr", "epochs")
        table.add_column(col, justify="right" if numeric else "left")
    for t in completed(study)[:k]:
        lr, opt, sched = _params_text(t)
        table.add_row(
            str(t.number), f"{t.value:.4f}", lr, opt, sched,
            str(t.user_attrs.get("epochs_run", "")), trial_kind(t),
        )
    return table


def nonfinite_line(study: optuna.Study) -> str | None:
    """One sentence listing the COMPLETE trials whose value is +-inf (never ranked), or None."""
    bad = nonfinite_trials(study)
    if not bad:
        return None
    shown = ", ".join(f"#{t.number} ({t.value})" for t in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    return (
        f"Not ranked: {len(bad)} complete trial(s) with a non-finite validation value: "
        f"{shown}{more}."
    )


def print_summary(study: optuna.Study, cfg: StudyConfig, console: Console | None = None) -> None:
    """Print the top-5 table, the best configuration and the per-state counts."""
    console = console or Console()
    best = completed(study)
    if best:
        console.print(top_trials_table(study, cfg))
        b = best[0]
        test = b.user_attrs.get("test_metric")
        test_text = f"{test:.4f}" if isinstance(test, float) else "n/a"
        console.print(
            f"[bold]Best trial #{b.number}[/bold]: validation {cfg.objective.metric} "
            f"{b.value:.4f}, test {cfg.objective.metric} {test_text} (held out, not used to "
            f"choose)"
        )
        console.print(f"  {TrialParams.from_optuna_params(b.params).describe()}")
    else:
        console.print("[yellow]No trial completed with a finite value: every trial was pruned, "
                      "diverged or failed, or ended with a non-finite value.[/yellow]")
    unranked = nonfinite_line(study)
    if unranked:
        console.print(f"[yellow]{unranked}[/yellow]")
    counts = state_counts(study)
    table = Table(title="Trials and compute by state")
    for col in ("state", "trials", "epochs", "seconds"):
        table.add_column(col, justify="left" if col == "state" else "right")
    for kind in KINDS:
        if counts.trials.get(kind):
            table.add_row(
                kind, str(counts.trials[kind]), str(counts.epochs.get(kind, 0)),
                f"{counts.seconds.get(kind, 0.0):.1f}",
            )
    table.add_row(
        "total", str(sum(counts.trials.values())), str(sum(counts.epochs.values())),
        f"{sum(counts.seconds.values()):.1f}",
    )
    console.print(table)
