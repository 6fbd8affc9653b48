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
from typing import TYPE_CHECKING

from tuner.errors import ConfigError

if TYPE_CHECKING:  # numpy, torch and scikit-learn are imported by the loaders, not here, so
    # that a study file is validated against DATASETS without importing them
    import numpy as np
    import torch

    from tuner.config import DatasetConfig, SplitConfig

__all__ = [
    "DatasetSpec", "DATASETS", "SplitData", "load_split", "FETCH_ONLY", "check_not_fetch",
    "estimated_bytes", "generator_kwargs", "sklearn_call", "split_kwargs",
]


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    Attributes:
        name: the study-file name (``[dataset] name``).
        task: 'classification' or 'regression'.
        load: returns ``(X, y)`` as numpy arrays, X of shape (n_samples, n_features); it imports
            scikit-learn when called.
        generated: True for ``make_*`` generators, which take size, features, noise and seed.
        source: the scikit-learn function, for messages and notes.
    """

    name: str
    task: str
    load: Callable[[DatasetConfig], tuple[np.ndarray, np.ndarray]]
    generated: bool
    source: str


def _shipped(source: str) -> Callable[[DatasetConfig], tuple[np.ndarray, np.ndarray]]:
    def load(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
        from sklearn import datasets as skd

        return getattr(skd, source)(return_X_y=True)

    load.pure = True  # type: ignore[attr-defined]  # a function of its settings: split_cache
    return load


def generator_kwargs(cfg: DatasetConfig) -> dict[str, int | float]:
    """The keyword arguments tuner passes to a ``make_*`` generator (plain numbers)."""
    kwargs: dict[str, int | float] = {
        "n_samples": cfg.n_samples,
        "n_features": cfg.n_features,
        "n_informative": cfg.n_informative,
    }
    if cfg.name == "make_classification":
        kwargs |= {
            "n_redundant": max(0, min(2, cfg.n_features - cfg.n_informative)),
            "n_classes": cfg.n_classes,
            "flip_y": cfg.noise,
        }
    else:
        kwargs["noise"] = cfg.noise
    kwargs["random_state"] = cfg.seed
    return kwargs


def _make_classification(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as skd

    return skd.make_classification(**generator_kwargs(cfg))


def _make_regression(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as skd

    return skd.make_regression(**generator_kwargs(cfg))


_make_classification.pure = True  # type: ignore[attr-defined]
_make_regression.pure = True  # type: ignore[attr-defined]


def sklearn_call(cfg: DatasetConfig) -> tuple[str, dict[str, int | float | bool]]:
    """``(function, kwargs)``: ``sklearn.datasets.<function>(**kwargs)`` returns the dataset's
    ``(X, y)`` exactly as tuner loads it (before the split)."""
    spec = DATASETS[cfg.name]
    if spec.generated:
        return spec.source, dict(generator_kwargs(cfg))
    return spec.source, {"return_X_y": True}


def split_kwargs(split: SplitConfig) -> tuple[float, float]:
    """The ``test_size`` of :func:`load_split`'s two ``train_test_split`` calls: the first
    splits off validation + test from train, the second splits that part into validation and
    test (both with ``random_state = split.seed``, stratified for classification)."""
    holdout = split.validation + split.test
    return holdout, split.test / holdout


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("digits", "classification", _shipped("load_digits"), False, "load_digits"),
        DatasetSpec("iris", "classification", _shipped("load_iris"), False, "load_iris"),
        DatasetSpec("wine", "classification", _shipped("load_wine"), False, "load_wine"),
        DatasetSpec(
            "breast_cancer",
            "classification",
            _shipped("load_breast_cancer"),
            False,
            "load_breast_cancer",
        ),
        DatasetSpec("diabetes", "regression", _shipped("load_diabetes"), False, "load_diabetes"),
        DatasetSpec(
            "make_classification", "classification", _make_classification, True,
            "make_classification",
        ),
        DatasetSpec("make_regression", "regression", _make_regression, True, "make_regression"),
    ]
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

    Shipped datasets are small (under 2 MB); they get 0.
    """
    if not DATASETS[cfg.name].generated:
        return 0
    return PEAK_PER_CELL * cfg.n_samples * (cfg.n_features + 1)


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
    raise ConfigError(
        f"{where}: [dataset] n_samples = {cfg.n_samples}, n_features = {cfg.n_features} is too "
        f"large for this machine: loading it needs about {_size(need)} of memory "
        f"({PEAK_PER_CELL} bytes x n_samples x (n_features + 1)) and {_size(available)} is "
        f"available; lower n_samples or n_features."
    )


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
        classes: the sorted class labels (classification; ``y`` is the index of the label),
            empty for regression.
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

    spec = DATASETS[dataset.name]
    try:
        X, y = spec.load(dataset)
    except ValueError as exc:  # a generator refusing its arguments (sklearn's own words)
        raise ConfigError(
            f"[dataset] {spec.source} refuses these settings: {str(exc).splitlines()[0]}"
        ) from None
    X = np.asarray(X, dtype=np.float64)
    classification = spec.task == "classification"
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
            f"[split] cannot split dataset '{dataset.name}' ({len(X)} rows) into "
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
        labels = tuple(v.item() if hasattr(v, "item") else v for v in classes)
    else:
        mean, std = float(np.mean(y_tr)), float(np.std(y_tr)) or 1.0

        def ys(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(((a - mean) / std).astype(np.float32)).reshape(-1, 1)

        n_outputs, scale, labels = 1, std, ()
    return SplitData(
        task=spec.task,
        X_train=xs(X_tr), y_train=ys(y_tr),
        X_val=xs(X_va), y_val=ys(y_va),
        X_test=xs(X_te), y_test=ys(y_te),
        n_features=X.shape[1], n_outputs=n_outputs, target_scale=scale,
        x_mean=tuple(float(v) for v in scaler.mean_),
        x_scale=tuple(float(v) for v in scaler.scale_),
        y_mean=mean, classes=labels,
    )
