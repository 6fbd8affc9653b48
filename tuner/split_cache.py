"""A split computed once per machine: later runs load it without importing scikit-learn.

Importing scikit-learn (and scipy, which it imports) takes longer than a small study's
training, and a run needs it only to load, split and scale its dataset. The first run on a
machine stores the split's tensors in ``<cache>/splits/<key>.npz``; the key is a hash of the
``[dataset]`` and ``[split]`` settings and of the scikit-learn and NumPy versions (read from
the installed packages' metadata, without importing them), so any change of those computes
the split again. ``<cache>`` is ``$TUNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/tuner``, else
``~/.cache/tuner``: never inside the project. ``TUNER_CACHE_DIR=off`` turns the cache off.

Only datasets that are a pure function of those settings are cached (scikit-learn's shipped
``load_*`` datasets and ``make_*`` generators). A cache file that cannot be read or written is
ignored: the split is computed as without a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT = 1  # bump when SplitData or the way a split is made changes
_TENSORS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")


def cache_dir() -> Path | None:
    """The cache folder (module docstring), or None where the cache is off."""
    own = os.environ.get("TUNER_CACHE_DIR")
    if own is not None:
        return None if own.strip().lower() in ("", "off", "0") else Path(own)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuner"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def cache_key(dataset: Any, split: Any) -> str:
    """Hex digest naming the split of ``dataset`` / ``split`` (their settings, the versions of
    scikit-learn and NumPy, and :data:`FORMAT`)."""
    settings = {
        "dataset": dataclasses.asdict(dataset),
        "split": dataclasses.asdict(split),
        "sklearn": _version("scikit-learn"),
        "numpy": _version("numpy"),
        "format": FORMAT,
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _load(file: Path, split_type: type) -> Any:
    import numpy as np
    import torch

    with np.load(file, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        tensors = {k: torch.from_numpy(np.array(data[k])) for k in _TENSORS}
    meta["x_mean"] = tuple(meta["x_mean"])
    meta["x_scale"] = tuple(meta["x_scale"])
    meta["classes"] = tuple(meta["classes"])
    return split_type(**meta, **tensors)


def _store(file: Path, data: Any) -> None:
    import numpy as np

    meta = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)
            if f.name not in _TENSORS}
    arrays = {k: getattr(data, k).numpy() for k in _TENSORS}
    file.parent.mkdir(parents=True, exist_ok=True)
    part = file.with_name(f"{file.stem}.{os.getpid()}.part.npz")
    try:
        np.savez(part, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(part, file)  # readers see the whole file or none
    finally:
        part.unlink(missing_ok=True)


def cached_split(dataset: Any, split: Any, compute: Callable[[], Any], split_type: type) -> Any:
    """The split from the cache, else ``compute()`` (stored for the next run).

    Args:
        dataset, split: the ``[dataset]`` and ``[split]`` settings (dataclasses).
        compute: makes the split (``tuner.datasets``; it imports scikit-learn).
        split_type: ``tuner.datasets.SplitData``.
    """
    folder = cache_dir()
    if folder is None:
        return compute()
    file = folder / "splits" / f"{cache_key(dataset, split)}.npz"
    if file.is_file():
        try:
            return _load(file, split_type)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or from another format: computed again below
    data = compute()
    try:
        _store(file, data)
    except (OSError, ValueError, TypeError):
        pass  # a read-only home: no cache, same split
    return data
