"""The LR range test (tuner.lr_find): sweeps, suggestions, "auto" bounds, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

import tuner.lr_find as lr_find
import tuner.lr_find._sweep as sweep_module
from tuner.cli import main
from tuner.datasets import load_split
from tuner.lr_find import LRFindError, LRSweep, auto_bounds, lr_range_test, smooth
from tuner.lr_find._bounds import recorded_attrs
from tuner.runner import run_tune
from tuner.storage import make_storage


def _lrs(n: int, low: float = 1e-6, high: float = 1.0) -> np.ndarray:
    return np.geomspace(low, high, n)


def _falling_losses(n: int, steep_at: float = 0.5) -> np.ndarray:
    """A clean logistic fall in log(lr) whose steepest point is at index ``steep_at * n``."""
    x = np.arange(n)
    return 0.2 + 2.0 / (1 + np.exp((x - steep_at * n) / (n / 20)))


# --- reading a curve ---------------------------------------------------------------------------


def test_suggestion_of_a_clean_curve_is_its_steepest_point() -> None:
    lrs = _lrs(200)
    sweep = LRSweep.from_losses(lrs, _falling_losses(200, steep_at=0.5), beta=0.0)
    a = sweep.analyze()
    assert a.reason is None
    # steepest descent of 0.2 + 2 / (1 + exp(...)) is at index 100 (central difference, +-1)
    assert sweep.suggestion() == pytest.approx(lrs[100], rel=0.1)
    assert a.falling_lr < a.suggested_lr < a.min_loss_lr
    assert a.diverged_lr is None  # never stopped: the curve reached its end


def test_suggestion_ignores_non_finite_points() -> None:
    lrs = _lrs(200)
    losses = _falling_losses(200, steep_at=0.4)
    losses[[30, 90, 150]] = [math.nan, math.inf, math.nan]  # nan/inf in the middle
    losses = np.append(losses[:180], [math.nan])  # and a nan at the end, where it stopped
    sweep = LRSweep.from_losses(lrs[:181], losses, beta=0.5)
    assert sweep.stop == "nan" and sweep.diverged_lr == pytest.approx(lrs[180])
    s = sweep.suggestion()
    assert math.isfinite(s)
    assert s == pytest.approx(lrs[80], rel=0.3)
    assert s not in (lrs[30], lrs[90], lrs[150])
    bad = (30, 90, 150, 180)
    assert all(math.isfinite(x) for i, x in enumerate(sweep.smoothed) if i not in bad)


def test_a_loss_that_never_falls_gives_a_clear_reason() -> None:
    lrs = _lrs(100)
    flat_noisy = 2.3 + 0.01 * np.sin(np.arange(100))
    rising = np.linspace(1.0, 3.0, 100)
    for losses in (flat_noisy, rising):
        sweep = LRSweep.from_losses(lrs, losses, optimizer="adam")
        a = sweep.analyze()
        assert a.suggested_lr is None and a.falling_lr is None
        assert "never falls" in a.reason and "--max-lr" in a.reason
        with pytest.raises(LRFindError, match=r"adam.*no suggestion.*never falls"):
            sweep.suggestion()


def test_too_few_points_gives_a_clear_reason() -> None:
    sweep = LRSweep.from_losses([1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.0, 0.5, math.nan])
    with pytest.raises(LRFindError, match="too few points.*--min-lr"):
        sweep.suggestion()
    assert sweep.analyze().diverged_lr == 1.0


def test_smooth_is_bias_corrected_and_skips_non_finite() -> None:
    assert smooth([2.0, 2.0, 2.0], beta=0.9) == pytest.approx([2.0, 2.0, 2.0])
    out = smooth([1.0, math.nan, 3.0], beta=0.5)
    assert out[0] == 1.0 and math.isnan(out[1])
    assert out[2] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25))


def test_attrs_round_trip_as_plain_json() -> None:
    losses = np.append(_falling_losses(60), math.nan)
    sweep = LRSweep.from_losses(_lrs(61), losses, optimizer="sgd",
                                optimizer_kwargs={"momentum": 0.9, "nesterov": False})
    attrs = sweep.to_attrs()
    text = json.dumps(attrs, allow_nan=False)  # plain JSON: no NaN tokens
    back = LRSweep.from_attrs(json.loads(text))
    assert back.optimizer == "sgd" and back.optimizer_kwargs["momentum"] == 0.9
    assert math.isnan(back.losses[-1]) and back.stop == "nan"
    assert back.suggestion() == pytest.approx(sweep.suggestion(), rel=1e-4)
    assert attrs["suggested_lr"] == sweep.suggestion()


# --- real sweeps ---------------------------------------------------------------------------------


def test_digits_suggestion_is_finite_and_inside_the_swept_range(tiny_cfg) -> None:
    cfg = tiny_cfg(dataset={"name": "digits"}, training={"batch_size": 64}, model={"hidden": [64]})
    for name in ("sgd", "adam"):
        sweep = lr_range_test(cfg, name, steps=150)
        a = sweep.analyze()
        assert a.reason is None, a.reason
        s = sweep.suggestion()
        assert math.isfinite(s) and sweep.lrs[0] <= s <= sweep.lrs[-1]
        assert a.falling_lr <= s <= a.min_loss_lr
        # the loss really fell: its smoothed minimum is well below its start (ln 10 = 2.30)
        assert min(sweep.smoothed) < 0.5 * sweep.smoothed[0]
        assert sweep.stop == "diverged" and s < a.diverged_lr <= sweep.max_lr
        assert len(sweep.lrs) <= 150 and sweep.batch_size == 64
    assert lr_range_test(cfg, "sgd", steps=150).optimizer_kwargs == {
        "momentum": 0.9, "nesterov": False
    }


def test_a_sweep_that_hits_nan_still_suggests_from_the_finite_part(tiny_cfg) -> None:
    cfg = tiny_cfg()
    # no smoothed-loss stop: the sweep runs on until the raw loss is no longer finite
    sweep = lr_range_test(cfg, "sgd", max_lr=1e12, steps=200, diverge_factor=1e300)
    assert sweep.stop in ("nan", "inf")
    assert not math.isfinite(sweep.losses[-1])
    s = sweep.suggestion()
    assert math.isfinite(s) and sweep.lrs[0] <= s < sweep.diverged_lr


def test_a_real_sweep_whose_loss_never_falls_says_so(tiny_cfg) -> None:
    sweep = lr_range_test(tiny_cfg(), "adam", max_lr=1e-5, steps=100)
    assert sweep.stop == "end" and sweep.diverged_lr is None
    assert "never falls" in sweep.analyze().reason
    with pytest.raises(LRFindError, match="never falls"):
        sweep.suggestion()


def test_sweeps_start_fresh_and_leave_nothing_behind(tiny_cfg) -> None:
    cfg = tiny_cfg()
    data = load_split(cfg.dataset, cfg.split)
    before = {k: getattr(data, k).clone() for k in ("X_train", "y_train", "X_val", "y_val")}
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    first = lr_range_test(cfg, "adam", data=data, steps=80)
    lr_range_test(cfg, "sgd", data=data, steps=80)  # in between: another optimizer
    again = lr_range_test(cfg, "adam", data=data, steps=80)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is untouched
    for key, tensor in before.items():
        assert torch.equal(getattr(data, key), tensor), key
    # the same seed gives the same curve: a fresh model and batch order each time
    assert first.lrs == again.lrs and first.losses == again.losses
    other = lr_range_test(cfg, "adam", data=data, steps=80, seed=7)
    assert other.losses != first.losses


def test_bad_sweep_arguments_are_refused(tiny_cfg) -> None:
    cfg = tiny_cfg()
    with pytest.raises(LRFindError, match="min_lr"):
        lr_range_test(cfg, "adam", min_lr=1.0, max_lr=0.1)
    with pytest.raises(LRFindError, match="steps"):
        lr_range_test(cfg, "adam", steps=1)
    with pytest.raises(LRFindError, match="unknown optimizer 'lion'"):
        lr_range_test(cfg, "lion")


# --- "auto" bounds ---------------------------------------------------------------------------


def _sweep(optimizer: str, steep_at: float, n: int = 200, diverge: bool = True) -> LRSweep:
    lrs = _lrs(n, 1e-7, 10.0)
    losses = _falling_losses(n, steep_at)
    if diverge:  # the loss turns up at 80 % of the sweep and is infinite at 90 %
        rise = int(0.8 * n)
        losses[rise:] += np.linspace(0.0, 1.0, n - rise)
        losses = np.append(losses[: int(0.9 * n)], math.inf)
        lrs = lrs[: len(losses)]
    return LRSweep.from_losses(lrs, losses, optimizer=optimizer, beta=0.5)


def test_auto_bounds_are_the_envelope_of_each_optimizers_range() -> None:
    sgd, adam = _sweep("sgd", 0.7), _sweep("adam", 0.4)
    never = LRSweep.from_losses(_lrs(100), np.linspace(1, 2, 100), optimizer="rmsprop")
    b = auto_bounds([sgd, adam, never])
    assert b.low == pytest.approx(adam.suggestion() / 10)
    assert b.high == pytest.approx(sgd.diverged_lr / 2)
    assert sgd.analyze().min_loss_lr < sgd.diverged_lr / 2
    for s in (sgd, adam):
        low, high = b.per_optimizer[s.optimizer]
        assert low == pytest.approx(s.suggestion() / 10)
        assert low < s.suggestion() <= high < s.diverged_lr
        assert b.low <= low and high <= b.high
    assert set(b.suggestions) == {"sgd", "adam"} and "never falls" in b.failed["rmsprop"]
    with pytest.raises(LRFindError, match="no suggestion for any optimizer.*rmsprop"):
        auto_bounds([never])


def test_auto_bounds_without_divergence_reach_the_last_rate() -> None:
    s = _sweep("adam", 0.4, diverge=False)
    assert auto_bounds([s]).high == pytest.approx(s.lrs[-1])


def test_auto_high_bound_never_falls_below_the_minimum_of_the_loss() -> None:
    # the loss falls right up to the rate where it blows up: high = the min-loss rate
    n = 200
    losses = np.append(_falling_losses(n, 0.8)[:180], math.inf)
    s = LRSweep.from_losses(_lrs(181, 1e-7, 10.0 ** (-7 + 8 * 180 / 199)), losses, beta=0.5)
    a = s.analyze()
    assert a.min_loss_lr > a.diverged_lr / 2
    assert auto_bounds([s]).high == pytest.approx(a.min_loss_lr)


def _trial_lr_bounds(study: optuna.Study) -> set[tuple[float, float]]:
    return {
        (t.distributions["lr"].low, t.distributions["lr"].high)
        for t in study.get_trials(deepcopy=False)
        if "lr" in t.distributions
    }


def test_auto_bounds_are_recorded_seeded_and_reused_on_resume(
    tiny_cfg, sqlite_url, monkeypatch
) -> None:
    cfg = tiny_cfg(space={"lr": "auto", "optimizers": ["sgd", "adam"]})
    calls: list[str] = []
    real = sweep_module.lr_range_test

    def counting(cfg, optimizer, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(optimizer)
        return real(cfg, optimizer, steps=120, **kw)

    monkeypatch.setattr(sweep_module, "lr_range_test", counting)
    run_tune(cfg, sqlite_url, n_trials=3, progress=False)
    assert calls == ["sgd", "adam"]
    study = optuna.load_study(study_name=cfg.name, storage=make_storage(sqlite_url))
    rec = recorded_attrs(study)["lr_find"]
    assert "lr_find" not in study.user_attrs  # kept out of the dashboard's attribute table
    json.dumps(rec, allow_nan=False)
    low, high = rec["bounds"]
    assert 0 < low < high
    assert set(rec["optimizers"]) == {"sgd", "adam"}
    sweeps = {s.optimizer: s for s in lr_find.recorded_sweeps(study)}
    assert set(sweeps) == {"sgd", "adam"}
    assert low == pytest.approx(min(s.suggestion() for s in sweeps.values()) / 10, rel=1e-4)
    # the study's trials sample lr from the recorded bounds
    assert _trial_lr_bounds(study) == {(low, high)}
    # the first trials try each optimizer's suggested rate (best sweep first)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    enqueued = rec["enqueued"]
    assert {e["optimizer"] for e in enqueued} == {"sgd", "adam"}
    for trial, fixed in zip(trials, enqueued, strict=False):
        assert trial.params["optimizer"] == fixed["optimizer"]
        assert trial.params["lr"] == pytest.approx(sweeps[fixed["optimizer"]].suggestion(),
                                                   rel=1e-4)
        if fixed["optimizer"] == "sgd":
            assert trial.params["optimizer.momentum"] == 0.9
    assert low <= min(e["lr"] for e in enqueued) and max(e["lr"] for e in enqueued) <= high

    # resume: no new sweep, same bounds
    def must_not_run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the LR range test ran again on resume")

    monkeypatch.setattr(sweep_module, "lr_range_test", must_not_run)
    outcome = run_tune(cfg, sqlite_url, n_trials=5, progress=False)
    assert outcome.finished_after == 5
    assert _trial_lr_bounds(outcome.study) == {(low, high)}
    assert recorded_attrs(outcome.study)["lr_find"] == rec


def test_a_failing_auto_sweep_writes_nothing(tiny_cfg, sqlite_url, monkeypatch) -> None:
    cfg = tiny_cfg(space={"lr": "auto", "optimizers": ["adam"]})
    never = LRSweep.from_losses(_lrs(100), np.linspace(1, 2, 100), optimizer="adam")
    monkeypatch.setattr(sweep_module, "lr_range_test", lambda *a, **k: never)
    with pytest.raises(LRFindError, match="never falls"):
        run_tune(cfg, sqlite_url, progress=False)
    storage = make_storage(sqlite_url)
    assert cfg.name not in [s.study_name for s in optuna.get_all_study_summaries(storage)]


def test_fixed_bounds_run_no_sweep(tiny_cfg, sqlite_url, monkeypatch) -> None:
    monkeypatch.setattr(sweep_module, "lr_range_test", lambda *a, **k: pytest.fail("swept"))
    outcome = run_tune(tiny_cfg(), sqlite_url, n_trials=1, progress=False)
    assert "lr_find" not in outcome.study.user_attrs
    assert _trial_lr_bounds(outcome.study) == {(1e-3, 0.3)}


# --- the command line ------------------------------------------------------------------------


def _study_file(tmp_path: Path, dataset: str = "iris") -> Path:
    path = tmp_path / "lrf.toml"
    path.write_text(
        '[study]\nname = "lrf"\n'
        f'[dataset]\nname = "{dataset}"\n'
        "[model]\nhidden = [16]\n"
        "[training]\nbatch_size = 16\n"
        '[space]\nlr = "auto"\noptimizers = ["sgd", "adam"]\n'
    )
    return path


def _line_sweep(optimizer: str, scale: float = 1.0) -> LRSweep:
    lrs = [1e-4 * 1.2**i for i in range(40)]
    losses = [scale * (2.0 - 1.5 * i / 39) for i in range(40)]
    return LRSweep.from_losses(lrs, losses, optimizer=optimizer)


def test_sweep_figure_keeps_equal_curves_visible() -> None:
    from tuner.lr_find import sweep_figure

    sweeps = [_line_sweep("adam"), _line_sweep("adamw", scale=1.005), _line_sweep("sgd", 1.1)]
    fig = sweep_figure(sweeps)
    lines = {t.name.split()[0]: t for t in fig.data if t.mode == "lines"}
    assert [t.name for t in lines.values()] == [
        "adam (smoothed)", "adamw (smoothed; within 1% of adam)", "sgd (smoothed)"]
    dashes = [t.line.dash for t in lines.values()]
    assert len(set(dashes)) == 3 and dashes[0] == "solid"  # each curve its own line style
    marks = {t.name: t.marker.size for t in fig.data if t.name.endswith("suggested")}
    assert marks["adamw suggested"] < marks["adam suggested"]  # the one beneath shows round it


def test_sweep_png_replaces_only_its_own_png(tmp_path) -> None:
    from tuner.lr_find import is_sweep_png, write_sweep_png
    from tuner.lr_find._output import _png_with_text

    mine = tmp_path / "mine.png"
    assert _png_chunks_ok(_TINY_PNG)
    mine.write_bytes(_png_with_text(_TINY_PNG))
    assert is_sweep_png(mine) and _png_chunks_ok(mine.read_bytes())
    other = tmp_path / "photo.png"
    other.write_bytes(_TINY_PNG)
    assert not is_sweep_png(other)
    from tuner.outputs import OutputError

    with pytest.raises(OutputError, match="photo.png exists and is not a tuner lr-find PNG"):
        write_sweep_png(None, other, "/bin/false")  # refused before any rendering
    assert other.read_bytes() == _TINY_PNG


def _chunk(kind: bytes, body: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_chunks_ok(data: bytes) -> bool:
    """Every chunk's length and CRC are right and the last one is IEND."""
    import struct
    import zlib

    pos, kind = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        body = data[pos + 4:pos + 8 + n]
        if struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] != zlib.crc32(body):
            return False
        kind, pos = body[:4], pos + 12 + n
    return pos == len(data) and kind == b"IEND"


# a 1x1 grey PNG: signature, IHDR, IDAT, IEND
_TINY_PNG = (
    b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", bytes.fromhex("00000001000000010800000000"))
    + _chunk(b"IDAT", __import__("zlib").compress(b"\x00\x80")) + _chunk(b"IEND", b"")
)


@pytest.mark.browser
def test_cli_lr_find_writes_a_png_beside_the_page(tmp_path, capsys, monkeypatch) -> None:
    from tests.test_report import chromium
    from tuner.lr_find import is_sweep_png

    monkeypatch.setenv("TUNER_CHROMIUM", chromium())
    study = _study_file(tmp_path)
    assert main(["lr-find", str(study), "--steps", "60", "--optimizer", "adam"]) == 0
    png = tmp_path / "reports" / "lrf.lr_find.png"
    assert f"wrote {png}" in capsys.readouterr().out.replace("\n", "")
    assert is_sweep_png(png) and _png_chunks_ok(png.read_bytes())


def test_cli_lr_find_without_a_browser_writes_the_page_and_warns(tmp_path, capsys,
                                                                 monkeypatch) -> None:
    monkeypatch.setattr("tuner.report.find_browser", lambda: None)
    study = _study_file(tmp_path)
    assert main(["lr-find", str(study), "--steps", "60", "--optimizer", "adam"]) == 0
    assert "no Chromium found for the PNG copy" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["lrf.lr_find.html"]


def test_cli_lr_find_prints_rates_and_writes_the_plot(tmp_path, capsys) -> None:
    study = _study_file(tmp_path)
    assert main(["lr-find", str(study), "--steps", "150"]) == 0
    out = capsys.readouterr().out
    for text in ("suggested", "falls from", "diverged", "sweep time", "sgd", "adam", "search"):
        assert text in out
    plot = tmp_path / "reports" / "lrf.lr_find.html"
    html = plot.read_text()
    assert "plotly" in html.lower() and "adam (smoothed)" in html and "sgd suggested" in html


def test_cli_lr_find_without_a_suggestion_says_why_and_fails(tmp_path, capsys) -> None:
    study = _study_file(tmp_path)
    out = tmp_path / "flat.html"
    code = main(["lr-find", str(study), "--optimizer", "adam", "--max-lr", "1e-5",
                 "--steps", "100", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "no suggested rate for adam" in err and "never falls" in err
    assert out.exists()  # the plot shows why


def test_cli_lr_find_refuses_bad_options(tmp_path, capsys) -> None:
    study = _study_file(tmp_path)
    assert main(["lr-find", str(study), "--optimizer", "lion"]) == 2
    assert "--optimizer 'lion' is invalid" in capsys.readouterr().err
    assert main(["lr-find", str(study), "--min-lr", "1", "--max-lr", "0.1"]) == 2
    assert "--min-lr 1 and --max-lr 0.1 are invalid" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_cli_lr_find_out_onto_a_folder_names_that_folder(tmp_path, capsys) -> None:
    study = _study_file(tmp_path)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["lr-find", str(study), "--out", str(keep)]) == 2  # refused before the sweep
    err = capsys.readouterr().err
    assert err == (f"tuner: error: {keep} is a folder: --out needs the path of a file for the "
                   "lr-find page (a new one, or a previous lr-find page).\n")
    assert [p.name for p in keep.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "lrf.toml"]


def test_sweep_page_replaces_only_a_previous_sweep_page(tmp_path) -> None:
    import plotly.graph_objects as go

    from tuner.lr_find import PAGE_TITLE, is_sweep_page, write_sweep_figure
    from tuner.outputs import OutputError

    page = tmp_path / "lr.html"
    write_sweep_figure(go.Figure(), page)
    assert is_sweep_page(page)
    write_sweep_figure(go.Figure(), page)  # its own previous page
    old = tmp_path / "old.html"  # a page written before the generator tag
    go.Figure(layout={"title": f"{PAGE_TITLE} (x)"}).write_html(old)
    assert is_sweep_page(old)
    write_sweep_figure(go.Figure(), old)
    other = tmp_path / "other.html"
    go.Figure(layout={"title": "my own plot"}).write_html(other)
    before = other.read_bytes()
    with pytest.raises(OutputError, match="other.html exists and is not a tuner lr-find page"):
        write_sweep_figure(go.Figure(), other)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.html", "old.html", "other.html"]


@pytest.mark.parametrize("name", ["lrf.png", "lrf"])
def test_cli_lr_find_out_must_name_an_html_page(tmp_path, capsys, name) -> None:
    """The plot is an HTML page: ``--out lrf.png`` would hold HTML and clash with its own PNG
    copy; it is refused before the sweep, naming the path, and nothing is written."""
    study = _study_file(tmp_path)
    out = tmp_path / name
    assert main(["lr-find", str(study), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tuner: error: --out {out} is invalid") and ".html" in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lrf.toml"]
