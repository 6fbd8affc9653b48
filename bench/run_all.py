"""``make bench``: run every ``bench/bench_*.py`` one after another and write BENCHMARKS.md.

Contract for a benchmark module ``bench/bench_<name>.py``: run as
``python bench/bench_<name>.py --out PATH`` it writes one Markdown section (a ``##`` heading,
what was measured, a table, the ratios and targets) to PATH. Sections appear in file-name order.
``python bench/run_all.py --only parallel`` reruns one section and keeps the others from
``bench/out/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}; {os.cpu_count()} logical cores; Python {platform.python_version()}; "
        f"torch {torch.__version__} ({set_threads()} thread(s) per benchmark process, "
        f"TUNER_BENCH_THREADS); {platform.system()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run just bench_<ONLY>.py, keep the other sections")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        if args.only and name != args.only:
            continue
        print(f"== {script.name}", flush=True)
        subprocess.run(
            [sys.executable, str(script), "--out", str(OUT / f"{name}.md")], check=True, cwd=ROOT
        )
    sections = [
        (OUT / f"{s.stem.removeprefix('bench_')}.md") for s in scripts
    ]
    body = "\n\n".join(p.read_text().strip() for p in sections if p.exists())
    text = (
        "# Benchmarks\n\n"
        f"Made by `make bench` (`python bench/run_all.py`) on {dt.date.today().isoformat()}.\n\n"
        f"Machine: {machine()}.\n\n"
        "Every section ran in one `make bench`, one benchmark after another on the same machine; "
        "the machines are noisy, so compare numbers within a table, not across runs.\n\n"
        f"{body}\n"
    )
    (ROOT / "BENCHMARKS.md").write_text(text)
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
