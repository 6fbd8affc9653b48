"""What the LR range test shows: a rich table, a plotly figure, its page and its PNG copy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner.lr_find._bounds import AutoBounds
from tuner.lr_find._curve import LRFindError, LRSweep
from tuner.outputs import FileKind

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "sweep_table",
    "sweep_figure",
    "write_sweep_figure",
    "write_sweep_png",
    "is_sweep_page",
    "is_sweep_png",
    "SWEEP_PAGE",
    "SWEEP_PNG",
    "PAGE_TITLE",
]


def sweep_table(sweeps: Sequence[LRSweep], bounds: AutoBounds | None = None) -> Any:
    """A ``rich.table.Table``: per optimizer the rates, how the sweep ended, its seconds, and
    (with ``bounds``) its own [low, high]."""
    from rich import box
    from rich.table import Table

    title = "LR range test"
    if bounds is not None:
        title += f": lr bounds [{bounds.low:.3g}, {bounds.high:.3g}]"
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        padding=(0, 1, 0, 0),
        caption=f"sweep time {sum(s.seconds for s in sweeps):.2f} s", caption_justify="left",
    )
    columns = ["optimizer", "suggested", "falls from", "diverged", "batches", "s"]
    if bounds is not None:
        columns += ["low", "high"]
    for col in columns:
        table.add_column(col, justify="left" if col == "optimizer" else "right", no_wrap=True)

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3g}"

    for s in sweeps:
        a = s.analyze()
        diverged = fmt(a.diverged_lr) + (f" ({s.stop})" if s.stop in ("nan", "inf") else "")
        row = [
            s.optimizer, fmt(a.suggested_lr) if a.reason is None else "[red]none[/red]",
            fmt(a.falling_lr), diverged, str(len(s.lrs)), f"{s.seconds:.1f}",
        ]
        if bounds is not None:
            b = bounds.per_optimizer.get(s.optimizer)
            row += ["-", "-"] if b is None else [fmt(b[0]), fmt(b[1])]
        table.add_row(*row)
    return table


# One line style per optimizer, so that equal curves (Adam and AdamW sweep alike: neither has
# weight decay in the sweep) stay visible: a dashed line over a solid one shows both colours.
SWEEP_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


SAME_CURVE = 0.01  # curves within 1 % of each other at every point are labelled as such


def _same_curve(a: LRSweep, b: LRSweep) -> bool:
    """The two sweeps drew the same smoothed curve, to :data:`SAME_CURVE` at every rate."""
    if len(a.lrs) != len(b.lrs) or not np.allclose(a.lrs, b.lrs, rtol=1e-6, atol=0):
        return False
    x, y = np.asarray(a.smoothed, dtype=float), np.asarray(b.smoothed, dtype=float)
    return bool(np.allclose(x, y, rtol=SAME_CURVE, atol=0, equal_nan=True))


def sweep_figure(sweeps: Sequence[LRSweep], bounds: AutoBounds | None = None) -> go.Figure:
    """Loss against learning rate (log axis), one colour and one line style per optimizer.

    Raw mini-batch losses are faint dots, the smoothed loss a line (solid, dashed, dotted, ...:
    a curve equal to an earlier one stays visible, and its legend says so, as do its smaller
    markers on top of the earlier one's); the suggested rate is a
    star, the lowest falling rate a triangle, the divergence rate an 'x' (all on the smoothed
    line); ``bounds`` adds the study's [low, high] as dashed vertical lines.
    """
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS

    fig = go.Figure()
    top = 0.0
    for n, s in enumerate(sweeps):
        color = DEFAULT_PLOTLY_COLORS[n % len(DEFAULT_PLOTLY_COLORS)]
        dash = SWEEP_DASHES[n % len(SWEEP_DASHES)]
        same = [o.optimizer for o in sweeps[:n] if _same_curve(o, s)]
        finite = [(lr, v) for lr, v in zip(s.lrs, s.smoothed, strict=True) if math.isfinite(v)]
        top = max([top, *(v for _, v in finite)])
        fig.add_trace(go.Scatter(
            x=list(s.lrs), y=[v if math.isfinite(v) else None for v in s.losses],
            mode="markers", name=f"{s.optimizer} raw", legendgroup=s.optimizer,
            marker={"color": color, "size": 4, "opacity": 0.3}, showlegend=False,
        ))
        fig.add_trace(go.Scatter(
            x=[lr for lr, _ in finite], y=[v for _, v in finite], mode="lines",
            name=f"{s.optimizer} (smoothed"
            + (f"; within {SAME_CURVE:.0%} of {same[0]})" if same else ")"),
            legendgroup=s.optimizer, line={"color": color, "dash": dash, "width": 2 + n % 2},
        ))
        a = s.analyze()
        marks = [("suggested", a.suggested_lr, "star"), ("falls from", a.falling_lr,
                 "triangle-up"), ("diverged", a.diverged_lr, "x")]
        for label, lr, symbol in marks:
            if lr is None or not finite:
                continue
            y = float(np.interp(math.log(lr), [math.log(x) for x, _ in finite],
                                [v for _, v in finite]))
            fig.add_trace(go.Scatter(
                x=[lr], y=[y], mode="markers", legendgroup=s.optimizer, showlegend=False,
                name=f"{s.optimizer} {label}",
                hovertemplate=f"{s.optimizer} {label}: lr {lr:.3g}<extra></extra>",
                marker={"symbol": symbol, "size": 16 - 4 * (n % 2), "color": color,
                        "line": {"color": "black", "width": 1}},
            ))
    if bounds is not None:
        for label, x in (("low", bounds.low), ("high", bounds.high)):
            fig.add_trace(go.Scatter(
                x=[x, x], y=[0, top * 1.15 or 1.0], mode="lines", name=f"bound {label}",
                line={"color": "gray", "dash": "dash"},
                hovertemplate=f"lr bound {label}: {x:.3g}<extra></extra>",
            ))
    fig.update_layout(
        title=f"{PAGE_TITLE} "
        "(star: suggested, triangle: falls from, x: diverged)",
        xaxis={"title": "learning rate (log)", "type": "log"},
        yaxis={"title": "training loss (mini-batch)", "range": [0, top * 1.15 or 1.0]},
    )
    return fig


PAGE_MARKER = '<meta name="generator" content="tuner lr-find">'
PAGE_TITLE = "LR range test: loss against learning rate"


def is_sweep_page(path: Path) -> bool:
    """True when ``path`` is a page :func:`write_sweep_figure` wrote (its generator tag, or for
    pages from before the tag, a plotly page with the sweep figure's title)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(1024)
            if PAGE_MARKER in head:
                return True
            if not head.lstrip().lower().startswith(("<!doctype html>", "<html>")):
                return False
            return PAGE_TITLE in head + fh.read()
    except OSError:
        return False


SWEEP_PAGE = FileKind("lr-find page", is_sweep_page)


def write_sweep_figure(fig: go.Figure, path: Path) -> Path:
    """Write the figure as one self-contained HTML file (plotly.js inlined, works offline).

    An existing ``path`` is replaced only when it is a previous lr-find page.

    Raises:
        OutputError: ``path`` is a folder or a file that is not an lr-find page (nothing is
            written).
    """
    from tuner.outputs import write_file

    page = fig.to_html(include_plotlyjs=True, full_html=True)
    page = page.replace("<head>", f"<head>{PAGE_MARKER}", 1)
    return write_file(path, page, SWEEP_PAGE)


# The PNG copy of the plot carries a tEXt chunk naming its writer, so that a later lr-find
# replaces its own PNG and never a picture it did not write.
PNG_TEXT = b"Software\x00tuner lr-find"
PNG_SIZE = {"width": 1000, "height": 560}


def _png_with_text(png: bytes) -> bytes:
    """``png`` with the :data:`PNG_TEXT` chunk after its IHDR chunk (the first, 33 bytes in)."""
    import struct
    import zlib

    chunk = b"tEXt" + PNG_TEXT
    text = struct.pack(">I", len(PNG_TEXT)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return png[:33] + text + png[33:]


def is_sweep_png(path: Path) -> bool:
    """True when ``path`` is a PNG :func:`write_sweep_png` wrote (its tEXt chunk)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") and PNG_TEXT in head


SWEEP_PNG = FileKind("lr-find PNG", is_sweep_png)


def write_sweep_png(fig: go.Figure, path: Path, browser: str) -> Path:
    """Render the figure as a PNG (:data:`PNG_SIZE` pixels) with kaleido and ``browser`` (a
    Chromium), written atomically to ``path``.

    Raises:
        OutputError: ``path`` exists and is not a PNG an earlier lr-find wrote (nothing is
            written).
        LRFindError: rendering failed (nothing is written).
    """
    import os
    import tempfile

    import kaleido

    from tuner.outputs import check_file_target

    check_file_target(path, SWEEP_PNG)  # missing, empty, or an earlier lr-find PNG
    try:
        png = kaleido.calc_fig_sync(
            fig, opts={**PNG_SIZE, "format": "png"}, kopts={"path": browser, "mathjax": False}
        )
    except Exception as exc:  # kaleido and choreographer raise many kinds
        raise LRFindError(
            f"PNG export with kaleido and {browser} failed: {type(exc).__name__}: {exc}"
        ) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_png_with_text(bytes(png)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
