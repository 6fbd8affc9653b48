"""Command line: ``tuner <command>`` (also ``python -m tuner``).

Subcommands live in the explicit :data:`COMMANDS` dict. A :class:`~tuner.errors.TunerError`
(a user's mistake: a bad study file, a missing storage, no complete trial) is caught here and
printed as one line on stderr with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from tuner.errors import ConfigError, TunerError

__all__ = ["main", "build_parser", "COMMANDS"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _load(path: str):  # noqa: ANN202
    from tuner.config import load_study_config

    return load_study_config(path)


def cmd_tune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tuner.runner import run_tune
    from tuner.storage import redact_url, resolve_storage_url
    from tuner.summary import print_summary

    cfg = _load(args.study)
    if args.seed is not None:
        cfg = replace(cfg, study=replace(cfg.study, seed=args.seed))
    url = resolve_storage_url(cfg, args.storage)
    console = Console()
    console.print(f"study [bold]{cfg.name}[/bold] from {cfg.path} -> {redact_url(url)}")
    outcome = run_tune(
        cfg, url, n_trials=args.n_trials, timeout=args.timeout, progress=not args.no_progress,
        batch_trials=args.batch_trials,
    )
    print_summary(outcome.study, cfg, console)
    console.print(
        f"{outcome.finished_after - outcome.finished_before} trials finished in "
        f"{outcome.seconds:.1f} s ({outcome.finished_after} in the study). "
        f"Export: tuner export {cfg.path}   Dashboard: tuner dashboard {cfg.path}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tuner.export import export_best
    from tuner.storage import resolve_storage_url
    from tuner.study import load_existing_study

    cfg = _load(args.study)
    url = resolve_storage_url(cfg, args.storage)
    study = load_existing_study(cfg, url)
    path = export_best(study, cfg, url, Path(args.out) if args.out else None)
    Console().print(f"wrote {path}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tuner.dashboard import serve

    serve(study_file=args.study, storage=args.storage, host=args.host, port=args.port)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "tune": (cmd_tune, "run (or resume) a study until it has N finished trials"),
    "export": (cmd_export, "write the best trial's optimizer and schedule as plain JSON"),
    "dashboard": (cmd_dashboard, "serve optuna-dashboard over a study's storage"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuner",
        description="Find the learning rate and learning-rate schedule of a PyTorch model on a "
        "scikit-learn dataset with Optuna.",
        epilog="Example: tuner tune studies/digits_mlp.toml --n-trials 20",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = {name: sub.add_parser(name, help=text, description=text) for name, (_, text) in
         COMMANDS.items()}

    storage_help = (
        "Optuna storage URL (sqlite:///path.db, postgresql://user:pass@host/db) or a bare "
        "SQLite file path; default: $OPTUNA_STORAGE, then [study] storage, then "
        "studies/tuner.db next to the study file"
    )
    t = p["tune"]
    t.add_argument("study", metavar="STUDY.toml", help="study file, e.g. studies/digits_mlp.toml")
    t.add_argument("--n-trials", type=_positive_int, help="finished trials to reach "
                   "(default: [study] n_trials); a resumed study is topped up")
    t.add_argument("--storage", help=storage_help)
    t.add_argument("--seed", type=_nonneg_int, help="sampler seed (default: [study] seed)")
    t.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="start no new trial after this many seconds")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--batch-trials", type=_positive_int, metavar="K",
                   help="train K trials in lockstep as one batched model (default 8 where the "
                   "model can be batched: an MLP without dropout); 1 = one trial at a time")

    e = p["export"]
    e.add_argument("study", metavar="STUDY.toml")
    e.add_argument("--storage", help=storage_help)
    e.add_argument("--out", metavar="PATH", help="default: studies/<study name>.best.json")

    d = p["dashboard"]
    d.add_argument("study", metavar="STUDY.toml", nargs="?", help="study file (its storage)")
    d.add_argument("--storage", help=storage_help)
    d.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    d.add_argument("--port", type=_positive_int, default=8080, help="port (default 8080)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command][0]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"tuner: error: {exc}", file=sys.stderr)
        return 2
    except TunerError as exc:
        print(f"tuner: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
