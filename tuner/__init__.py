"""tuner: find the learning rate and learning-rate schedule of PyTorch models with Optuna.

Public API::

    from tuner import load_study_config, run_tune, export_best
"""

from tuner.config import StudyConfig, load_study_config
from tuner.errors import ConfigError, NoCompletedTrialError, StorageError, TunerError

__all__ = [
    "StudyConfig",
    "load_study_config",
    "TunerError",
    "ConfigError",
    "StorageError",
    "NoCompletedTrialError",
    "__version__",
]

__version__ = "0.1.0"
