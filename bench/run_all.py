"""``make bench``: run every ``bench/bench_*.py`` one after another and write BENCHMARKS.md.

Contract for a benchmark module ``bench/bench_<name>.py``: run as
``python bench/bench_<name>.py --out PATH`` it writes one Markdown section (a ``##`` heading,
what was measured, a table, the ratios and targets) to PATH. Sections appear in file-name order.
``python bench/run_all.py --only parallel`` reruns one section and keeps the others: from
``bench/out/``, or, where that folder lacks them (a fresh clone), from the marked sections of the
BENCHMARKS.md it replaces. Every section carries a marker with the date of the run that made it,
and the header names the sections that were not made by the latest full run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
MARKER = re.compile(r"^<!-- bench:(?P<name>[\w-]+) (?P<date>[\d-]+) -->$", re.M)


def marked_sections(text: str) -> dict[str, tuple[str, str]]:
    """``name -> (date, body)`` of the marked sections of a BENCHMARKS.md."""
    found = list(MARKER.finditer(text))
    out = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        out[m["name"]] = (m["date"], text[m.end():end].strip())
    return out


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
    parser.add_argument("--only", help="run just bench_<ONLY>.py (a comma-separated list: "
                        "those), keep the other sections")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    OUT.mkdir(parents=True, exist_ok=True)
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        if only and name not in only:
            continue
        print(f"== {script.name}", flush=True)
        subprocess.run(
            [sys.executable, str(script), "--out", str(OUT / f"{name}.md")], check=True, cwd=ROOT
        )
    today = dt.date.today().isoformat()
    bench_md = ROOT / "BENCHMARKS.md"
    previous = marked_sections(bench_md.read_text()) if bench_md.exists() else {}
    body, older = [], []
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        out = OUT / f"{name}.md"
        ran_now = not only or name in only
        if out.exists() and (ran_now or name not in previous):
            date = today if ran_now else dt.date.fromtimestamp(out.stat().st_mtime).isoformat()
            section = out.read_text().strip()
        elif name in previous:
            date, section = previous[name]
        else:
            continue
        if not ran_now:
            older.append(f"`{name}` ({date})")
        body.append(f"<!-- bench:{name} {date} -->\n{section}")
    rerun = (
        f"Only {', '.join(f'`{n}`' for n in sorted(only))} ran in this run "
        f"(`make bench BENCH={args.only}`); the other sections "
        f"are kept from earlier runs: {', '.join(older)}. "
        if only and older else ""
    )
    text = (
        "# Benchmarks\n\n"
        f"Made by `make bench` (`python bench/run_all.py`) on {today}.\n\n"
        f"Machine: {machine()}.\n\n"
        + (rerun or "Every section ran in this one `make bench`, one benchmark after another on "
           "the same machine. ")
        + "The machines are noisy, so compare numbers within a table, not across runs.\n\n"
        + "\n\n".join(body) + "\n"
    )
    tmp = bench_md.with_name(".BENCHMARKS.md.tmp")
    tmp.write_text(text)
    os.replace(tmp, bench_md)  # an interrupted run leaves the previous file in place
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
