"""Seed-checked results: retrain the top K configurations with fresh seeds, change the winner
only when the difference is larger than the noise.

A single best trial is often a lucky seed near the edge of stability. ``tuner confirm`` (also run
at the end of ``tuner tune`` unless ``--no-confirm``) takes the top ``K`` COMPLETE trials of a
study and trains each configuration ``S`` more times from scratch on the full budget (every
epoch, no pruner) with the engine of the study itself (:func:`tuner.batched.train_one`).

Seeds: the same seeds for every candidate (a paired comparison), starting at
``[study] seed + CONFIRM_SEED_OFFSET`` (10,000) and skipping any seed a trial of the study used
(trial ``k`` uses ``[study] seed + k``), so no confirmation run repeats a trial's run.

Choosing the winner (a race in the spirit of F-race / irace's ``t-test`` elimination): the
**incumbent** is the single best trial. Each other candidate (a **challenger**) is compared with
it on the seeds both trained (:func:`compare_paired`):

1. a different number of diverged runs decides at once (fewer is better);
2. otherwise a one-sided paired t-test on the per-seed differences of the validation metric
   (on the validation loss when the metric is equal on every seed: ties in the metric are
   broken by the loss). With ``L`` looks (one per seed count from ``max(S, 2)`` to
   ``max_seeds``), each look tests at ``ALPHA / L`` (Bonferroni), so a challenger no better
   than the incumbent replaces it with probability at most ``ALPHA`` = 0.05;
3. while a comparison is undecided, one more seed is trained for the incumbent and the
   undecided challengers, up to ``max_seeds`` (default ``2 S``); still undecided then, the
   challenger is **indistinguishable** from the incumbent.

Stability: every run records its peak loss ratio (largest mini-batch loss / first mini-batch
loss, :class:`tuner.divergence.DivergenceGuard`); a candidate's is the largest over its runs. A
candidate whose peak exceeds ``STABILITY_FRACTION`` (1/2) of ``[divergence] factor`` is **near
the cut-off**: a loss spike only twice as high on another seed would have stopped it.

Ranking: challengers that beat the incumbent, then the incumbent with the indistinguishable
ones, then those that lost; within each group a candidate near the cut-off ranks below a safe
one, the incumbent stays first among the equally good, and the rest go by mean validation
metric, then mean validation loss. Diverged runs have no metric and are left out of the means.
The held-out test metric is computed for every run and reported as mean ± std, but it never
takes part in the choice.

The result is stored as plain JSON in the study's system attribute ``"confirmation"`` (see
:func:`run_confirm`), which ``tuner export``, ``tuner report`` and the study note read. Runs
already stored for the same trial, seed and training settings are reused, so confirming a study
again after a resume only trains what is new.
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
from rich import box
from rich.console import Console
from rich.table import Table

from tuner.batched import train_one
from tuner.config import StudyConfig
from tuner.engine import resolve_device
from tuner.errors import NoCompletedTrialError
from tuner.models import study_split
from tuner.progress import progress_bar
from tuner.space import TrialParams
from tuner.study import completed, nonfinite_trials, trial_kind

__all__ = [
    "CONFIRM_ATTR",
    "CONFIRM_FORMAT",
    "CONFIRM_SEED_OFFSET",
    "DEFAULT_TOP",
    "DEFAULT_SEEDS",
    "ALPHA",
    "STABILITY_FRACTION",
    "Candidate",
    "compare_paired",
    "default_max_seeds",
    "decision_text",
    "Confirmation",
    "confirm_seeds",
    "rank_candidates",
    "run_confirm",
    "load_confirmation",
    "confirmation_is_current",
    "confirmation_table",
    "configurations_table",
    "fmt_comparison",
    "fmt_peak",
    "config_columns",
    "print_confirmation",
    "fmt_mean_std",
    "settings_fingerprint",
    "no_complete_message",
]

CONFIRM_ATTR = "confirmation"
# runs finished by a confirmation that has not completed yet (interrupted): reused by the next.
# A study system attribute (optuna-dashboard does not list those), set to None when the
# confirmation completes; older tuner versions kept it in the user attribute of the same name.
PARTIAL_ATTR = "confirmation:partial"
CONFIRM_FORMAT = 1
CONFIRM_SEED_OFFSET = 10_000
DEFAULT_TOP = 3
DEFAULT_SEEDS = 3
# family-wise level of the paired test of one challenger against the incumbent (all looks)
ALPHA = 0.05
# near the divergence cut-off: peak loss ratio > STABILITY_FRACTION x [divergence] factor
STABILITY_FRACTION = 0.5
# groups of the ranking, by the comparison with the incumbent
_GROUP = {"better": 0, "fewer diverged": 0, "indistinguishable": 1, "undecided": 1,
          "worse": 2, "more diverged": 2}


def default_max_seeds(seeds: int) -> int:
    """Seeds per candidate at most when comparisons stay close: twice ``seeds``."""
    return 2 * seeds


def looks(seeds: int, max_seeds: int) -> int:
    """Tests one challenger may get: one per seed count from ``max(seeds, 2)`` to ``max_seeds``
    (a t-test needs two pairs); at least 1."""
    return max(1, max_seeds - max(seeds, 2) + 1)


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
            val_loss, test_metric, peak_loss_ratio, epochs, seconds (plain JSON).
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

    @property
    def peak_loss_ratio(self) -> float | None:
        """The largest peak loss ratio over the runs (None if no run recorded one)."""
        peaks = [v for r in self.runs if (v := _finite(r.get("peak_loss_ratio"))) is not None]
        return max(peaks) if peaks else None

    def by_seed(self) -> dict[int, dict[str, Any]]:
        return {int(r["seed"]): r for r in self.runs}

    def summary(self, cutoff: float = math.inf) -> dict[str, Any]:
        """Plain-JSON summary: means, sample standard deviations, counts, the peak loss ratio,
        whether it exceeds ``cutoff`` (near the divergence cut-off) and the runs."""
        val_mean, val_std = _mean_std(self.val_values)
        test_mean, test_std = _mean_std(self.test_values)
        losses = [v for r in self.runs if (v := _finite(r.get("val_loss"))) is not None
                  and r.get("status") == "complete"]
        peak = self.peak_loss_ratio
        return {
            "trial": self.trial,
            "single_rank": self.single_rank,
            "single_value": self.single_value,
            "params": self.params,
            "val_mean": val_mean,
            "val_std": val_std,
            "test_mean": test_mean,
            "test_std": test_std,
            "val_loss_mean": statistics.fmean(losses) if losses else None,
            "peak_loss_ratio": peak,
            "near_cutoff": peak is not None and peak > cutoff,
            "n_runs": len(self.runs),
            "n_diverged": self.n_diverged,
            "runs": self.runs,
        }


def compare_paired(
    incumbent: Candidate, challenger: Candidate, direction: str, alpha: float
) -> dict[str, Any]:
    """The challenger against the incumbent on the seeds both trained (plain JSON).

    Args:
        incumbent, challenger: candidates with runs (matched by seed).
        direction: 'maximize' or 'minimize' (the validation metric's).
        alpha: the level of this look's one-sided tests.

    Returns:
        ``on``: what was compared ('diverged runs', 'metric' or 'validation loss': the loss
        when the metric is equal on every paired seed); ``n``: paired seeds;
        ``diff_mean``: mean of challenger - incumbent in the units of ``on`` (None without
        pairs); ``ci95``: its two-sided 95 % t interval ([low, high], None below two pairs);
        ``p_better`` / ``p_worse``: one-sided paired t-test p-values that the challenger is
        better / worse (None below two pairs); ``alpha``; ``outcome``: 'better', 'worse',
        'fewer diverged', 'more diverged' or 'undecided'.
    """
    from scipy import stats  # lazily: only a confirmation needs it

    inc, ch = incumbent.by_seed(), challenger.by_seed()
    common = sorted(set(inc) & set(ch))
    out: dict[str, Any] = {"on": "metric", "n": 0, "diff_mean": None, "ci95": None,
                           "p_better": None, "p_worse": None, "alpha": alpha,
                           "outcome": "undecided"}
    div_inc = sum(1 for s in common if inc[s].get("status") != "complete")
    div_ch = sum(1 for s in common if ch[s].get("status") != "complete")
    if div_inc != div_ch:
        out.update(on="diverged runs", n=len(common), diff_mean=float(div_ch - div_inc),
                   outcome="fewer diverged" if div_ch < div_inc else "more diverged")
        return out

    def pairs(key: str) -> list[tuple[float, float]]:
        both = [(_finite(inc[s].get(key)), _finite(ch[s].get(key))) for s in common
                if inc[s].get("status") == ch[s].get("status") == "complete"]
        return [(a, b) for a, b in both if a is not None and b is not None]

    sign = 1.0 if direction == "maximize" else -1.0
    metric = pairs("val_metric")
    diffs = [b - a for a, b in metric]
    if diffs and all(d == 0 for d in diffs):
        losses = pairs("val_loss")
        if losses:
            out["on"], sign = "validation loss", -1.0
            diffs = [b - a for a, b in losses]
    n = len(diffs)
    out["n"] = n
    if n == 0:
        return out
    mean = statistics.fmean(diffs)
    out["diff_mean"] = mean
    if n < 2:
        return out
    sd = statistics.stdev(diffs)
    if sd > 0:
        t = sign * mean / (sd / math.sqrt(n))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    else:  # the same difference on every seed
        t = math.copysign(math.inf, sign * mean) if mean != 0 else 0.0
        half = 0.0
    p_better = float(stats.t.sf(t, n - 1)) if mean != 0 or sd > 0 else 1.0
    p_worse = float(stats.t.cdf(t, n - 1)) if mean != 0 or sd > 0 else 1.0
    out.update(ci95=[mean - half, mean + half], p_better=p_better, p_worse=p_worse)
    if p_better < alpha:
        out["outcome"] = "better"
    elif p_worse < alpha:
        out["outcome"] = "worse"
    return out


def rank_candidates(
    candidates: Sequence[Mapping[str, Any]], direction: str
) -> list[Mapping[str, Any]]:
    """Candidate summaries best first (see the module doc).

    Reads ``val_mean``, ``n_diverged``, ``single_rank`` and, where present, ``comparison``
    (the challenger's :func:`compare_paired` result; None for the incumbent),
    ``near_cutoff`` and ``val_loss_mean``. Without comparisons: fewest diverged runs, then
    best mean validation metric. The test metric is never used to choose. A candidate with
    no finished run ranks last.
    """
    sign = -1.0 if direction == "maximize" else 1.0

    def key(c: Mapping[str, Any]) -> tuple:
        mean, loss = c.get("val_mean"), c.get("val_loss_mean")
        comparison = c.get("comparison")
        incumbent = "comparison" in c and comparison is None
        group = 1 if comparison is None else _GROUP[comparison["outcome"]]
        return (
            mean is None,
            group,
            int(c["n_diverged"]),
            bool(c.get("near_cutoff")),
            not incumbent,
            0.0 if mean is None else sign * float(mean),
            math.inf if loss is None else float(loss),
            int(c["single_rank"]),
        )

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
    payload = (study._storage.get_study_system_attrs(study._study_id).get(CONFIRM_ATTR)
               or study.user_attrs.get(CONFIRM_ATTR))  # a user attribute before tuner 0.2
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
    finished: the stored payload's, and those of an interrupted confirmation. Runs stored by
    an older tuner without a peak loss ratio or a validation loss are left out (trained
    again)."""
    settings = settings_fingerprint(cfg)
    cache: dict[tuple, dict] = {}
    partial = (study._storage.get_study_system_attrs(study._study_id).get(PARTIAL_ATTR)
               or study.user_attrs.get(PARTIAL_ATTR))
    if isinstance(partial, dict) and partial.get("settings") == settings:
        cache.update({(int(r["trial"]), int(r["seed"])): r for r in partial.get("runs", [])})
    payload = load_confirmation(study)
    if payload is not None and payload.get("settings") == settings:
        cache.update({
            (int(c["trial"]), int(r["seed"])): r
            for c in payload.get("candidates", [])
            for r in c.get("runs", [])
        })
    return {
        key: {k: v for k, v in r.items() if k != "trial"}
        for key, r in cache.items()
        if "peak_loss_ratio" in r and "val_loss" in r
    }


def run_confirm(
    study: optuna.Study,
    cfg: StudyConfig,
    *,
    top: int = DEFAULT_TOP,
    seeds: int = DEFAULT_SEEDS,
    max_seeds: int | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> Confirmation:
    """Retrain the top ``top`` COMPLETE trials with fresh seeds, decide the winner; store it.

    Args:
        study: a study with at least one COMPLETE trial.
        cfg: its validated study file (data, model, training budget, divergence factor).
        top: configurations to confirm (fewer if the study has fewer COMPLETE trials).
        seeds: fresh seeds per configuration to begin with (>= 2 for a test).
        max_seeds: seeds per configuration at most while a challenger's comparison with the
            single best trial is undecided (default ``2 * seeds``; ``seeds`` for no more).
        console: where the progress bar goes (stderr by default).
        progress: False for no progress bar.

    Returns:
        A :class:`Confirmation`. Its payload, also stored in the study's system attribute
        ``"confirmation"`` (plain JSON), holds: ``format``, ``metric``, ``direction``,
        ``top_k``, ``n_seeds`` (``seeds``), ``max_seeds``, ``seeds`` (the first ``seeds``
        seeds), ``extra_seeds`` (seeds added to close calls), ``seed_offset``, ``epochs``,
        ``settings``, ``test`` (the test, ``alpha``, ``looks``, ``alpha_per_look``),
        ``divergence_factor``, ``stability_cutoff`` (peak ratio above which a candidate is
        near the cut-off), ``single_best_trial``, ``winner_trial``, ``changed_winner``,
        ``decided_by`` (None, or what replaced the single best: 'paired test', 'validation
        loss', 'diverged runs', 'stability margin', 'no finished run'), ``indistinguishable``
        (trials the comparison could not tell from the single best), ``candidates`` (ranked;
        each with
        ``rank``, ``verdict``, ``comparison`` (see :func:`compare_paired`; None for the
        single best), ``peak_loss_ratio``, ``near_cutoff``, ``val_loss_mean``, the means,
        standard deviations and runs of :meth:`Candidate.summary`) and ``non_finite_trials``.

    Raises:
        NoCompletedTrialError: the study has no COMPLETE trial (nothing is stored).
        ValueError: ``top`` or ``seeds`` < 1, or ``max_seeds`` < ``seeds``.
        DeviceError: the configured device is not available.
    """
    if top < 1 or seeds < 1:
        raise ValueError(f"top and seeds must be >= 1, got top={top}, seeds={seeds}")
    max_seeds = default_max_seeds(seeds) if max_seeds is None else max_seeds
    if max_seeds < seeds:
        raise ValueError(f"max_seeds must be >= seeds ({seeds}), got {max_seeds}")
    ranked: Sequence[FrozenTrial] = completed(study)
    if not ranked:
        raise NoCompletedTrialError(no_complete_message(study, "confirm"))
    started = time.perf_counter()
    chosen = ranked[:top]
    used = [
        int(t.user_attrs.get("seed", cfg.study.seed + t.number))
        for t in study.get_trials(deepcopy=False)
    ]
    all_seeds = confirm_seeds(cfg.study.seed, max_seeds, used)
    seed_list = all_seeds[:seeds]
    cache = _cached_runs(study, cfg)
    device = resolve_device(cfg.training.device)
    data = study_split(cfg)
    n_looks = looks(seeds, max_seeds)
    alpha = ALPHA / n_looks
    cutoff = STABILITY_FRACTION * cfg.divergence.factor

    candidates = [
        Candidate(t.number, i + 1, float(t.value), dict(t.params))  # type: ignore[arg-type]
        for i, t in enumerate(chosen)
    ]
    incumbent, challengers = candidates[0], candidates[1:]
    todo = [(c, s) for c in candidates for s in seed_list if (c.trial, s) not in cache]
    counts = {"trained": 0, "reused": 0}
    finished_now: list[dict[str, Any]] = []  # kept in PARTIAL_ATTR as they finish
    console = console or Console(stderr=True)

    def run(c: Candidate, s: int, bar: Any, task: Any) -> None:
        if (c.trial, s) in cache:
            c.runs.append(dict(cache[(c.trial, s)]))
            counts["reused"] += 1
            return
        result = train_one(cfg, data, TrialParams.from_optuna_params(c.params), s,
                           device=device)
        c.runs.append({
            "seed": s,
            "status": result.status,
            "val_metric": _finite(result.val_metric),
            "val_loss": _finite(result.val_loss),
            "test_metric": _finite(result.test_metric),
            "peak_loss_ratio": _finite(result.peak_loss_ratio),
            "epochs": result.epochs,
            "seconds": round(result.seconds, 4),
        })
        counts["trained"] += 1
        # an interrupted confirmation keeps what it finished: the next one reuses it
        finished_now.append({"trial": c.trial, **c.runs[-1]})
        study._storage.set_study_system_attr(study._study_id, PARTIAL_ATTR, {
            "settings": settings_fingerprint(cfg),
            "runs": [{"trial": t, **r} for (t, _), r in cache.items()] + finished_now,
        })
        bar.update(task, advance=1, status=f"#{c.trial} seed {s} {result.status}")

    comparisons: dict[int, dict[str, Any]] = {}
    extra: list[int] = []
    with progress_bar(console, disable=not progress or not todo) as bar:
        total = len(todo)
        task = bar.add_task(f"confirm top {len(chosen)}", total=total, status="")
        for c in candidates:
            for s in seed_list:
                run(c, s, bar, task)
        for n in range(seeds, max_seeds + 1):
            comparisons = {
                ch.trial: compare_paired(incumbent, ch, cfg.direction, alpha)
                for ch in challengers
            }
            close = [ch for ch in challengers
                     if comparisons[ch.trial]["outcome"] == "undecided"]
            if not close or n == max_seeds:
                break
            s = all_seeds[n]  # one more seed for the incumbent and each close challenger
            extra.append(s)
            total += sum(1 for c in (incumbent, *close) if (c.trial, s) not in cache)
            bar.update(task, total=total)
            for c in (incumbent, *close):
                run(c, s, bar, task)
    for comparison in comparisons.values():
        if comparison["outcome"] == "undecided":
            comparison["outcome"] = "indistinguishable"

    summaries: list[dict[str, Any]] = []
    for c in candidates:
        summary = c.summary(cutoff)
        summary["comparison"] = comparisons.get(c.trial)
        summaries.append(summary)
    ranked_rows = rank_candidates(summaries, cfg.direction)
    winner = int(ranked_rows[0]["trial"])
    single = chosen[0].number
    decided_by = None
    if winner != single:
        won = ranked_rows[0]["comparison"]
        decided_by = {
            "better": "validation loss" if won["on"] == "validation loss" else "paired test",
            "fewer diverged": "diverged runs",
        }.get(won["outcome"], "stability margin")
        if decided_by == "stability margin" and summaries[0]["val_mean"] is None:
            decided_by = "no finished run"  # the single best's runs gave no finite metric
    rows: list[dict[str, Any]] = []
    for rank, row in enumerate(ranked_rows, start=1):
        out = dict(row)
        out["rank"] = rank
        out["verdict"] = _verdict(out, winner, single)
        rows.append(out)
    payload: dict[str, Any] = {
        "format": CONFIRM_FORMAT,
        "metric": cfg.objective.metric,
        "direction": cfg.direction,
        "top_k": len(chosen),
        "n_seeds": seeds,
        "max_seeds": max_seeds,
        "seeds": seed_list,
        "extra_seeds": extra,
        "seed_offset": CONFIRM_SEED_OFFSET,
        "epochs": cfg.training.epochs,
        "settings": settings_fingerprint(cfg),
        "test": {"name": "one-sided paired t-test", "alpha": ALPHA, "looks": n_looks,
                 "alpha_per_look": alpha},
        "divergence_factor": cfg.divergence.factor,
        "stability_cutoff": cutoff,
        "single_best_trial": single,
        "winner_trial": winner,
        "changed_winner": winner != single,
        "decided_by": decided_by,
        "indistinguishable": sorted(
            t for t, c in comparisons.items() if c["outcome"] == "indistinguishable"
        ),
        "candidates": rows,
        # COMPLETE trials whose value is +-inf: never candidates (see tuner.study.completed)
        "non_finite_trials": [t.number for t in nonfinite_trials(study)],
    }
    # a system attribute: plain JSON that optuna-dashboard's user-attribute table would show
    # raw (the study note shows it readably)
    study._storage.set_study_system_attr(study._study_id, CONFIRM_ATTR, payload)
    # completed: nothing left to reuse
    if study._storage.get_study_system_attrs(study._study_id).get(PARTIAL_ATTR) is not None:
        study._storage.set_study_system_attr(study._study_id, PARTIAL_ATTR, None)
    return Confirmation(payload, counts["trained"], counts["reused"],
                        time.perf_counter() - started)


def _verdict(row: Mapping[str, Any], winner: int, single: int) -> str:
    """The table's word for a candidate: kept / replaced / replaces #N / the comparison."""
    if row["trial"] == single:
        return "kept" if winner == single else "replaced"
    if row["trial"] == winner:
        return f"replaces #{single}"
    return str(row["comparison"]["outcome"])


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


def fmt_comparison(comparison: Mapping[str, Any] | None) -> str:
    """``+0.0123 [-0.0040, +0.0286] p=0.08 (6)``: the mean paired difference (challenger -
    single best) with its 95 % interval, the one-sided p-value that the challenger is better
    and the paired seeds; ``-`` for the single best itself."""
    if comparison is None:
        return "-"
    if comparison["on"] == "diverged runs":
        return f"{comparison['diff_mean']:+.0f} diverged ({comparison['n']})"
    mean = comparison.get("diff_mean")
    if mean is None:
        return "n/a"
    text = f"{mean:+.4f}"
    if comparison.get("ci95") is not None:
        low, high = comparison["ci95"]
        text += f" [{low:+.4f}, {high:+.4f}] p={comparison['p_better']:.2g}"
    text += f" ({comparison['n']})"
    return text + (" loss" if comparison["on"] == "validation loss" else "")


def fmt_peak(row: Mapping[str, Any]) -> str:
    """``4.90x!`` (``!``: near the divergence cut-off), ``n/a`` without a recorded peak."""
    peak = row.get("peak_loss_ratio")
    if peak is None:
        return "n/a"
    return f"{peak:.2f}x" + ("!" if row.get("near_cutoff") else "")


def decision_text(payload: Mapping[str, Any]) -> str:
    """One or two sentences (plain text): which trial won, why, and how sure the choice is."""
    rows = {int(c["trial"]): c for c in payload["candidates"]}
    single, winner = int(payload["single_best_trial"]), int(payload["winner_trial"])
    test = payload.get("test")
    if test is None:  # stored by an older tuner: ranked by mean only
        verb = "replaced" if payload["changed_winner"] else "kept"
        return f"Confirmation {verb} the winner: trial #{winner} (ranked by mean)."
    level = (f"one-sided paired t-test, p < {test['alpha_per_look']:.3g} per look "
             f"(alpha {test['alpha']:g} over {test['looks']} looks)")
    seeds = f"{payload['n_seeds']}" + (
        f"+{len(payload['extra_seeds'])}" if payload.get("extra_seeds") else "")
    if winner != single:
        c = rows[winner]["comparison"]
        why = {
            "paired test": f"better by {fmt_comparison(c)} ({level})",
            "validation loss": f"equal {payload['metric']} on every seed and a lower "
                               f"validation loss: {fmt_comparison(c)} ({level})",
            "diverged runs": f"fewer diverged runs ({fmt_comparison(c)})",
            "no finished run": f"#{single} has no run with a finite validation metric",
            "stability margin": f"indistinguishable, and #{single} peaked at "
                                f"{fmt_peak(rows[single])} its first loss, above the "
                                f"stability cut-off {payload['stability_cutoff']:g}x while "
                                f"#{winner} stayed at {fmt_peak(rows[winner])}",
        }[payload["decided_by"]]
        text = f"Confirmation replaced single-best trial #{single} by #{winner}: {why}."
    else:
        text = f"Confirmation kept single-best trial #{single}"
        others = [c for c in payload["candidates"] if c["trial"] != single]
        text += (": no challenger beat it" if others else " (no challenger)")
        text += f" ({level}; {seeds} seeds)." if others else "."
    tied = list(payload.get("indistinguishable") or [])
    if tied and payload.get("decided_by") in (None, "stability margin"):
        group = ", ".join(f"#{t}" for t in [winner, *sorted({single, *tied} - {winner})])
        text += (
            f" {group} stay indistinguishable within the noise (up to {payload['max_seeds']} "
            f"seeds each): #{winner} is chosen by "
            + ("stability" if payload.get("decided_by") else "being the single best")
            + ", not by a sure difference in the metric."
        )
    if rows[winner].get("near_cutoff"):
        text += (f" Note: the winner's loss peaked at {fmt_peak(rows[winner])} its first "
                 f"loss (divergence cut-off {payload['divergence_factor']:g}x).")
    return text


def _delta_and_p(comparison: Mapping[str, Any] | None) -> tuple[str, str]:
    """(``-0.0013 ± 0.0040``: mean paired difference ± the half-width of its 95 % interval,
    ``0.61``: the p-value that the challenger is better) for the table."""
    if comparison is None:
        return "-", "-"
    if comparison["on"] == "diverged runs":
        return f"{comparison['diff_mean']:+.0f} diverged", "-"
    mean = comparison.get("diff_mean")
    if mean is None:
        return "n/a", "n/a"
    suffix = " loss" if comparison["on"] == "validation loss" else ""
    if comparison.get("ci95") is None:
        return f"{mean:+.4f}{suffix}", "n/a"
    half = (comparison["ci95"][1] - comparison["ci95"][0]) / 2
    return f"{mean:+.4f} ± {half:.4f}{suffix}", f"{comparison['p_better']:.2g}"


def confirmation_table(payload: Mapping[str, Any]) -> Table:
    """The confirmed top-K as a rich table, in the order of the decision (module doc)."""
    metric = payload["metric"]
    single = payload["single_best_trial"]
    extra = len(payload.get("extra_seeds") or [])
    table = Table(
        title=f"Confirmed top {payload['top_k']} ({metric}): {payload['n_seeds']} fresh seeds "
        f"each" + (f" (+{extra} for close calls)" if extra else "")
        + f", full {payload['epochs']} epochs; Δ: paired difference with single-best "
        f"#{single} ± 95% CI, p: one-sided paired t-test; test never used",
        box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
    )
    columns = ("rank", "trial", "single", "val mean ± std", f"Δ vs #{single}", "p",
               "test mean ± std", "div", "peak", "verdict")
    for col in columns:
        table.add_column(col, justify="left" if col == "verdict" else "right", no_wrap=True)
    for c in payload["candidates"]:
        table.add_row(
            str(c["rank"]),
            f"#{c['trial']}",
            f"{c['single_value']:.4f}",
            fmt_mean_std(c["val_mean"], c["val_std"]),
            *_delta_and_p(c.get("comparison")),
            fmt_mean_std(c["test_mean"], c["test_std"]),
            f"{c['n_diverged']}/{c['n_runs']}",
            fmt_peak(c),
            str(c.get("verdict", "")),
        )
    return table


def configurations_table(payload: Mapping[str, Any]) -> Table:
    """The candidates' configurations (learning rate, optimizer, schedule), in rank order."""
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("trial", "lr", "optimizer", "schedule"):
        wrap = col in ("optimizer", "schedule")
        table.add_column(col, justify="left" if wrap else "right", no_wrap=not wrap)
    for c in payload["candidates"]:
        table.add_row(f"#{c['trial']}", *config_columns(c["params"]))
    return table


def print_confirmation(confirmation: Confirmation, console: Console | None = None) -> None:
    """The table, and the decision: which trial won, why and how sure."""
    from rich.markup import escape

    console = console or Console()
    payload = confirmation.payload
    console.print(confirmation_table(payload))
    console.print(configurations_table(payload))
    single = next(c for c in payload["candidates"] if c["trial"] == confirmation.single_best)
    metric = payload["metric"]
    console.print(
        f"single-best trial #{single['trial']}: validation {metric} {single['single_value']:.4f} "
        f"(one seed); confirmed {fmt_mean_std(single['val_mean'], single['val_std'])} over "
        f"{single['n_runs']} fresh seeds"
    )
    colour = "yellow" if confirmation.changed_winner else "green"
    console.print(f"[bold {colour}]{escape(decision_text(payload))}[/bold {colour}]")
    if confirmation.changed_winner:
        console.print(f"The export uses #{confirmation.winner}.")
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
