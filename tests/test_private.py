"""The private APIs tuner relies on (tuner/_private.py) still behave as they were checked to."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
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


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_the_checked_optuna_and_dashboard_versions_are_the_ones_installed() -> None:
    """A new Optuna or optuna-dashboard release: re-check every use listed in tuner/_private.py
    (its docstring), then update CHECKED_AGAINST."""
    from importlib.metadata import version

    assert _major_minor(version("optuna")) == CHECKED_AGAINST["optuna"]
    assert _major_minor(version("optuna-dashboard")) == CHECKED_AGAINST["optuna-dashboard"]


def test_the_fused_update_operators_run_as_torch_optim_fused_does() -> None:
    from tuner._private import fused_update_ops

    ops = fused_update_ops()
    assert sorted(ops) == ["Adam", "AdamW", "SGD"] and all(ops.values())
    p, g = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.25])
    ref = torch.nn.Parameter(p.clone())
    ref.grad = g.clone()
    torch.optim.SGD([ref], lr=0.1, momentum=0.9, fused=True).step()
    mine, buf = p.clone(), torch.zeros(2)
    ops["SGD"]([mine], [g.clone()], [buf], weight_decay=0.0, momentum=0.9, lr=0.1,
               dampening=0.0, nesterov=False, maximize=False, is_first_step=True)
    assert torch.equal(mine, ref.detach())


def test_the_private_optuna_names_tuner_uses_still_exist() -> None:
    """Each use listed in tuner/_private.py's docstring: the name, and the parameters used."""
    import inspect

    import optuna
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna_dashboard._note import get_note_from_system_attrs, note_ver_key, split_body

    assert callable(_create_scoped_session)
    assert callable(models.TrialModel.find_or_raise_by_id)
    for model in (models.TrialUserAttributeModel, models.TrialSystemAttributeModel):
        assert {"trial_id", "key", "value_json"} <= set(model.__table__.columns.keys())
    for name in ("_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id",
                 "_get_stale_trial_ids", "_get_prepared_new_trial",
                 "_set_trial_attr_without_commit", "_set_trial_value_without_commit",
                 "check_trial_is_updatable"):
        assert callable(getattr(RDBStorage, name)), name
    # tuner.storage_guard's one-transaction writes (write_trial, trial_state_counts,
    # set_study_system_attrs) build these rows themselves
    columns = {
        models.TrialModel: {"trial_id", "study_id", "number", "state", "datetime_complete"},
        models.TrialParamModel: {"trial_id", "param_name", "param_value", "distribution_json"},
        models.TrialIntermediateValueModel: {"trial_id", "step", "intermediate_value",
                                             "intermediate_value_type"},
        models.StudySystemAttributeModel: {"study_id", "key", "value_json"},
    }
    for model, names in columns.items():
        assert names <= set(model.__table__.columns.keys()), model
    assert callable(models.TrialIntermediateValueModel.intermediate_value_to_stored_repr)
    assert callable(models.StudyModel.find_or_raise_by_id)
    # tuner.shared_reads overrides these of optuna's cache
    from optuna.storages._cached_storage import _CachedStorage

    for name in ("_read_trials_from_remote_storage", "_add_trials_to_cache"):
        assert callable(getattr(_CachedStorage, name)), name
    assert list(inspect.signature(_CachedStorage._add_trials_to_cache).parameters) == [
        "self", "study_id", "trials"]
    sample_id = inspect.signature(optuna.samplers.QMCSampler._find_sample_id)
    assert list(sample_id.parameters) == ["self", "study", "search_space"]
    # called positionally: (body, trial_id), (trial_id), (system_attrs, trial_id)
    arity = {f: len(inspect.signature(f).parameters)
             for f in (split_body, note_ver_key, get_note_from_system_attrs)}
    assert arity == {split_body: 2, note_ver_key: 1, get_note_from_system_attrs: 2}
    study = optuna.create_study()
    trial = study.ask()
    assert study._storage is not None and isinstance(study._study_id, int)
    assert isinstance(trial._trial_id, int) and trial._cached_frozen_trial.number == 0


def test_the_dashboard_note_writers_load_without_the_dashboard_server() -> None:
    """tuner.dashboard_notes writes notes through optuna-dashboard's ``_note`` and
    ``_custom_plot_data`` without running the package's ``__init__`` (its server, and through
    optuna.importance scikit-learn); a later ``import optuna_dashboard`` reuses those modules,
    and what tuner wrote reads back through the dashboard's public ``get_note``."""
    code = textwrap.dedent("""
        import sys, optuna
        import tuner.dashboard_notes as notes
        assert "sklearn" not in sys.modules and "optuna_dashboard._app" not in sys.modules
        study = optuna.create_study()
        notes._note.save_note(study, "hello from tuner")
        import optuna_dashboard
        assert sys.modules["optuna_dashboard._note"] is notes._note  # one copy
        assert optuna_dashboard.get_note(study) == "hello from tuner"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("name", ["_note", "_custom_plot_data"])
def test_the_light_dashboard_modules_import_only_optuna(name: str) -> None:
    import ast
    import importlib.util

    origin = importlib.util.find_spec("optuna_dashboard").origin
    tree = ast.parse((Path(origin).parent / f"{name}.py").read_text())
    top = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom)
        else alias.name.split(".")[0]
        for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [None])
    }
    assert top <= {"__future__", "math", "typing", "uuid", "json", "optuna"}, top


def test_the_head_revision_read_from_the_scripts_is_alembics(tmp_path) -> None:
    from pathlib import Path

    from optuna.storages._rdb import storage as rdb

    from tuner._private import alembic_head

    storage = optuna_storage(f"sqlite:///{tmp_path / 'a.db'}")
    assert alembic_head(Path(rdb.__file__).parent / "alembic" / "versions") == (
        storage.get_head_version())


def optuna_storage(url: str):  # noqa: ANN201
    import optuna

    return optuna.storages.RDBStorage(url)


_FAST_OPEN = """
import sys
import optuna
from tuner._private import skip_alembic_when_current
assert skip_alembic_when_current()
url = sys.argv[1]
storage = optuna.storages.RDBStorage(url)  # a new file: stamped without alembic
optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
storage = optuna.storages.RDBStorage(url)  # opened again: one query, no alembic
print("alembic" in sys.modules)
"""


def test_storages_open_without_alembic_and_stay_readable_by_optuna(tmp_path) -> None:
    """The stamp is alembic's: Optuna's own version manager (with alembic) agrees afterwards,
    and a database at an older revision still gets Optuna's message."""
    import os
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    url = f"sqlite:///{tmp_path / 'fast.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", _FAST_OPEN, url], env=env, text=True,
                         capture_output=True, check=True).stdout
    assert out.strip() == "False"  # alembic never imported
    storage = optuna_storage(url)  # Optuna's own check, with alembic, in this process
    assert storage.get_current_version() == storage.get_head_version()
    with sqlite3.connect(tmp_path / "fast.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    code = _FAST_OPEN.replace('print("alembic" in sys.modules)', "")
    failed = subprocess.run([sys.executable, "-c", code, url], env=env, text=True,
                            capture_output=True)
    assert failed.returncode != 0
    assert "no longer compatible with the table schema" in failed.stderr
    with pytest.raises(RuntimeError, match="optuna storage upgrade"):
        optuna_storage(url)
