"""tuner: find the learning rate and learning-rate schedule of PyTorch models with Optuna.

Public API::

    from tuner import load_study_config, load_best, tune

    result = tune("studies/digits_mlp.toml", n_trials=20)   # or a dict; data=(X, y), model=fn
    model = result.best.build_model()

    best = load_best("studies/digits_mlp.best.json")     # an export of `tuner export`
    optimizer = best.build_optimizer(model.parameters())
    scheduler = best.build_scheduler(optimizer, steps_per_epoch)
"""

from tuner.api import TuneResult, tune  # imports neither torch nor optuna until a study runs
from tuner.config import StudyConfig, load_study_config
from tuner.errors import ConfigError, NoCompletedTrialError, StorageError, TunerError
from tuner.load import BestConfig, load_best

__all__ = [
    "StudyConfig",
    "load_study_config",
    "load_best",
    "BestConfig",
    "TunerError",
    "ConfigError",
    "StorageError",
    "NoCompletedTrialError",
    "tune",
    "TuneResult",
    "__version__",
]

__version__ = "0.1.0"

