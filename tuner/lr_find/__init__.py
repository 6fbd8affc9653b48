"""The LR range test (Smith, WACV 2017): the curve and its reading (``_curve``), running the
sweep (``_sweep``), automatic bounds (``_bounds``), table and figure (``_output``), and its two
entry points, ``[space] lr = "auto"`` and ``tuner lr-find`` (``_commands``)."""

from tuner.lr_find._bounds import (
    ATTR_KEY,
    BOUNDS_RULE,
    AutoBounds,
    auto_bounds,
    bounds_attrs,
    optimizer_bounds,
    recorded_bounds,
    recorded_sweeps,
)
from tuner.lr_find._commands import default_figure_path, resolve_lr_bounds, run_lr_find_command
from tuner.lr_find._curve import (
    BETA,
    DIVERGE_FACTOR,
    MAX_LR,
    MIN_LR,
    STEPS,
    LRAnalysis,
    LRFindError,
    LRSweep,
    smooth,
)
from tuner.lr_find._output import (
    PAGE_TITLE,
    is_sweep_page,
    is_sweep_png,
    sweep_figure,
    sweep_table,
    write_sweep_figure,
    write_sweep_png,
)
from tuner.lr_find._sweep import lr_range_test, lr_range_tests, sweep_optimizer_kwargs

__all__ = [
    "LRFindError",
    "LRSweep",
    "LRAnalysis",
    "AutoBounds",
    "MIN_LR",
    "MAX_LR",
    "STEPS",
    "BETA",
    "DIVERGE_FACTOR",
    "ATTR_KEY",
    "sweep_optimizer_kwargs",
    "smooth",
    "lr_range_test",
    "lr_range_tests",
    "BOUNDS_RULE",
    "optimizer_bounds",
    "auto_bounds",
    "bounds_attrs",
    "recorded_bounds",
    "recorded_sweeps",
    "resolve_lr_bounds",
    "sweep_table",
    "sweep_figure",
    "write_sweep_figure",
    "write_sweep_png",
    "default_figure_path",
    "run_lr_find_command",
    "PAGE_TITLE",
    "is_sweep_page",
    "is_sweep_png",
]
