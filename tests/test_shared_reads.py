"""tuner.shared_reads: the sampler's and the pruner's reads shared inside a burst, own writes
seen at once, other processes' writes seen by the next fresh read, exact reads outside."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tuner.shared_reads import SharedReadStorage, shared_reads, wrap
from tuner.storage import make_storage


def _study(url: str) -> optuna.Study:
    return optuna.create_study(storage=wrap(make_storage(url)), study_name="s",
                               load_if_exists=True)


def test_reads_in_a_block_are_shared_and_outside_are_not(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    storage = study._storage
    assert isinstance(storage, SharedReadStorage)
    study.ask()
    before = storage.remote_reads
    for _ in range(3):
        study.get_trials(deepcopy=False)
    assert storage.remote_reads == before + 3  # outside: every call reads
    with shared_reads(study, max_age=60.0):
        for _ in range(5):
            study.get_trials(deepcopy=False)
    assert storage.remote_reads == before + 3  # inside: the last read is young enough
    with shared_reads(study, max_age=0.0):
        study.get_trials(deepcopy=False)
    assert storage.remote_reads == before + 4  # too old for max_age: read again


def test_own_writes_are_seen_inside_a_block(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    trial = study.ask()
    with shared_reads(study, max_age=60.0):
        study.get_trials(deepcopy=False)
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.report(0.5, 1)
        trial.storage.set_trial_system_attr(trial._trial_id, "rung", 0.5)
        (seen,) = study.get_trials(deepcopy=False)
        assert seen.params == {"x": x}
        assert seen.intermediate_values == {1: 0.5}
        assert seen.system_attrs["rung"] == 0.5
        assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: 0.5}


def test_other_processes_writes_are_seen_after_the_block_or_a_tell(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    other = _study(sqlite_url)  # another process's view of the same study
    mine = study.ask()
    with shared_reads(study, max_age=60.0):
        assert len(study.get_trials(deepcopy=False)) == 1
        other.ask()
        assert len(study.get_trials(deepcopy=False)) == 1  # stale: the shared read
        study.tell(mine, 1.0)  # a state change: the next read is fresh
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING]
        other.ask()
    assert len(study.get_trials(deepcopy=False)) == 3  # outside: exact


def test_pruning_decisions_match_optunas_own_cache(tmp_path) -> None:
    """The same reports give the same should_prune answers with and without sharing."""

    def run(url: str, share: bool) -> list[bool]:
        storage = make_storage(url)
        if share:
            storage = wrap(storage)
        study = optuna.create_study(storage=storage, pruner=optuna.pruners.
                                    SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
        trials = [study.ask() for _ in range(6)]
        answers = []
        for step in range(1, 4):
            with shared_reads(study, max_age=60.0):
                for i, trial in enumerate(trials):
                    trial.report(float((i * 7 + step * 3) % 11), step)
                    answers.append(trial.should_prune())
        return answers

    shared = run(f"sqlite:///{tmp_path / 'a.db'}", True)
    plain = run(f"sqlite:///{tmp_path / 'b.db'}", False)
    assert shared == plain
    assert any(shared) and not all(shared)


def test_other_storages_are_left_alone(tmp_path) -> None:
    memory = optuna.storages.InMemoryStorage()
    assert wrap(memory) is memory
    study = optuna.create_study(storage=memory)
    with shared_reads(study):
        assert study.get_trials() == []
