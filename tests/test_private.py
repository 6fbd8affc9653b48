"""The private APIs tuner relies on (tuner/_private.py) still behave as they were checked to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tuner._private import CHECKED_AGAINST

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys, torch
from tuner._private import skip_dynamo_import_in_optimizers
changed = skip_dynamo_import_in_optimizers() if sys.argv[1] == "skip" else 0
p = torch.nn.Parameter(torch.ones(3))
opt = torch.optim.SGD([p], lr=0.5, momentum=0.9)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
opt.zero_grad()
opt.load_state_dict(opt.state_dict())
built_without = "torch._dynamo" not in sys.modules  # what tuner's stacked engine needs
for _ in range(3):  # torch.optim's own step imports torch._dynamo in any case
    opt.zero_grad()
    (p ** 2).sum().backward()
    opt.step()
    sched.step()
opt.load_state_dict(opt.state_dict())
print(changed, built_without, repr(p.detach().tolist()))
"""


def _probe(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True).stdout
    return out.split(maxsplit=2)


def test_the_checked_torch_version_is_the_one_installed() -> None:
    """A new torch release: re-check tuner/_private.py, then update CHECKED_AGAINST."""
    assert torch.__version__.startswith(CHECKED_AGAINST["torch"] + "."), torch.__version__


def test_optimizers_are_built_without_importing_dynamo_and_train_the_same() -> None:
    changed, without, weights = _probe("skip")
    plain_changed, plain_without, plain_weights = _probe("plain")
    assert int(changed) == 4
    assert without == "True"  # the ~3 s import is skipped...
    assert plain_without == "False"  # ...which torch does without the change
    assert weights == plain_weights  # and training is bit for bit the same
    assert plain_changed == "0"


def test_the_stacked_engine_trains_a_trial_without_importing_dynamo() -> None:
    code = ("import sys, optuna; from conftest import tiny_study_dict; "
            "from tuner.config import parse_study_config; from tuner.study import make_objective; "
            "cfg = parse_study_config(tiny_study_dict(), 'x.toml'); "
            "optuna.create_study(direction='maximize').optimize(make_objective(cfg), n_trials=2); "
            "print('torch._dynamo' in sys.modules)")
    env = {**os.environ, "TUNER_SKIP_DYNAMO_IMPORT": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_a_library_process_is_left_alone() -> None:
    code = ("import os, sys; os.environ.pop('TUNER_SKIP_DYNAMO_IMPORT', None); import torch, "
            "tuner.engine; torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1); "
            "print('torch._dynamo' in sys.modules)")
    env_free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert env_free == "True"
