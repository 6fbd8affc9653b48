"""Seed-checked results: retrain the top K configurations with fresh seeds and rank by the mean.

A single best trial is often a lucky seed near the edge of stability. ``tuner confirm`` (also run
at the end of ``tuner tune`` unless ``--no-confirm``) takes the top ``K`` COMPLETE trials of a
study and trains each configuration ``S`` more times from scratch on the full budget (every
epoch, no pruner) with the engine of the study itself (:func:`tuner.batched.train_one`).

Seeds: the same ``S`` seeds for every candidate (a paired comparison), starting at
``[study] seed + CONFIRM_SEED_OFFSET`` (10,000) and skipping any seed a trial of the study used
(trial ``k`` uses ``[study] seed + k``), so no confirmation run repeats a trial's run.

Ranking: by the mean validation metric over the seeds, in the objective's direction; a
candidate with more diverged runs ranks below one with fewer whatever its mean (a configuration
that blows up on some seeds is not trustworthy). Diverged runs have no metric and are left out
of the means. The held-out test metric is computed for every run and reported as mean ± std,
but it never takes part in the ranking.

The result is stored as plain JSON in the study's user attribute ``"confirmation"`` (see
:func:`confirmation_payload`), which ``tuner export`` and ``tuner report`` read. Runs already
stored for the same trial, seed and training settings are reused, so confirming a study again
after a resume only trains what is new.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console
from rich.table import Table

from tuner.batched import train_one
from tuner.config import StudyConfig
from tuner.datasets import load_split
from tuner.engine import resolve_device
from tuner.errors import NoCompletedTrialError
from tuner.progress import progress_bar
from tuner.space import TrialParams
from tuner.study import completed, nonfinite_trials, trial_kind

__all__ = [
    "CONFIRM_ATTR",
    "CONFIRM_FORMAT",
    "CONFIRM_SEED_OFFSET",
    "DEFAULT_TOP",
    "DEFAULT_SEEDS",
    "Candidate",
    "Confirmation",
    "confirm_seeds",
    "rank_candidates",
    "run_confirm",
    "load_confirmation",
    "confirmation_is_current",
    "confirmation_table",
    "config_columns",
    "print_confirmation",
    "fmt_mean_std",
    "settings_fingerprint",
    "no_complete_message",
]

CONFIRM_ATTR = "confirmation"
# runs finished by a confirmation that has not completed yet (interrupted): reused by the next
PARTIAL_ATTR = "confirmation:partial"
CONFIRM_FORMAT = 1
CONFIRM_SEED_OFFSET = 10_000
DEFAULT_TOP = 3
DEFAULT_SEEDS = 3


def no_complete_message(study: optuna.Study, what: str) -> str:
    """The one message for 'no COMPLETE trial' shared by tune, export, confirm and report:
    what the trials became, and the advice that fits it."""
    kinds = Counter(trial_kind(t) for t in study.get_trials(deepcopy=False))
    unranked = nonfinite_trials(study)
    if unranked:
        kinds["complete"] -= len(unranked)
        kinds += Counter()  # drop zero counts
        kinds["complete with a non-finite value"] = len(unranked)
    n = sum(kinds.values())
    counts = ", ".join(f"{v} {k}" for k, v in kinds.most_common()) or "no trial"
    if n == 0:
        advice = "run `tuner tune` first"
    elif unranked and len(unranked) * 2 >= n:
        shown = ", ".join(f"#{t.number} = {t.value}" for t in unranked[:3])
        advice = (
            f"a trial whose validation value is not finite ({shown}) is never ranked as the "
            "best; check the objective's metric and the data"
        )
    elif kinds["diverged"] * 2 >= n:
        advice = (
            'lower the upper bound of [space] lr, or set lr = "auto" so that an LR range test '
            "sets the bounds"
        )
    elif kinds["failed"] * 2 >= n:
        advice = "each failed trial's user attribute failed_reason says why (tuner dashboard)"
    else:
        advice = (
            "run more trials (`--n-trials`); a pruner stops trials that lag behind, so the "
            "first complete trial may take a few"
        )
    return (
        f"study '{study.study_name}' has no complete trial"
        + (" with a finite value" if unranked else "")
        + f" ({counts}), so there is nothing to "
        f"{what}; {advice}."
    )


def settings_fingerprint(cfg: StudyConfig) -> dict[str, Any]:
    """The settings a confirmation run depends on (plain JSON): data, model, training."""
    plain = cfg.to_dict()
    keep = ("dataset", "split", "model", "training", "objective", "divergence")
    return {k: plain[k] for k in keep}


def confirm_seeds(base: int, n: int, used: Iterable[int]) -> list[int]:
    """``n`` seeds from ``base + CONFIRM_SEED_OFFSET`` upward, skipping every seed in ``used``."""
    taken = set(used)
    seeds: list[int] = []
    seed = base + CONFIRM_SEED_OFFSET
    while len(seeds) < n:
        if seed not in taken:
            seeds.append(seed)
        seed += 1
    return seeds


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for fewer than two values."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


@dataclass
class Candidate:
    """One configuration under confirmation: a COMPLETE trial and its re-runs.

    Attributes:
        trial: the trial number; single_rank: its 1-based rank by its single run.
        single_value: the trial's own validation value (one seed).
        params: the trial's namespaced Optuna parameters.
        runs: one dict per seed: seed, status ('complete' or 'diverged'), val_metric,
            test_metric, epochs, seconds (plain JSON).
    """

    trial: int
    single_rank: int
    single_value: float
    params: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def val_values(self) -> list[float]:
        return [v for r in self.runs if (v := _finite(r.get("val_metric"))) is not None
                and r.get("status") == "complete"]

    @property
    def test_values(self) -> list[float]:
        return [v for r in self.runs if (v := _finite(r.get("test_metric"))) is not None
                and r.get("status") == "complete"]

    @property
    def n_diverged(self) -> int:
        return sum(1 for r in self.runs if r.get("status") != "complete")

    def summary(self) -> dict[str, Any]:
        """Plain-JSON summary: means, sample standard deviations, counts and the runs."""
        val_mean, val_std = _mean_std(self.val_values)
        test_mean, test_std = _mean_std(self.test_values)
        return {
            "trial": self.trial,
            "single_rank": self.single_rank,
            "single_value": self.single_value,
            "params": self.params,
            "val_mean": val_mean,
            "val_std": val_std,
            "test_mean": test_mean,
            "test_std": test_std,
            "n_runs": len(self.runs),
            "n_diverged": self.n_diverged,
            "runs": self.runs,
        }


def rank_candidates(
    candidates: Sequence[Mapping[str, Any]], direction: str
) -> list[Mapping[str, Any]]:
    """Candidate summaries best first: fewest diverged runs, then best mean validation metric.

    Only ``n_diverged``, ``val_mean`` and ``single_rank`` are read; the test metric is never
    used to choose. A candidate with no finished run ranks last.
    """
    sign = -1.0 if direction == "maximize" else 1.0

    def key(c: Mapping[str, Any]) -> tuple[int, int, float, int]:
        mean = c.get("val_mean")
        if mean is None:
            return (1, int(c["n_diverged"]), 0.0, int(c["single_rank"]))
        return (0, int(c["n_diverged"]), sign * float(mean), int(c["single_rank"]))

    return sorted(candidates, key=key)


@dataclass(frozen=True)
class Confirmation:
    """What :func:`run_confirm` did: the stored payload and how many runs it trained."""

    payload: dict[str, Any]
    trained: int
    reused: int
    seconds: float

    @property
    def winner(self) -> int:
        return int(self.payload["winner_trial"])

    @property
    def single_best(self) -> int:
        return int(self.payload["single_best_trial"])

    @property
    def changed_winner(self) -> bool:
        return bool(self.payload["changed_winner"])


def load_confirmation(study: optuna.Study) -> dict[str, Any] | None:
    """The stored confirmation payload of a study, or None."""
    payload = study.user_attrs.get(CONFIRM_ATTR)
    if not isinstance(payload, dict) or payload.get("format") != CONFIRM_FORMAT:
        return None
    return payload


def confirmation_is_current(
    payload: Mapping[str, Any] | None, study: optuna.Study, cfg: StudyConfig
) -> bool:
    """True if ``payload`` confirms the study's present top-K with the present settings.

    It is out of date when the training settings changed or when the top ``K`` COMPLETE trials
    are no longer the trials it confirmed (a resumed study found better ones).
    """
    if payload is None or payload.get("settings") != settings_fingerprint(cfg):
        return False
    top = [t.number for t in completed(study)[: int(payload["top_k"])]]
    return sorted(top) == sorted(int(c["trial"]) for c in payload["candidates"])


def _cached_runs(study: optuna.Study, cfg: StudyConfig) -> dict[tuple, dict]:
    """Runs (trial, seed) -> run record that an earlier confirmation with the same settings
    finished: the stored payload's, and those of an interrupted confirmation."""
    settings = settings_fingerprint(cfg)
    cache: dict[tuple, dict] = {}
    partial = study.user_attrs.get(PARTIAL_ATTR)
    if isinstance(partial, dict) and partial.get("settings") == settings:
        cache.update({(int(r["trial"]), int(r["seed"])): r for r in partial.get("runs", [])})
    payload = load_confirmation(study)
    if payload is not None and payload.get("settings") == settings:
        cache.update({
            (int(c["trial"]), int(r["seed"])): r
            for c in payload.get("candidates", [])
            for r in c.get("runs", [])
        })
    return {key: {k: v for k, v in r.items() if k != "trial"} for key, r in cache.items()}


def run_confirm(
    study: optuna.Study,
    cfg: StudyConfig,
    *,
    top: int = DEFAULT_TOP,
    seeds: int = DEFAULT_SEEDS,
    console: Console | None = None,
    progress: bool = True,
) -> Confirmation:
    """Retrain the top ``top`` COMPLETE trials with ``seeds`` fresh seeds each; store and return.

    Args:
        study: a study with at least one COMPLETE trial.
        cfg: its validated study file (data, model, training budget).
        top: configurations to confirm (fewer if the study has fewer COMPLETE trials).
        seeds: fresh seeds per configuration (>= 2 for a standard deviation).
        console: where the progress bar goes (stderr by default).
        progress: False for no progress bar.

    Returns:
        A :class:`Confirmation`; its payload is also stored in the study's user attribute
        ``"confirmation"``.

    Raises:
        NoCompletedTrialError: the study has no COMPLETE trial (nothing is stored).
        ValueError: ``top`` or ``seeds`` < 1.
        DeviceError: the configured device is not available.
    """
    if top < 1 or seeds < 1:
        raise ValueError(f"top and seeds must be >= 1, got top={top}, seeds={seeds}")
    ranked: Sequence[FrozenTrial] = completed(study)
    if not ranked:
        raise NoCompletedTrialError(no_complete_message(study, "confirm"))
    started = time.perf_counter()
    chosen = ranked[:top]
    used = [
        int(t.user_attrs.get("seed", cfg.study.seed + t.number))
        for t in study.get_trials(deepcopy=False)
    ]
    seed_list = confirm_seeds(cfg.study.seed, seeds, used)
    cache = _cached_runs(study, cfg)
    device = resolve_device(cfg.training.device)
    data = load_split(cfg.dataset, cfg.split)

    candidates = [
        Candidate(t.number, i + 1, float(t.value), dict(t.params))  # type: ignore[arg-type]
        for i, t in enumerate(chosen)
    ]
    todo = [(c, s) for c in candidates for s in seed_list if (c.trial, s) not in cache]
    trained = 0
    finished_now: list[dict[str, Any]] = []  # kept in PARTIAL_ATTR as they finish
    console = console or Console(stderr=True)
    with progress_bar(console, disable=not progress or not todo) as bar:
        task = bar.add_task(f"confirm top {len(chosen)}", total=len(todo), status="")
        for c in candidates:
            params = TrialParams.from_optuna_params(c.params)
            for s in seed_list:
                if (c.trial, s) in cache:
                    c.runs.append(dict(cache[(c.trial, s)]))
                    continue
                result = train_one(cfg, data, params, s, device=device)
                c.runs.append({
                    "seed": s,
                    "status": result.status,
                    "val_metric": _finite(result.val_metric),
                    "test_metric": _finite(result.test_metric),
                    "epochs": result.epochs,
                    "seconds": round(result.seconds, 4),
                })
                trained += 1
                # an interrupted confirmation keeps what it finished: the next one reuses it
                finished_now.append({"trial": c.trial, **c.runs[-1]})
                study.set_user_attr(PARTIAL_ATTR, {
                    "settings": settings_fingerprint(cfg),
                    "runs": [
                        {"trial": t, **r} for (t, _), r in cache.items()
                    ] + finished_now,
                })
                bar.update(task, advance=1, status=f"#{c.trial} seed {s} {result.status}")

    summaries = rank_candidates([c.summary() for c in candidates], cfg.direction)
    for rank, s in enumerate(summaries, start=1):
        s["rank"] = rank  # type: ignore[index]
    winner = int(summaries[0]["trial"])
    payload: dict[str, Any] = {
        "format": CONFIRM_FORMAT,
        "metric": cfg.objective.metric,
        "direction": cfg.direction,
        "top_k": len(chosen),
        "n_seeds": seeds,
        "seeds": seed_list,
        "seed_offset": CONFIRM_SEED_OFFSET,
        "epochs": cfg.training.epochs,
        "settings": settings_fingerprint(cfg),
        "single_best_trial": chosen[0].number,
        "winner_trial": winner,
        "changed_winner": winner != chosen[0].number,
        "candidates": [dict(s) for s in summaries],
        # COMPLETE trials whose value is +-inf: never candidates (see tuner.study.completed)
        "non_finite_trials": [t.number for t in nonfinite_trials(study)],
    }
    study.set_user_attr(CONFIRM_ATTR, payload)
    reused = len(candidates) * len(seed_list) - len(todo)
    return Confirmation(payload, trained, reused, time.perf_counter() - started)


def fmt_mean_std(mean: float | None, std: float | None) -> str:
    """``0.9741 ± 0.0042`` (``n/a`` without a value, no ± part without a std)."""
    if mean is None:
        return "n/a"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def config_columns(params: Mapping[str, Any]) -> tuple[str, str, str]:
    """(learning rate, optimizer, schedule) of namespaced parameters, short, for tables."""
    from tuner.summary import _kv

    p = TrialParams.from_optuna_params(params)
    opt = f"{p.optimizer} {_kv(dict(p.optimizer_kwargs))}".strip()
    sched = f"{p.schedule} {_kv(dict(p.schedule_params))}".strip()
    return f"{p.lr:.3g}", opt, sched


def confirmation_table(payload: Mapping[str, Any]) -> Table:
    """The confirmed top-K as a rich table, best first by mean validation metric."""
    metric = payload["metric"]
    table = Table(
        title=f"Confirmed top {payload['top_k']} ({metric}): {payload['n_seeds']} fresh seeds "
        f"each, full {payload['epochs']} epochs; ranked by validation mean, test never used"
    )
    for col in ("rank", "trial", "single", "val mean ± std", "test mean ± std", "div", "lr",
                "optimizer", "schedule"):
        wrap = col in ("optimizer", "schedule")
        table.add_column(col, justify="left" if wrap else "right", no_wrap=not wrap)
    for c in payload["candidates"]:
        table.add_row(
            str(c["rank"]),
            f"#{c['trial']}",
            f"{c['single_value']:.4f}",
            fmt_mean_std(c["val_mean"], c["val_std"]),
            fmt_mean_std(c["test_mean"], c["test_std"]),
            f"{c['n_diverged']}/{c['n_runs']}",
            *config_columns(c["params"]),
        )
    return table


def print_confirmation(confirmation: Confirmation, console: Console | None = None) -> None:
    """The table and one line saying whether confirmation changed the winner."""
    console = console or Console()
    payload = confirmation.payload
    console.print(confirmation_table(payload))
    best = payload["candidates"][0]
    single = next(c for c in payload["candidates"] if c["trial"] == confirmation.single_best)
    metric = payload["metric"]
    console.print(
        f"single-best trial #{single['trial']}: validation {metric} {single['single_value']:.4f} "
        f"(one seed); confirmed {fmt_mean_std(single['val_mean'], single['val_std'])} over "
        f"{single['n_runs']} fresh seeds"
    )
    if confirmation.changed_winner:
        console.print(
            f"[bold yellow]Confirmation changed the winner:[/bold yellow] trial #{best['trial']} "
            f"(validation {metric} {fmt_mean_std(best['val_mean'], best['val_std'])}) replaces "
            f"#{single['trial']}; the export uses #{best['trial']}."
        )
    else:
        console.print(
            f"[bold green]Confirmation kept the winner:[/bold green] trial #{best['trial']}."
        )
    unranked = payload.get("non_finite_trials") or []
    if unranked:
        console.print(
            f"not ranked: trial(s) {', '.join(f'#{n}' for n in unranked)} completed with a "
            "non-finite validation value"
        )
    console.print(
        f"({confirmation.trained} runs trained, {confirmation.reused} reused, "
        f"{confirmation.seconds:.1f} s)"
    )
