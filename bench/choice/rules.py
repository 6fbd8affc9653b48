"""Which test metric each way of choosing the winner would have got, from candidates.py's JSON:
the confirmation's own winner, the lowest mean validation loss (top 3 / top 5 / all), the best
mean on re-drawn partitions (cv), and the LR finder + one-cycle baseline.

    python bench/choice/rules.py 'out/sp*.json'
"""
# ruff: noqa: B023 (each lambda is called in the iteration that made it)

import glob
import json
import statistics as st
import sys


def m(rows, k):
    v = [r[k] for r in rows if r["status"] == "complete" and r[k] is not None]
    return st.fmean(v) if v else float("nan")


def nz(x, d):
    return d if x != x else x


def main(pat: str) -> None:
    out = {
        k: []
        for k in (
            "actual",
            "B top3 loss",
            "C top3 mean",
            "D top5 loss",
            "E all loss",
            "F top3 cv",
            "G all cv",
            "H top3 cv+orig",
            "onecycle",
        )
    }
    for f in sorted(glob.glob(pat)):
        d = json.load(open(f))
        sg = 1 if d["direction"] == "maximize" else -1
        R = d["res"]
        ranked = d["ranked"]

        def test(a):
            return m(R[a]["eval"], "test")

        out["actual"].append(test(d["winner"]))
        out["B top3 loss"].append(
            test(min(ranked[:3], key=lambda a: nz(m(R[a]["orig"], "vloss"), 1e9)))
        )
        out["C top3 mean"].append(
            test(
                max(
                    ranked[:3],
                    key=lambda a: (
                        nz(sg * m(R[a]["orig"], "val"), -1e9),
                        -nz(m(R[a]["orig"], "vloss"), 1e9),
                    ),
                )
            )
        )
        out["D top5 loss"].append(
            test(min(ranked[:5], key=lambda a: nz(m(R[a]["orig"], "vloss"), 1e9)))
        )
        out["E all loss"].append(test(min(ranked, key=lambda a: nz(m(R[a]["orig"], "vloss"), 1e9))))

        def cv(a):
            return (
                nz(sg * m(R[a]["resamp"], "val"), -1e9),
                -nz(m(R[a]["resamp"], "vloss"), 1e9),
            )

        out["F top3 cv"].append(test(max(ranked[:3], key=cv)))
        out["G all cv"].append(test(max(ranked, key=cv)))

        def both(a):
            return nz(sg * (m(R[a]["resamp"], "val") * 5 + m(R[a]["orig"], "val") * 3) / 8, -1e9)

        out["H top3 cv+orig"].append(test(max(ranked[:3], key=both)))
        out["onecycle"].append(test("onecycle") if "onecycle" in R else float("nan"))
    print(pat, len(out["actual"]))
    for k, v in out.items():
        print(f"  {k:12} mean {st.fmean(v):.4f}  " + " ".join(f"{x:.4f}" for x in v))


for pattern in sys.argv[1:]:
    main(pattern)
