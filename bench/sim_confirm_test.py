"""How often the confirmation's paired test replaces the single best (README: "How the winner is
chosen"), simulated with :func:`tuner.confirm.compare_paired` and the seed-adding rule of
:func:`tuner.confirm.run_confirm`: per-seed differences challenger - incumbent drawn from a
normal distribution with standard deviation 1 and mean ``delta``; S = 3 seeds, up to M = 6.
Prints the share of challengers that replace (better), lose (worse) or stay indistinguishable.
About 20 s::

    python bench/sim_confirm_test.py
"""

from __future__ import annotations

import random

from tuner.confirm import ALPHA, Candidate, compare_paired, looks

SEEDS, MAX_SEEDS, TRIALS = 3, 6, 10_000


def outcome(rng: random.Random, delta: float) -> str:
    alpha = ALPHA / looks(SEEDS, MAX_SEEDS)
    inc, ch = Candidate(0, 1, 0.0, {}), Candidate(1, 2, 0.0, {})
    for n in range(MAX_SEEDS):
        inc.runs.append({"seed": n, "status": "complete", "val_metric": 0.0})
        ch.runs.append({"seed": n, "status": "complete", "val_metric": rng.gauss(delta, 1.0)})
        if n + 1 >= SEEDS:
            result = compare_paired(inc, ch, "maximize", alpha)["outcome"]
            if result != "undecided":
                return result
    return "indistinguishable"


def main() -> None:
    rng = random.Random(0)
    print("| true difference (noise sd) | better (replaces) | worse | indistinguishable |")
    print("| --- | --- | --- | --- |")
    for delta in (0.0, 1.0, 2.0):
        counts = {"better": 0, "worse": 0, "indistinguishable": 0}
        for _ in range(TRIALS):
            counts[outcome(rng, delta)] += 1
        share = {k: f"{100 * v / TRIALS:.1f} %" for k, v in counts.items()}
        print(f"| {delta:g} | {share['better']} | {share['worse']} | "
              f"{share['indistinguishable']} |")


if __name__ == "__main__":
    main()
