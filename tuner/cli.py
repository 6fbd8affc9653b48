"""Command line: ``tuner <command>`` (also ``python -m tuner``).

Subcommands live in the explicit :data:`COMMANDS` dict. A :class:`~tuner.errors.TunerError`
(a user's mistake: a bad study file, a missing storage, no complete trial) is caught here and
printed as one line on stderr with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from tuner import collector
from tuner.errors import ConfigError, StorageUnavailable, TunerError

if TYPE_CHECKING:
    import optuna

    from tuner.config import StudyConfig

__all__ = ["main", "build_parser", "COMMANDS"]

# tuner.confirm.DEFAULT_TOP / DEFAULT_SEEDS, repeated so that `tuner --help` need not import torch
DEFAULT_TOP = 3
DEFAULT_SEEDS = 3


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


def _seed(text: str) -> int:
    """A seed: an integer in [0, 2**31 - 1] (trial k seeds numpy with seed + k; numpy takes
    seeds below 2**32). The same bound as ``[study] seed`` (tuner.config.MAX_SEED)."""
    value = _nonneg_int(text)
    if value > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"must be <= {2**31 - 1}, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _console(stderr: bool = False) -> Console:
    """A rich console; 120 columns when the output is a file or a pipe (logs, CI), so that the
    tables stay readable there (rich assumes 80)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 120)


def _load(path: str):  # noqa: ANN202
    from tuner.config import load_study_config

    return load_study_config(path)


def cmd_tune(args: argparse.Namespace) -> int:
    from tuner.api import options_from, run_tune_command

    run = run_tune_command(lambda: _load(args.study), options_from(args), _console(), cli=True)
    return run.exit_status


def cmd_cleanup(args: argparse.Namespace) -> int:
    from tuner.storage import redact_url, resolve_storage_url
    from tuner.workers import cleanup_study

    cfg = _load(args.study)
    url = resolve_storage_url(cfg, args.storage)
    marked = cleanup_study(cfg, url, all_running=args.all_running, heartbeat_s=args.heartbeat)
    console = _console()
    for number, reason in marked:
        console.print(f"trial {number}: FAIL ({reason})")
    console.print(f"{len(marked)} stale trial(s) of '{cfg.name}' in {redact_url(url)} marked FAIL "
                  f"and re-queued.")
    return 0


def _note_confirmation(study: optuna.Study, cfg: StudyConfig) -> None:
    """Rewrite the study note (optuna-dashboard) so that it shows the confirmation."""
    from tuner.dashboard_notes import refresh_study_note

    refresh_study_note(study, cfg)


def cmd_export(args: argparse.Namespace) -> int:
    from tuner.export import EXPORT_KIND, default_export_path, export_best, export_format
    from tuner.outputs import check_file_target
    from tuner.storage import resolve_storage_url
    from tuner.study import load_existing_study

    cfg = _load(args.study)
    out = Path(args.out) if args.out else None
    # refuse a path that is not tuner's own export before the storage is even opened
    check_file_target(out or default_export_path(cfg, export_format(out, args.format)),
                      EXPORT_KIND)
    url = resolve_storage_url(cfg, args.storage)
    study = load_existing_study(cfg, url)
    path = export_best(study, cfg, url, out, args.format)
    _console().print(f"wrote {path}")
    stale = stale_confirmation_line(path, cfg.path, args.storage is not None)
    if stale:
        print(f"tuner: warning: {stale}", file=sys.stderr)
    return 0


def stale_confirmation_line(path: Path, study_file: str, storage_given: bool) -> str | None:
    """One line when the export at ``path`` is the single best trial because the stored
    confirmation is out of date (None otherwise): what was exported and how to re-confirm."""
    from tuner.load import read_export

    data = read_export(path)
    if not data.get("confirmation_note"):
        return None
    storage = " --storage URL" if storage_given else ""
    return (
        f"the stored confirmation is out of date (a later run changed the top trials or the "
        f"settings), so {path} holds the best single trial #{data['trial']}, not a confirmed "
        f"winner; re-confirm with `tuner confirm {study_file}{storage}`, then export again."
    )


def cmd_confirm(args: argparse.Namespace) -> int:
    from tuner.api import check_max_seeds
    from tuner.confirm import print_confirmation, run_confirm
    from tuner.storage import redact_url, resolve_storage_url
    from tuner.study import load_existing_study

    max_seeds = check_max_seeds(args.max_seeds, args.seeds, "--max-seeds", "--seeds")
    cfg = _load(args.study)
    url = resolve_storage_url(cfg, args.storage)
    study = load_existing_study(cfg, url)
    console = _console()
    console.print(f"study [bold]{cfg.name}[/bold] from {cfg.path} -> {redact_url(url)}")
    confirmation = run_confirm(
        study, cfg, top=args.top, seeds=args.seeds, max_seeds=max_seeds,
        progress=not args.no_progress,
    )
    print_confirmation(confirmation, console)
    _note_confirmation(study, cfg)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from tuner.outputs import check_folder_target
    from tuner.report import REPORT_KIND, default_report_dir, write_report
    from tuner.storage import resolve_storage_url
    from tuner.study import load_existing_study

    cfg = _load(args.study)
    out = Path(args.out) if args.out else None
    # refuse a folder that is not tuner's own report before the storage is even opened
    check_folder_target(out or default_report_dir(cfg), REPORT_KIND)
    url = resolve_storage_url(cfg, args.storage)
    study = load_existing_study(cfg, url)
    err = _console(stderr=True)
    outcome = write_report(
        study, cfg, url, out, png=not args.no_png,
        warn=lambda m: err.print(f"[yellow]warning:[/yellow] {escape(m)}", soft_wrap=True),
    )
    console = _console()
    console.print(f"wrote {outcome.html}")
    if outcome.pngs:
        console.print(f"  and {len(outcome.pngs)} PNG figures in {outcome.folder}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from tuner.load import load_best
    from tuner.retrain import check_retrain_target, retrain, save_retrain

    best = load_best(args.export)
    out = Path(args.out) if args.out else None
    if out is not None:
        check_retrain_target(out)  # refuse a folder tuner did not write before training
    console = _console()
    metric = best.data["metric"]
    console.print(
        f"retraining trial #{best.data['trial']} of '{best.data['study']}' "
        f"({best.data.get('selected_by', 'single trial')}) from scratch on train + validation"
    )
    outcome = retrain(best, args.seed)
    steps = (
        f"{outcome.steps_per_epoch_study} to {outcome.steps_per_epoch_now} optimizer steps per "
        f"epoch ({outcome.steps_per_epoch_now * best.epochs} steps over {best.epochs} epochs)"
    )
    if best.interval != "step":
        sizing = f"{steps}; the plateau schedule steps once per epoch, so nothing is re-sized"
    elif outcome.steps_per_epoch_study == outcome.steps_per_epoch_now:
        sizing = f"{steps}: the schedule keeps its length"
    else:
        sizing = f"the schedule is re-sized from {steps}"
    console.print(f"  {outcome.train_rows} training rows: {sizing}; seed {outcome.seed}")
    r = outcome.result
    if r.status != "complete":
        reason = r.divergence.message() if r.divergence else r.status
        kept = f"; nothing was written to {out}" if out is not None else ""
        console.print(f"[red]the retrain diverged: {reason}[/red]; try another --seed{kept}.")
        return 1
    console.print(
        f"[bold]test {metric} {r.test_metric:.4f}[/bold] (test loss {r.test_loss:.4f}) after "
        f"{r.epochs} epochs in {r.seconds:.1f} s"
    )
    single = best.data.get("test_metric")
    conf = best.data.get("confirmation") or {}
    if isinstance(single, float):
        line = f"  study: test {metric} {single:.4f} for the trial itself (trained on train only)"
        if conf.get("test_mean") is not None:
            from tuner.confirm import fmt_mean_std

            line += f", {fmt_mean_std(conf['test_mean'], conf['test_std'])} confirmed"
        console.print(line)
    if out is not None:
        save_retrain(out, best, outcome)
        console.print(f"wrote {out} (model.pt, export.json, metrics.json); load the model with "
                      f"tuner.load_best({str(out)!r}).load_model()")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tuner.dashboard import serve

    serve(study_file=args.study, storage=args.storage, host=args.host, port=args.port)
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tuner.lr_find import run_lr_find_command

    cfg = _load(args.study)
    if args.seed is not None:
        cfg = replace(cfg, study=replace(cfg.study, seed=args.seed))
    return run_lr_find_command(
        cfg, optimizers=[args.optimizer] if args.optimizer else None,
        out=Path(args.out) if args.out else None, min_lr=args.min_lr, max_lr=args.max_lr,
        steps=args.steps,
    )


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "tune": (cmd_tune, "run (or resume) a study until it has N finished trials"),
    "export": (cmd_export, "write the best configuration (optimizer, schedule) as JSON or YAML"),
    "dashboard": (cmd_dashboard, "serve optuna-dashboard over a study's storage"),
    "confirm": (cmd_confirm, "retrain the top K configurations with fresh seeds; replace the "
                "single best only when a paired test says a challenger is better"),
    "report": (cmd_report, "write a self-contained HTML report (and PNG figures) of a study"),
    "retrain": (cmd_retrain, "train an exported configuration on train + validation; test it"),
    "lr-find": (cmd_lr_find, "LR range test: suggested rate, where the loss falls and diverges"),
    "cleanup": (cmd_cleanup, "mark trials left RUNNING by killed workers FAIL and re-queue them"),
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
        "tuner.db next to the study file"
    )
    t = p["tune"]
    t.add_argument("study", metavar="STUDY.toml", help="study file, e.g. studies/digits_mlp.toml")
    t.add_argument("--n-trials", type=_positive_int, help="finished trials to reach "
                   "(default: [study] n_trials); a resumed study is topped up")
    t.add_argument("--storage", help=storage_help)
    t.add_argument("--seed", type=_seed, help="study seed: the sampler's, and trial k "
                   "seeds torch with seed + k (default: [study] seed)")
    t.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="start no new trial after this many seconds (default: [study] timeout)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="worker processes on this machine, each with cores/N torch threads; "
                   "they share the study and stop at exactly --n-trials (default 1)")
    t.add_argument("--heartbeat", type=_nonneg_int, default=10, metavar="SECONDS",
                   help="heartbeat of running trials on SQLite/PostgreSQL: a trial silent for "
                   "3x this long (its worker was killed) is marked FAIL and re-queued; 0: off "
                   "(default 10)")
    t.add_argument("--worker-index", type=_nonneg_int, default=0, metavar="K",
                   help="index of this command among several on one study (e.g. "
                   "$SLURM_ARRAY_TASK_ID): gives its workers distinct sampler seeds (default 0)")
    t.add_argument("--confirm-top", type=_positive_int, default=DEFAULT_TOP, metavar="K",
                   help=f"at the end, confirm the top K trials (default {DEFAULT_TOP})")
    t.add_argument("--confirm-seeds", type=_positive_int, default=DEFAULT_SEEDS, metavar="S",
                   help=f"fresh seeds per confirmed trial (default {DEFAULT_SEEDS})")
    t.add_argument("--confirm-max-seeds", type=_positive_int, metavar="M",
                   help="seeds per confirmed trial at most while a challenger stays too close "
                   "to the single best to tell (default 2 x S)")
    t.add_argument("--no-confirm", action="store_true",
                   help="skip the confirmation (tuner confirm) at the end")
    t.add_argument("--threads", type=_positive_int, metavar="N",
                   help="torch threads per training process (default: $OMP_NUM_THREADS, else 1: "
                   "these models are too small to split across cores, and idle threads spin on "
                   "busy cores; use --workers to use more cores; with --workers N: cores/N "
                   "each unless --threads is given)")
    t.add_argument("--batch-trials", type=_positive_int, metavar="K",
                   help="train K trials in lockstep as one batched model, in each worker with "
                   "--workers (default 4: stacked for an MLP without dropout, torch.func for "
                   "other models where K trials in lockstep are faster, which the run's first "
                   "line says); 1 = one trial at a time")
    t.add_argument("--mlflow", action="store_true",
                   help="log every finished trial to MLflow (needs pip install -e .[mlflow]) in "
                   "the folder mlruns next to the study file (also [tracking] mlflow = true)")
    t.add_argument("--mlflow-uri", metavar="URI",
                   help="like --mlflow, into this tracking URI or folder (an SQLite store "
                   "mlflow.db and artifacts/ in it)")

    e = p["export"]
    e.add_argument("study", metavar="STUDY.toml")
    e.add_argument("--storage", help=storage_help)
    e.add_argument("--out", metavar="PATH",
                   help="default: <study name>.best.json (or .best.yaml) next to the study file")
    e.add_argument("--format", choices=("json", "yaml"),
                   help="file format (default: from --out's suffix, else json)")

    c = p["confirm"]
    c.add_argument("study", metavar="STUDY.toml")
    c.add_argument("--storage", help=storage_help)
    c.add_argument("--top", type=_positive_int, default=DEFAULT_TOP, metavar="K",
                   help=f"configurations to confirm, best first (default {DEFAULT_TOP})")
    c.add_argument("--seeds", type=_positive_int, default=DEFAULT_SEEDS, metavar="S",
                   help=f"fresh seeds per configuration (default {DEFAULT_SEEDS}); seeds start "
                   "at [study] seed + 10000 and skip any a trial used")
    c.add_argument("--max-seeds", type=_positive_int, metavar="M",
                   help="seeds per configuration at most: a challenger too close to the single "
                   "best to tell gets one more seed at a time up to M (default 2 x S)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = p["report"]
    r.add_argument("study", metavar="STUDY.toml")
    r.add_argument("--storage", help=storage_help)
    r.add_argument("--out", metavar="DIR",
                   help="report folder (default: reports/<study name> next to the study file)")
    r.add_argument("--no-png", action="store_true",
                   help="HTML only (PNG copies need Chromium: $TUNER_CHROMIUM or chromium)")

    rt = p["retrain"]
    rt.add_argument("export", metavar="BEST.json",
                    help="an export, e.g. studies/digits_mlp.best.json (or .yaml)")
    rt.add_argument("--seed", type=_seed,
                    help="torch seed (default: the exported trial's seed)")
    rt.add_argument("--out", metavar="DIR",
                    help="save the trained model: DIR/model.pt (state_dict), export.json, "
                    "metrics.json, written atomically (a new, empty or previous retrain folder)")

    cu = p["cleanup"]
    cu.add_argument("study", metavar="STUDY.toml")
    cu.add_argument("--storage", help=storage_help)
    cu.add_argument("--all-running", action="store_true",
                    help="mark every RUNNING trial FAIL (only when no worker runs anywhere)")
    cu.add_argument("--heartbeat", type=_nonneg_int, default=10, metavar="SECONDS",
                    help="the workers' --heartbeat: trials silent for 3x this long are stale")

    d = p["dashboard"]
    d.add_argument("study", metavar="STUDY.toml", nargs="?", help="study file (its storage)")
    d.add_argument("--storage", help=storage_help)
    d.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    d.add_argument("--port", type=_positive_int, default=8080, help="port (default 8080)")

    # defaults: tuner.lr_find.MIN_LR, MAX_LR, STEPS (not imported here: it imports torch)
    f = p["lr-find"]
    f.add_argument("study", metavar="STUDY.toml", help="study file (model, data, batch size)")
    f.add_argument("--optimizer", metavar="NAME", help="sweep only this optimizer (sgd, adam, "
                   "adamw, rmsprop; default: each in [space] optimizers)")
    f.add_argument("--out", metavar="PATH", help="plot (self-contained HTML); default: "
                   "reports/<study name>.lr_find.html in the study file's folder")
    f.add_argument("--min-lr", type=_positive_float, help="first rate of the sweep (default 1e-7)")
    f.add_argument("--max-lr", type=_positive_float, help="last rate of the sweep (default 10)")
    f.add_argument("--steps", type=_positive_int,
                   help="mini-batches per optimizer at most (default 200)")
    f.add_argument("--seed", type=_seed, help="seed of weights and batch order "
                   "(default: [study] seed)")
    return parser


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM before (or after) the trials' own handling: stop as Ctrl-C does."""
    raise KeyboardInterrupt("SIGTERM")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 the storage failed (disk full, server
    unreachable), 2 user error, 130 interrupted).

    Run as the program (``argv`` None: the ``tuner`` command, ``python -m tuner``), the
    process then exits at once with that status (``tuner._private.exit_process``: exit
    handlers run, databases closed, streams flushed; the 0.5 s of tearing torch's modules
    down skipped)."""
    try:
        code = _run(argv)
    except KeyboardInterrupt:  # before the command's own handling: while it parses, imports
        if argv is not None:
            raise
        print("tuner: interrupted", file=sys.stderr)
        code = 130
    if argv is None:
        from tuner._private import exit_process

        exit_process(code)
    return code


def _run(argv: Sequence[str] | None) -> int:
    import os

    from tuner._private import FAST_OPTIMIZER_ENV

    os.environ.setdefault(FAST_OPTIMIZER_ENV, "1")  # this process and its workers
    if argv is None:  # the program itself: SIGTERM (a scheduler's stop) as Ctrl-C, everywhere
        signal.signal(signal.SIGTERM, _terminated)
        collector.hold()  # no garbage collection while torch & co. are imported
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command][0]
    if args.command in ("confirm", "retrain", "lr-find"):  # commands that train (tune: its own)
        import torch

        from tuner.engine import training_threads

        torch.set_num_threads(training_threads())
    if args.command != "tune":  # tune settles once its own imports are done
        collector.settle()
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"tuner: error: {exc}", file=sys.stderr)
        return 2
    except StorageUnavailable as exc:  # the storage failed during the command, not the user
        print(f"tuner: error: {exc}", file=sys.stderr)
        return 1
    except TunerError as exc:
        print(f"tuner: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output path that is a folder, a missing parent, no permission
        where = f": {exc.filename}" if exc.filename else ""
        print(f"tuner: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an error while handling a storage failure, or optuna's own
        from tuner.storage_guard import failure_behind

        failure = failure_behind(exc)
        if failure is None:
            raise
        print(f"tuner: error: {failure}", file=sys.stderr)
        return 1
    finally:
        if argv is None:  # the program itself: its work and messages are done; a late Ctrl-C
            # must not turn the exit (torch, storages, workers shutting down) into a kill
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
