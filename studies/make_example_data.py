"""Write studies/example_data.csv: a user-style CSV made by a scikit-learn generator.

600 rows, 8 numeric feature columns (f1 ... f8) and a text label column ("label": alpha, beta
or gamma), from ``sklearn.datasets.make_classification`` with a fixed seed, so the file is the
same on every run (tests/test_user_data.py checks the committed file against this script).

    python studies/make_example_data.py [OUT.csv]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from sklearn.datasets import make_classification

LABELS = ("alpha", "beta", "gamma")


def write_example(out: Path) -> None:
    """Write the example CSV to ``out`` (replacing it; a temporary file first, then renamed)."""
    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, n_redundant=1,
                               n_classes=3, class_sep=1.2, random_state=13)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([*(f"f{i + 1}" for i in range(X.shape[1])), "label"])
        for row, label in zip(X, y, strict=True):
            w.writerow([*(f"{v:.5f}" for v in row), LABELS[label]])
    tmp.replace(out)


if __name__ == "__main__":
    write_example(Path(sys.argv[1]) if len(sys.argv) > 1
                  else Path(__file__).resolve().parent / "example_data.csv")
