"""Registry of scikit-learn datasets, split and scaled into float32 tensors.

Only data that scikit-learn ships (``load_*``) or generates (``make_*``) is available: the
``fetch_*`` loaders download from the internet, which tuner does not rely on, and asking for one
fails up front with :class:`~tuner.errors.ConfigError`.

Splitting: ``train_test_split`` twice (stratified for classification), then a
``StandardScaler`` fitted on the training part only. Regression targets are standardized with
the training mean and standard deviation (``target_scale`` turns RMSE back into target units).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.errors import ConfigError

if TYPE_CHECKING:  # numpy, torch and scikit-learn are imported by the loaders, not here, so
    # that a study file is validated against DATASETS without importing them
    import numpy as np
    import torch

    from tuner.config import DatasetConfig, SplitConfig

__all__ = [
    "DatasetSpec", "DATASETS", "SplitData", "load_split", "FETCH_ONLY", "check_not_fetch",
    "estimated_bytes", "sklearn_call", "split_kwargs", "load_xy", "load_record",
    "dataset_task", "import_callable", "one_line", "register_data", "is_registered_spec",
    "registered_sha256", "registered_task", "ARRAYS_SPEC_PREFIX",
]


# The keyword parameters of every scikit-learn function tuner loads, in signature order, recorded
# as data so that a study file is checked without importing scikit-learn (tests/test_datasets.py
# compares them with ``inspect.signature`` of the installed scikit-learn).
SIGNATURES: dict[str, tuple[str, ...]] = {
    "load_breast_cancer": ("return_X_y", "as_frame"),
    "load_diabetes": ("return_X_y", "as_frame", "scaled"),
    "load_digits": ("n_class", "return_X_y", "as_frame"),
    "load_iris": ("return_X_y", "as_frame"),
    "load_wine": ("return_X_y", "as_frame"),
    "make_blobs": ("n_samples", "n_features", "centers", "cluster_std", "center_box", "shuffle",
                   "random_state", "return_centers"),
    "make_circles": ("n_samples", "shuffle", "noise", "random_state", "factor"),
    "make_classification": (
        "n_samples", "n_features", "n_informative", "n_redundant", "n_repeated", "n_classes",
        "n_clusters_per_class", "weights", "flip_y", "class_sep", "hypercube", "shift", "scale",
        "shuffle", "random_state", "return_X_y"),
    "make_friedman1": ("n_samples", "n_features", "noise", "random_state"),
    "make_friedman2": ("n_samples", "noise", "random_state"),
    "make_friedman3": ("n_samples", "noise", "random_state"),
    "make_gaussian_quantiles": ("mean", "cov", "n_samples", "n_features", "n_classes", "shuffle",
                                "random_state"),
    "make_hastie_10_2": ("n_samples", "random_state"),
    "make_moons": ("n_samples", "shuffle", "noise", "random_state"),
    "make_regression": (
        "n_samples", "n_features", "n_informative", "n_targets", "bias", "effective_rank",
        "tail_strength", "noise", "shuffle", "coef", "random_state"),
    "make_s_curve": ("n_samples", "noise", "random_state"),
    "make_sparse_uncorrelated": ("n_samples", "n_features", "random_state"),
    "make_swiss_roll": ("n_samples", "noise", "random_state", "hole"),
}

# tuner's own [dataset] keys for generators (with tuner's defaults, see tuner.config)
GENERATOR_KEYS = ("n_samples", "n_features", "n_informative", "n_classes", "noise", "seed")

# keywords tuner leaves at scikit-learn's defaults or sets itself (the call must return one
# (X, y) array pair; random_state is ``seed``); they are not [dataset] keys
_NOT_KEYS = ("return_X_y", "as_frame", "return_centers", "coef", "random_state", "n_targets")

# scikit-learn functions that are not one single-target (X, y) set: name -> why, for one line
NOT_SINGLE_TARGET: dict[str, str] = {
    "load_linnerud": "it has 3 targets (multi-output regression)",
    "make_multilabel_classification": "it is multi-label (multi-output) classification",
    "load_files": "it reads a folder of text files (use [dataset] path or factory)",
    "load_svmlight_file": "it reads a file (use [dataset] path or factory)",
    "load_svmlight_files": "it reads files (use [dataset] path or factory)",
    "load_sample_image": "it is an image, not an (X, y) set",
    "load_sample_images": "they are images, not an (X, y) set",
    **{name: "it makes a matrix, not an (X, y) set" for name in (
        "make_biclusters", "make_checkerboard", "make_low_rank_matrix",
        "make_sparse_coded_signal", "make_sparse_spd_matrix", "make_spd_matrix")},
}


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    Attributes:
        name: the study-file name (``[dataset] name``).
        task: 'classification' or 'regression'.
        load: returns ``(X, y)`` as numpy arrays, X of shape (n_samples, n_features); it imports
            scikit-learn when called.
        generated: True for ``make_*`` generators (random; ``seed`` is their random_state).
        source: the scikit-learn function, for messages and notes.
        renames: tuner key -> the scikit-learn keyword it sets (``seed`` -> ``random_state``;
            ``noise`` -> ``flip_y`` for make_classification).
        width: the number of features where the function fixes it (None: ``n_features``).
    """

    name: str
    task: str
    load: Callable[[DatasetConfig], tuple[np.ndarray, np.ndarray]]
    generated: bool
    source: str
    renames: tuple[tuple[str, str], ...] = ()
    width: int | None = None

    @property
    def tuner_keys(self) -> tuple[str, ...]:
        """tuner's generator keys (GENERATOR_KEYS) that this function takes."""
        if not self.generated:
            return ()
        sig, renames = SIGNATURES[self.source], dict(self.renames)
        return tuple(k for k in GENERATOR_KEYS if renames.get(k, k) in sig)

    @property
    def keywords(self) -> tuple[str, ...]:
        """The function's other keywords a ``[dataset]`` table may give, by their own names."""
        taken = set(_NOT_KEYS) | set(dict(self.renames).values())
        return tuple(k for k in SIGNATURES[self.source]
                     if k not in taken and k not in GENERATOR_KEYS)

    @property
    def allowed_keys(self) -> tuple[str, ...]:
        """Every ``[dataset]`` key this dataset takes besides ``name``."""
        return (*self.tuner_keys, *self.keywords)

    def call_kwargs(self, cfg: DatasetConfig) -> dict:
        """The keyword arguments of the scikit-learn call for ``cfg`` (lists, not tuples)."""
        renames = dict(self.renames)
        kwargs = {renames.get(k, k): getattr(cfg, k) for k in self.tuner_keys}
        given = dict(cfg.kwargs)
        if self.source == "make_classification" and "n_redundant" not in given:
            kwargs["n_redundant"] = max(0, min(2, cfg.n_features - cfg.n_informative))
        kwargs.update({k: _as_lists(v) for k, v in given.items()})
        if not self.generated:  # load_*: (X, y), not a Bunch (the make_* default to (X, y))
            kwargs["return_X_y"] = True
        return kwargs


def sklearn_call(cfg: DatasetConfig) -> tuple[str, dict] | None:
    """``(function, kwargs)``: ``sklearn.datasets.<function>(**kwargs)`` returns the dataset's
    ``(X, y)`` exactly as tuner loads it (before the split); None for the user's own data (a
    file or a factory: see :func:`load_record`)."""
    if cfg.name is None:
        return None
    spec = DATASETS[cfg.name]
    return spec.source, spec.call_kwargs(cfg)


def split_kwargs(split: SplitConfig) -> tuple[float, float]:
    """The ``test_size`` of :func:`load_split`'s two ``train_test_split`` calls: the first
    splits off validation + test from train, the second splits that part into validation and
    test (both with ``random_state = split.seed``, stratified for classification)."""
    holdout = split.validation + split.test
    return holdout, split.test / holdout


def _as_lists(v: object) -> object:
    return [_as_lists(x) for x in v] if isinstance(v, tuple) else v


def _sklearn(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as skd

    spec = DATASETS[cfg.name]  # type: ignore[index]
    return getattr(skd, spec.source)(**spec.call_kwargs(cfg))


_sklearn.pure = True  # type: ignore[attr-defined]  # a function of its settings: split_cache


def _shipped(name: str, task: str) -> DatasetSpec:
    return DatasetSpec(name, task, _sklearn, False, f"load_{name}")


def _made(source: str, task: str, width: int | None = None,
          renames: tuple[tuple[str, str], ...] = ()) -> DatasetSpec:
    return DatasetSpec(source, task, _sklearn, True, source,
                       (("seed", "random_state"), *renames), width)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        _shipped("digits", "classification"),
        _shipped("iris", "classification"),
        _shipped("wine", "classification"),
        _shipped("breast_cancer", "classification"),
        _shipped("diabetes", "regression"),
        _made("make_classification", "classification", renames=(("noise", "flip_y"),)),
        _made("make_regression", "regression"),
        _made("make_blobs", "classification"),
        _made("make_circles", "classification", width=2),
        _made("make_moons", "classification", width=2),
        _made("make_gaussian_quantiles", "classification"),
        _made("make_hastie_10_2", "classification", width=10),
        _made("make_friedman1", "regression"),
        _made("make_friedman2", "regression", width=4),
        _made("make_friedman3", "regression", width=4),
        _made("make_sparse_uncorrelated", "regression"),
        _made("make_s_curve", "regression", width=3),
        _made("make_swiss_roll", "regression", width=3),
    ]
}

# scikit-learn's own names of the shipped sets: load_iris -> iris
ALIASES: dict[str, str] = {
    spec.source: name for name, spec in DATASETS.items() if spec.source != name
}


# Data scikit-learn only downloads: a name a user may write -> the real scikit-learn call that
# downloads it, so that asking for one gets a clear message (checked against sklearn.datasets
# by tests/test_datasets.py).
FETCH_ONLY: dict[str, str] = {
    **{
        name: f"fetch_{name}()"
        for name in (
            "california_housing", "covtype", "kddcup99", "lfw_people", "lfw_pairs",
            "olivetti_faces", "rcv1", "species_distributions", "20newsgroups",
            "20newsgroups_vectorized",
        )
    },
    "openml": "fetch_openml()",
    "file": "fetch_file()",
    "mnist": 'fetch_openml("mnist_784")',
    "fashion_mnist": 'fetch_openml("Fashion-MNIST")',
}


def check_not_fetch(name: str, where: str) -> None:
    """Raise ConfigError if ``name`` is a dataset scikit-learn only downloads.

    The message is one line; it names the real ``sklearn.datasets`` loader where there is one.
    """
    bare = name.lower().removeprefix("fetch_").replace("-", "_")
    if bare not in FETCH_ONLY and not name.lower().startswith("fetch_"):
        return
    loader = (
        f" (sklearn.datasets.{FETCH_ONLY[bare]})" if bare in FETCH_ONLY else ""
    )
    raise ConfigError(
        f'{where}: [dataset] name = "{name}" is invalid: it needs a download{loader}; '
        f"scikit-learn's fetch_* loaders need the network, and tuner uses only data "
        f"scikit-learn ships or generates: use one of {', '.join(DATASETS)}."
    )


# Peak memory of loading a generated dataset, in bytes per float64 cell of X (n_samples x
# n_features x 8 bytes): the generator's array and its temporaries, the split copies, the scaled
# float64 parts and the float32 tensors, measured with tests/test_datasets.py's
# test_memory_estimate_covers_the_real_peak.
PEAK_PER_CELL = 4 * 8


def estimated_bytes(cfg: DatasetConfig) -> int:
    """Estimated peak memory in bytes of :func:`load_split` for a generated dataset.

    ``PEAK_PER_CELL x n_samples x (features + 1)``, the features being ``n_features`` or the
    generator's fixed width (make_moons: 2, make_hastie_10_2: 10, ...). Shipped datasets are
    small (under 2 MB) and user data is measured by its file: they get 0.
    """
    spec = DATASETS.get(cfg.name) if cfg.name else None
    if spec is None or not spec.generated:
        return 0
    return PEAK_PER_CELL * cfg.n_samples * (_width(spec, cfg) + 1)


def _width(spec: DatasetSpec, cfg: DatasetConfig) -> int:
    return spec.width if spec.width is not None else cfg.n_features


def available_bytes() -> int | None:
    """Memory this process may still allocate, in bytes, or None where it cannot be read.

    Linux: ``MemAvailable`` of /proc/meminfo, lowered to a cgroup v2 ``memory.max`` headroom
    where one is set; elsewhere the physical memory (``os.sysconf``).
    """
    import os
    from pathlib import Path

    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            found.append(max(0, int(limit) - int(used)))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def check_memory(cfg: DatasetConfig, where: str, available: int | None = None) -> None:
    """Refuse a generated dataset whose estimated peak memory exceeds what is available.

    Args:
        cfg: the ``[dataset]`` section.
        where: the study file, for the message.
        available: bytes available (default: :func:`available_bytes`; no check when unknown).

    Raises:
        ConfigError: one line naming the file, ``n_samples`` and ``n_features``, the estimate
            and the available memory.
    """
    need = estimated_bytes(cfg)
    if need == 0:
        return
    available = available_bytes() if available is None else available
    if available is None or need <= available:
        return
    width = _width(DATASETS[cfg.name], cfg)  # type: ignore[index]
    raise ConfigError(
        f"{where}: [dataset] n_samples = {cfg.n_samples}, n_features = {width} is too "
        f"large for this machine: loading it needs about {_size(need)} of memory "
        f"({PEAK_PER_CELL} bytes x n_samples x (n_features + 1)) and {_size(available)} is "
        f"available; lower n_samples or n_features."
    )


# ---------------------------------------------------------------------------------------------
# The user's own data: ``[dataset] path`` (a file) or ``[dataset] factory`` (a function).

# readable data files: suffix -> what it must hold
DATA_SUFFIXES: dict[str, str] = {
    ".csv": "a header row naming the columns, comma-separated",
    ".npz": "arrays X (n_samples, n_features) and y (n_samples,), saved by numpy.savez",
    ".parquet": "a table with named columns (read with pyarrow)",
}
# cell texts that mean "missing" in a CSV (compared lower-case, stripped)
MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none", "?"})


def data_path(cfg: DatasetConfig) -> Path:
    """``[dataset] path`` resolved against the study file's folder (``cfg.root``)."""
    p = Path(cfg.path or "")
    return p if p.is_absolute() else Path(cfg.root or ".") / p


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex (64 characters)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bad_path(cfg: DatasetConfig, what: str) -> ConfigError:
    return ConfigError(f'[dataset] path = "{cfg.path}": {what}')


def check_data_file(cfg: DatasetConfig) -> str:
    """Check that ``[dataset] path`` is a readable data file; return its SHA-256.

    Raises:
        ConfigError: no such file, a suffix tuner does not read, a parquet file without
            pyarrow, or a content hash other than ``[dataset] sha256`` (the file changed).
    """
    path = data_path(cfg)
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise _bad_path(cfg, f"tuner reads {', '.join(DATA_SUFFIXES)} files, not "
                        f"'{path.suffix or path.name}'.")
    if not path.is_file():
        raise _bad_path(cfg, f"no such file ({path}).")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise _bad_path(cfg, "reading .parquet needs pyarrow, which is not installed "
                            "(pip install pyarrow), or save the data as .csv or .npz.") from None
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise _bad_path(cfg, f"cannot be read ({exc.strerror or exc}).") from None
    if cfg.sha256 is not None and digest != cfg.sha256:
        raise _bad_path(cfg, f"the file changed since it was recorded: its sha256 is "
                        f"{digest[:12]}..., the record says {cfg.sha256[:12]}...; restore the "
                        f"file, or run the study again on the new data.")
    return digest


def _read_csv(cfg: DatasetConfig) -> tuple[list[str], list[list[str]]]:
    """The header and the rows (stripped cell texts) of a CSV file."""
    import csv

    path = data_path(cfg)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _bad_path(cfg, f"cannot be read as a UTF-8 CSV file ({exc}).") from None
    if len(rows) < 2:
        raise _bad_path(cfg, "needs a header row and at least one data row.")
    header = rows[0]
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise _bad_path(cfg, f"line {i} has {len(row)} fields; the header has "
                            f"{len(header)}.")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup or "" in header:
        raise _bad_path(cfg, f'the header names a column twice or not at all ("{dup[0]}")'
                        if dup else "the header has an empty column name.")
    return header, rows[1:]


def _read_table(cfg: DatasetConfig) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV, or of a parquet file (its cells as text)."""
    if data_path(cfg).suffix.lower() != ".parquet":
        return _read_csv(cfg)
    import pyarrow.parquet as pq

    table = pq.read_table(data_path(cfg))
    columns = [["" if v is None else str(v) for v in table.column(n).to_pylist()]
               for n in table.column_names]
    return list(table.column_names), [list(r) for r in zip(*columns, strict=True)]


def _task_of(labels: list) -> str | None:
    """'classification' / 'regression' where the target makes it obvious, else None.

    Obvious: any non-numeric label (classification), any non-integer number (regression), at
    most two distinct integers (classification).
    """
    try:
        numbers = [float(v) for v in labels]
    except (TypeError, ValueError):
        return "classification"
    if any(not n.is_integer() for n in numbers if n == n):
        return "regression"
    return "classification" if len(set(numbers)) <= 2 else None


def infer_file_task(cfg: DatasetConfig) -> str | None:
    """The task the target of ``[dataset] path`` makes obvious, or None (see ``_task_of``).

    Raises:
        ConfigError: the file cannot be read, or ``target`` names no column (the message
            lists the columns) or is given for a .npz file.
    """
    if data_path(cfg).suffix.lower() == ".npz":
        if cfg.target is not None:
            raise _bad_path(cfg, f'target = "{cfg.target}" is invalid for a .npz file: it '
                            "holds arrays X and y; leave target out.")
        _, y = _read_npz(cfg)
        return _task_of(y.tolist())
    header, rows = _read_table(cfg)
    if cfg.target is None:
        raise _bad_path(cfg, f"[dataset] target is missing: name the label column, one of "
                        f"{', '.join(header)}.")
    if cfg.target not in header:
        raise _bad_path(cfg, f'target = "{cfg.target}" is not a column; the columns are '
                        f"{', '.join(header)}.")
    j = header.index(cfg.target)
    return _task_of([r[j] for r in rows if r[j].lower() not in MISSING_TOKENS])


def _read_npz(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    import zipfile

    import numpy as np

    try:
        with np.load(data_path(cfg), allow_pickle=False) as f:
            missing = [k for k in ("X", "y") if k not in f.files]
            if missing:
                raise _bad_path(cfg, f"has arrays {', '.join(f.files) or 'none'}; it needs X "
                                "(n_samples, n_features) and y (n_samples,).")
            return f["X"], f["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _bad_path(cfg, f"cannot be read as a numpy .npz file ({one_line(exc)}).") from None


def _numeric_column(cfg: DatasetConfig, name: str, cells: list[str]) -> np.ndarray:
    import numpy as np

    missing = sum(1 for c in cells if c.lower() in MISSING_TOKENS)
    if missing:
        raise _bad_path(cfg, f'column "{name}" has {missing} missing value(s) in {len(cells)} '
                        "rows; tuner does not fill them in: fill or drop those rows first.")
    try:
        return np.asarray(cells, dtype=np.float64)
    except ValueError:
        row, bad = next((i, c) for i, c in enumerate(cells, start=2) if not _is_float(c))
        raise _bad_path(cfg, f'column "{name}" is not numeric (line {row}: "{bad}"); features '
                        "must be numbers: encode it as numbers or drop the column.") from None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_file(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of ``[dataset] path``: X float64 (n, d); y numbers or label texts (n,)."""
    import numpy as np

    check_data_file(cfg)  # again: the file may have changed since the study file was read
    if data_path(cfg).suffix.lower() == ".npz":
        X, y = _read_npz(cfg)
        return _check_arrays(cfg, X, y, f'[dataset] path = "{cfg.path}"')
    header, rows = _read_table(cfg)
    j = header.index(cfg.target)  # type: ignore[arg-type]  # checked by infer_file_task
    features = [n for n in header if n != cfg.target]
    if not features:
        raise _bad_path(cfg, f'has no feature column besides target "{cfg.target}".')
    columns = [_numeric_column(cfg, n, [r[header.index(n)] for r in rows]) for n in features]
    labels = [r[j] for r in rows]
    missing = sum(1 for c in labels if c.lower() in MISSING_TOKENS)
    if missing:
        raise _bad_path(cfg, f'target column "{cfg.target}" has {missing} missing value(s) in '
                        f"{len(rows)} rows; fill or drop those rows first.")
    if cfg.task == "regression":
        bad = next(((i, c) for i, c in enumerate(labels, start=2) if not _is_float(c)), None)
        if bad is not None:
            raise _bad_path(cfg, f'target column "{cfg.target}" is not numeric (line {bad[0]}: '
                            f'"{bad[1]}"), so task = "regression" cannot use it; use task = '
                            '"classification".')
        y = np.asarray(labels, dtype=np.float64)
    elif all(_is_float(c) for c in labels):  # numbers sort as numbers: 2 before 10
        y = np.asarray(labels, dtype=np.float64)
        if all(v.is_integer() for v in y):
            y = y.astype(np.int64)
    else:
        y = np.asarray(labels, dtype=str)
    return np.column_stack(columns), y


def import_callable(ref: str, folder: str, what: str) -> Callable:
    """The callable a ``"package.module:function"`` reference names, imported from ``folder``
    (the study file's) or the Python path; no ``__pycache__`` is written into ``folder``.

    Used by ``[dataset] factory`` and ``[model] factory`` alike.

    Raises:
        ConfigError: one line starting with ``what``: no such module, the module failing to
            import (its error's first line), or no such callable in it.
    """
    import importlib
    import sys

    module_name, _, func_name = ref.partition(":")
    folder = folder or "."
    sys.path.insert(0, folder)
    no_pyc = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in the user's folder
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            hint = (f" (a module is named without '.py': '{module_name.removesuffix('.py')}')"
                    if module_name.endswith(".py") else "")
            raise ConfigError(f"{what}: no module '{module_name}' in {folder} or on the "
                              f"Python path{hint}.") from None
        raise ConfigError(f"{what}: importing '{module_name}' failed: "
                          f"{one_line(exc)}") from None
    except Exception as exc:  # the user's module may raise anything while importing
        raise ConfigError(f"{what}: importing '{module_name}' failed: "
                          f"{one_line(exc)}") from None
    finally:
        sys.path.remove(folder)
        sys.dont_write_bytecode = no_pyc
    func = getattr(module, func_name, None)
    if not callable(func):
        found = ("has no function" if func is None
                 else f"holds a {type(func).__name__}, not a function, as")
        raise ConfigError(f"{what}: module '{module_name}' ({getattr(module, '__file__', '')}) "
                          f"{found} '{func_name}'.")
    return func


def _load_factory(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Import and call ``[dataset] factory`` (``module:function``) from the study file's
    folder or the Python path."""
    if is_registered_spec(cfg.factory):
        return _registered_arrays(cfg)
    what = f'[dataset] factory = "{cfg.factory}"'
    func = import_callable(cfg.factory or "", cfg.root, what)
    try:
        out = func()
    except Exception as exc:  # the user's code: report it in one line
        raise ConfigError(f"{what} raised {one_line(exc)}") from None
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise ConfigError(f"{what} returned {type(out).__name__}; it must return (X, y): X "
                          "(n_samples, n_features) numbers, y (n_samples,) labels or targets.")
    return _check_arrays(cfg, out[0], out[1], what)


def one_line(exc: BaseException) -> str:
    """``"TypeError: first line of the message"``: an exception in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _check_arrays(cfg: DatasetConfig, X: object, y: object, what: str,
                  columns: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """X as float64 (n, d) and y as (n,), or ConfigError naming ``what`` (and the feature
    column by its name in ``columns`` where given, else by its index)."""
    import numpy as np

    raw = np.asarray(X)
    if raw.dtype.kind == "c":  # a cast to float64 would drop the imaginary part, silently
        raise ConfigError(f"{what}: X holds complex numbers; features must be real numbers.")
    try:
        X = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: X is not numeric; features must be numbers.") from None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(f"{what}: y has shape {y.shape}; tuner trains single-target models, "
                          "so y must be (n_samples,) (multi-output data is not supported).")
    if X.ndim != 2 or X.shape[0] != len(y) or X.shape[1] == 0 or len(y) == 0:
        raise ConfigError(f"{what}: X has shape {X.shape} and y {y.shape}; X must be "
                          "(n_samples >= 1, n_features >= 1) with one row per y.")
    bad = np.isnan(X).sum(axis=0)
    if bad.any():
        col = int(np.argmax(bad > 0))
        name = f'"{columns[col]}"' if len(columns) == X.shape[1] else str(col)
        raise ConfigError(f"{what}: feature column {name} has {int(bad[col])} missing value(s) "
                          f"(NaN) in {len(X)} rows; fill or drop those rows first.")
    if not np.isfinite(X).all():
        raise ConfigError(f"{what}: X holds infinite values; features must be finite.")
    if y.dtype.kind in "fc" and np.isnan(y).any():
        raise ConfigError(f"{what}: y has {int(np.isnan(y).sum())} missing value(s) (NaN) in "
                          f"{len(y)} rows; fill or drop those rows first.")
    if cfg.task == "regression" and y.dtype.kind not in "iufb":
        raise ConfigError(f"{what}: y is not numeric, so task = \"regression\" cannot use it; "
                          'use task = "classification".')
    return X, y


# ---------------------------------------------------------------------------------------------
# Arrays in memory: ``tuner.tune(config, data=(X, y))`` registers them under a ``[dataset]
# factory`` spec that names their content hash, so that loading, splitting, the split cache,
# the stored settings and the export treat them as any factory's data.

ARRAYS_SPEC_PREFIX = "tuner.datasets:arrays_"
"""``[dataset] factory`` of arrays registered by :func:`register_data`: this prefix and the
SHA-256 of the arrays (64 hex characters)."""

_REGISTERED: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # spec -> (X, y), read-only copies


def is_registered_spec(factory: str | None) -> bool:
    """True when ``factory`` names arrays of :func:`register_data` (in this process or not)."""
    return isinstance(factory, str) and factory.startswith(ARRAYS_SPEC_PREFIX)


def registered_sha256(factory: str) -> str:
    """The content hash in a :func:`register_data` spec."""
    return factory.removeprefix(ARRAYS_SPEC_PREFIX)


def register_data(X: object, y: object) -> str:
    """Register in-memory data; returns the ``[dataset] factory`` spec that loads it in this
    process (``"tuner.datasets:arrays_<sha256>"``).

    Args:
        X: features, (n_samples, n_features) numbers: a numpy array, a torch tensor (moved to
            the CPU), a pandas DataFrame (its column names are used in messages) or nested
            lists.
        y: labels or targets, (n_samples,) (or (n_samples, 1)): numbers or text labels, in the
            same kinds of container.

    The arrays are copied (changing yours afterwards changes nothing) and checked as a
    factory's are: X numeric and finite, no missing value (NaN, None) in X or y, one label per
    row, a single target. The SHA-256 in the spec is that of the copies (X as float64, y as
    int64, float64 or text), so the same data gives the same spec in any process, and other
    data another one: a study records it in its ``[dataset] factory`` and refuses to resume on
    other data. Registering again in another process makes an exported study's data loadable
    there (``tuner.load_best(...).load_data()``).

    Raises:
        ConfigError: one line starting ``data=(X, y):`` naming what is wrong (the column and
            the count of missing values, the shapes, ...).
    """
    import numpy as np

    X, y, columns = _user_arrays(X, y)
    X, y = _check_arrays(_NO_TASK, X, y, DATA_ARG, columns)
    X, y = np.array(X, dtype=np.float64, order="C"), np.array(y)
    X.flags.writeable = False
    y.flags.writeable = False
    spec = ARRAYS_SPEC_PREFIX + _arrays_sha256(X, y)
    _REGISTERED.setdefault(spec, (X, y))
    return spec


DATA_ARG = "data=(X, y)"  # how messages name in-memory data


def registered_task(factory: str) -> str | None:
    """The task the labels of registered arrays make obvious, or None (as for a data file:
    text labels or booleans: classification; a non-integer number: regression; at most two
    distinct integers: classification)."""
    import numpy as np

    _, y = _REGISTERED[factory]
    if y.dtype.kind in "USb":
        return "classification"
    if y.dtype.kind == "f":
        return "regression"  # integer-valued floats became int64 in _labels
    return "classification" if len(np.unique(y)) <= 2 else None


def _registered_arrays(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    arrays = _REGISTERED.get(cfg.factory or "")
    if arrays is None:
        raise ConfigError(
            f'[dataset] factory = "{cfg.factory}" names arrays passed as {DATA_ARG} in another '
            f"Python process (sha256 {registered_sha256(cfg.factory or '')[:12]}...), not in "
            f"this one: pass the same arrays here first (tuner.tune(..., data=(X, y)) or "
            f"tuner.datasets.register_data(X, y)), or save them to a .npz file and use "
            f"[dataset] path."
        )
    return _check_arrays(cfg, *arrays, DATA_ARG)


@dataclass(frozen=True)
class _NoTask:
    task: str | None = None


_NO_TASK = _NoTask()  # _check_arrays before the task is known (register_data)


def _to_numpy(a: object) -> object:
    """A torch tensor as a CPU numpy array; anything else as is."""
    if type(a).__module__.split(".")[0] == "torch" and hasattr(a, "detach"):
        return a.detach().cpu().numpy()  # type: ignore[attr-defined]
    return a


def _user_arrays(X: object, y: object) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``X`` as float64 (its column names when it is a DataFrame) and ``y`` as int64, float64
    or text labels; ConfigError for text or missing values where they cannot be."""
    import numpy as np

    X, y = _to_numpy(X), _to_numpy(y)
    columns: tuple[str, ...] = ()
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame
        columns = tuple(str(c) for c in X.columns)  # type: ignore[attr-defined]
        try:
            X = X.to_numpy(dtype=np.float64, na_value=np.nan)  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            X = X.to_numpy(dtype=object)  # type: ignore[attr-defined]
    if hasattr(y, "to_numpy"):  # a pandas Series
        y = y.to_numpy(dtype=object)  # type: ignore[attr-defined]
    if np.asarray(X).dtype.kind == "c":  # float64 would drop the imaginary part, silently
        raise ConfigError(f"{DATA_ARG}: X holds complex numbers; features must be real numbers.")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        _refuse_text_features(X, columns)
    return X, _labels(np.asarray(y)), columns


def _refuse_text_features(X: object, columns: tuple[str, ...]) -> None:
    """ConfigError naming the first feature column (and row) that is not a number."""
    import numpy as np

    try:
        cells = np.asarray(X, dtype=object)
    except (TypeError, ValueError):
        cells = None
    if cells is not None and cells.ndim == 2:
        for j in range(cells.shape[1]):
            name = f'"{columns[j]}"' if len(columns) == cells.shape[1] else str(j)
            missing = sum(_is_missing(v) for v in cells[:, j])
            if missing:
                raise ConfigError(
                    f"{DATA_ARG}: feature column {name} has {missing} missing value(s) in "
                    f"{len(cells)} rows; fill or drop those rows first.")
            for i, v in enumerate(cells[:, j]):
                if not _is_number(v):
                    raise ConfigError(
                        f"{DATA_ARG}: feature column {name} is not numeric (row {i}: {v!r}); "
                        "features must be numbers: encode it as numbers or drop the column.")
    raise ConfigError(f"{DATA_ARG}: X is not numeric; features must be numbers, "
                      "(n_samples, n_features).")


def _is_missing(v: object) -> bool:
    """None, NaN, pandas' NA / NaT."""
    if v is None:
        return True
    try:
        return bool(v != v)
    except (TypeError, ValueError):  # pandas.NA: its truth value is ambiguous
        return True


def _is_number(v: object) -> bool:
    if isinstance(v, bool | str | bytes):
        return False
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _labels(y: np.ndarray) -> np.ndarray:
    """y as int64 (integer numbers, integer-valued floats), float64 (other numbers), bool or
    str (text labels), as the labels of a data file are read; ConfigError for missing values
    or a mix of numbers and text."""
    import numpy as np

    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        return y  # _check_arrays names the shape
    if y.dtype.kind == "O":
        missing = sum(_is_missing(v) for v in y)
        if missing:
            raise ConfigError(f"{DATA_ARG}: y has {missing} missing value(s) in {len(y)} rows; "
                              "fill or drop those rows first.")
        if all(_is_number(v) for v in y):
            y = y.astype(np.float64)
        elif all(isinstance(v, str) for v in y):
            y = y.astype(str)
        elif all(isinstance(v, bool | np.bool_) for v in y):
            y = y.astype(bool)
        else:
            bad = next(v for v in y if not isinstance(v, str))
            raise ConfigError(f"{DATA_ARG}: y mixes text labels and other values ({bad!r}); "
                              "labels must be all numbers or all text.")
    if y.dtype.kind == "S":
        y = y.astype(str)
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        y = y.astype(np.float64)
        finite = y[np.isfinite(y)]
        if len(finite) == len(y) and np.all(finite == np.round(finite)):
            return y.astype(np.int64)
        if np.isinf(y).any():
            raise ConfigError(f"{DATA_ARG}: y holds infinite values; targets must be finite.")
        return y  # NaN: _check_arrays counts them
    if y.dtype.kind in "Ub":
        return y
    raise ConfigError(f"{DATA_ARG}: y has dtype {y.dtype}; labels must be numbers or text.")


def _arrays_sha256(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of X (float64, C order, with its shape) and y (dtype kind, shape, values)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    digest.update(f"X float64 {X.shape}\n".encode())
    digest.update(memoryview(np.ascontiguousarray(X)).cast("B"))
    digest.update(f"y {y.dtype.kind} {y.shape}\n".encode())
    if y.dtype.kind == "U":
        digest.update("\x00".join(y.tolist()).encode("utf-8", "surrogatepass"))
    else:
        digest.update(memoryview(np.ascontiguousarray(y)).cast("B"))
    return digest.hexdigest()


def dataset_task(cfg: DatasetConfig) -> str:
    """'classification' or 'regression' of a validated ``[dataset]``."""
    if cfg.name is not None:
        return DATASETS[cfg.name].task
    return cfg.task  # type: ignore[return-value]  # resolved by tuner.config


def _label(cfg: DatasetConfig) -> str:
    if cfg.name is not None:
        return f"'{cfg.name}'"
    if cfg.path is not None:
        return f"'{cfg.path}'"
    if is_registered_spec(cfg.factory):
        return f"data=(X, y) (sha256 {registered_sha256(cfg.factory)[:12]}...)"
    return f"from factory '{cfg.factory}'"


def describe_source(cfg: DatasetConfig) -> str:
    """Where the data comes from, for notes: a scikit-learn call, a file or a factory."""
    if cfg.name is not None:
        return f"`{cfg.name}` (`sklearn.datasets.{DATASETS[cfg.name].source}`)"
    if cfg.path is not None:
        return f"`{cfg.path}` (sha256 {(cfg.sha256 or '')[:12]}..., target `{cfg.target}`)"
    if is_registered_spec(cfg.factory):
        return f"arrays in memory, `data=(X, y)` (sha256 {registered_sha256(cfg.factory)[:12]}...)"
    return f"factory `{cfg.factory}`"


def load_record(cfg: DatasetConfig) -> dict:
    """The export's ``data.load``: where ``(X, y)`` comes from.

    ``{"function", "kwargs"}`` for scikit-learn (``sklearn.datasets.<function>(**kwargs)``);
    ``{"file", "sha256", "target"}`` for ``[dataset] path`` (absolute path; ``target`` is None
    for a .npz file); ``{"factory"}`` for ``[dataset] factory`` (imported from the export's or
    study file's folder or the Python path, called with no arguments).
    """
    call = sklearn_call(cfg)
    if call is not None:
        return {"function": call[0], "kwargs": {k: _as_lists(v) for k, v in call[1].items()}}
    if cfg.path is not None:
        return {"file": str(data_path(cfg).resolve()), "sha256": cfg.sha256,
                "target": cfg.target}
    return {"factory": cfg.factory}


@dataclass(frozen=True)
class SplitData:
    """A dataset split into train / validation / test tensors on the CPU.

    Shapes: ``X_*`` float32 (n, n_features); ``y_*`` int64 (n,) for classification or float32
    (n, 1) standardized for regression.

    Attributes:
        task: 'classification' or 'regression'.
        n_features: input width.
        n_outputs: classes for classification, 1 for regression.
        target_scale: the training targets' standard deviation (regression) or 1.0; multiply an
            RMSE on standardized targets by it to get target units.
        x_mean, x_scale: the ``StandardScaler`` fitted on the training rows (per feature):
            ``X_* = float32((X - x_mean) / x_scale)`` in float64.
        y_mean: the training targets' mean (regression; ``y = (y - y_mean) / target_scale``),
            0.0 for classification.
        classes: the sorted class labels (classification; ``y`` is the index of the label, so
            output k of a model is ``classes[k]``), empty for regression.
    """

    task: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_features: int
    n_outputs: int
    target_scale: float
    x_mean: tuple[float, ...] = ()
    x_scale: tuple[float, ...] = ()
    y_mean: float = 0.0
    classes: tuple[int | float | str, ...] = ()

    def to(self, device: torch.device | str) -> SplitData:
        """The same split with every tensor on ``device``."""
        moved = {
            k: getattr(self, k).to(device)
            for k in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")
        }
        return SplitData(
            task=self.task, n_features=self.n_features, n_outputs=self.n_outputs,
            target_scale=self.target_scale, x_mean=self.x_mean, x_scale=self.x_scale,
            y_mean=self.y_mean, classes=self.classes, **moved,
        )

    def describe(self) -> str:
        """One line: sizes and classes."""
        kind = (
            f"{self.n_outputs} classes" if self.task == "classification" else "regression"
        )
        return (
            f"{len(self.X_train)} train / {len(self.X_val)} validation / {len(self.X_test)} test "
            f"rows, {self.n_features} features, {kind}"
        )


@functools.lru_cache(maxsize=16)
def load_split(dataset: DatasetConfig, split: SplitConfig) -> SplitData:
    """Load, split and scale a dataset (cached per configuration within a process, and for
    scikit-learn's datasets on disk: ``tuner.split_cache``, no scikit-learn import then).

    Raises:
        ConfigError: the split leaves a part empty or a class too rare to stratify.
    """
    spec = DATASETS.get(dataset.name)
    if spec is not None and getattr(spec.load, "pure", False):
        from tuner.split_cache import cached_split

        return cached_split(dataset, split, lambda: _make_split(dataset, split), SplitData)
    return _make_split(dataset, split)


def _make_split(dataset: DatasetConfig, split: SplitConfig) -> SplitData:
    import numpy as np
    import torch
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_xy(dataset)
    X = np.asarray(X, dtype=np.float64)
    task = dataset_task(dataset)
    classification = task == "classification"
    if classification and len(np.unique(y)) < 2:
        raise ConfigError(
            f"dataset {_label(dataset)}: every row has the label {np.unique(y)[0].item()!r}; "
            f"classification needs at least 2 classes (for a numeric target, use "
            f'task = "regression").'
        )
    stratify = y if classification else None
    holdout, test_part = split_kwargs(split)
    try:
        X_tr, X_rest, y_tr, y_rest = train_test_split(
            X, y, test_size=holdout, random_state=split.seed, stratify=stratify
        )
        X_va, X_te, y_va, y_te = train_test_split(
            X_rest,
            y_rest,
            test_size=test_part,
            random_state=split.seed,
            stratify=y_rest if classification else None,
        )
    except ValueError as exc:
        raise ConfigError(
            f"[split] cannot split dataset {_label(dataset)} ({len(X)} rows) into "
            f"{split.train}/{split.validation}/{split.test}: {exc}"
        ) from None
    scaler = StandardScaler().fit(X_tr)

    def xs(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(scaler.transform(a).astype(np.float32))

    if classification:
        classes = np.unique(y)
        index = {c: i for i, c in enumerate(classes)}

        def ys(a: np.ndarray) -> torch.Tensor:
            return torch.tensor([index[v] for v in a], dtype=torch.int64)

        n_outputs, scale, mean = len(classes), 1.0, 0.0
        labels = tuple(classes.tolist())  # plain int / float / str
    else:
        mean, std = float(np.mean(y_tr)), float(np.std(y_tr)) or 1.0

        def ys(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(((a - mean) / std).astype(np.float32)).reshape(-1, 1)

        n_outputs, scale, labels = 1, std, ()
    return SplitData(
        task=task,
        X_train=xs(X_tr), y_train=ys(y_tr),
        X_val=xs(X_va), y_val=ys(y_va),
        X_test=xs(X_te), y_test=ys(y_te),
        n_features=X.shape[1], n_outputs=n_outputs, target_scale=scale,
        x_mean=tuple(float(v) for v in scaler.mean_),
        x_scale=tuple(float(v) for v in scaler.scale_),
        y_mean=mean, classes=labels,
    )


def load_xy(dataset: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """The whole dataset as ``(X, y)``: X (n_samples, n_features), y (n_samples,).

    Raises:
        ConfigError: one line: a generator refusing its keywords (scikit-learn's words), a
            data file that is missing, changed, not numeric or has missing values, or a
            factory that cannot be imported, raises or returns something else than (X, y).
    """
    if dataset.path is not None:
        return _load_file(dataset)
    if dataset.factory is not None:
        return _load_factory(dataset)
    spec = DATASETS[dataset.name]  # type: ignore[index]
    try:
        return spec.load(dataset)
    except (ValueError, TypeError) as exc:  # scikit-learn refusing a keyword (its own words)
        raise ConfigError(
            f"[dataset] {spec.source} refuses these settings: "
            f"{str(exc).splitlines()[0]}"
        ) from None
