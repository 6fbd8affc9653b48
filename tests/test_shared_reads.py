"""tuner.shared_reads: the sampler's and the pruner's reads shared inside a burst, own writes
seen at once, other processes' writes seen by the next fresh read, exact reads outside."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tuner.shared_reads import SharedReadStorage, flush, shared_reads, wrap
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


def test_other_processes_writes_are_seen_after_the_block_or_a_state_change(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    other = _study(sqlite_url)  # another process's view of the same study
    mine = study.ask()
    with shared_reads(study, max_age=60.0):
        assert len(study.get_trials(deepcopy=False)) == 1
        other.ask()
        assert len(study.get_trials(deepcopy=False)) == 1  # stale: the shared read
        study.tell(mine, 1.0)  # its own trial's end: in the shared read at once
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE]  # the other's: not yet
        study._storage.set_trial_state_values(  # a state change not of its own (a reaper's):
            other.trials[1]._trial_id, TrialState.FAIL)  # the next read is fresh
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
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


# -- writes behind: a trial's writes reach the storage together, with its end ---------------

def _fresh_view(url: str, name: str = "s") -> optuna.Study:
    """Another process's view: a new storage object, nothing cached."""
    return optuna.load_study(study_name=name, storage=make_storage(url))


def _work(study: optuna.Study, trial: optuna.Trial) -> None:
    """Everything an objective writes to its trial: parameters of each kind, reports, user
    and system attributes (some written twice: the last write wins)."""
    trial.suggest_float("lr", 1e-4, 1.0, log=True)
    trial.suggest_int("layers", 1, 4)
    trial.suggest_categorical("opt", ["sgd", "adam"])
    for step in range(1, 6):
        trial.report(1.0 / step, step)
    trial.report(0.125, 5)  # reported again: Optuna warns and keeps the first value
    trial.set_user_attr("seed", 7)
    trial.set_user_attr("seed", 8)
    trial.set_user_attr("series", [0.5, float("inf")])
    study._storage.set_trial_system_attr(trial._trial_id, "rung", 1.5)


def _stored(trial: optuna.trial.FrozenTrial) -> tuple:
    return (trial.number, trial.state, trial.values, trial.params, trial.distributions,
            trial.intermediate_values, trial.user_attrs, trial.system_attrs)


@pytest.mark.parametrize("server", ["sqlite", "postgresql"])
def test_a_trial_is_stored_exactly_as_optunas_own_calls_store_it(
        tmp_path, server: str, request) -> None:
    """The same writes through the write-behind cache and through Optuna's RDBStorage store
    the same trials, complete and pruned, on a SQLite file and on PostgreSQL."""
    import uuid
    import warnings

    name = f"s-{uuid.uuid4().hex[:8]}"

    def run(url: str, behind: bool) -> list[tuple]:
        storage = make_storage(url)
        study = optuna.create_study(storage=wrap(storage) if behind else storage,
                                    study_name=f"{name}-{behind}",
                                    sampler=optuna.samplers.RandomSampler(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's warning about the repeated report
            for i in range(3):
                trial = study.ask()
                _work(study, trial)
                if i == 1:
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    study.tell(trial, 0.25 * i)
        return [_stored(t) for t in _fresh_view(url, f"{name}-{behind}").get_trials()]

    if server == "sqlite":
        behind = run(f"sqlite:///{tmp_path / 'a.db'}", True)
        plain = run(f"sqlite:///{tmp_path / 'b.db'}", False)
    else:
        url = request.getfixturevalue("postgres_url")
        behind, plain = run(url, True), run(url, False)
    assert behind == plain
    assert [t[1] for t in behind] == [TrialState.COMPLETE, TrialState.PRUNED,
                                      TrialState.COMPLETE]


def test_writes_wait_for_the_end_and_this_process_sees_them_at_once(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    storage = study._storage
    first = study.ask()
    _work(study, first)  # the first trial writes each parameter itself: none is known yet
    study.tell(first, 1.0)
    trial = study.ask()
    before = storage.transactions
    _work(study, trial)
    (stored,) = [t for t in _fresh_view(sqlite_url).get_trials() if t.number == trial.number]
    assert stored.params == {} and stored.intermediate_values == {}  # not written yet
    assert "seed" not in stored.user_attrs
    mine = study.get_trials(deepcopy=False)[-1]  # a fresh read here: buffered writes applied
    assert mine.params == trial.params and set(mine.params) == {"lr", "layers", "opt"}
    assert mine.intermediate_values[5] == 0.2 and mine.user_attrs["seed"] == 8
    assert mine.system_attrs["rung"] == 1.5
    study.tell(trial, 2.0)
    assert storage.transactions == before + 1  # everything and the state: one transaction
    (stored,) = [t for t in _fresh_view(sqlite_url).get_trials() if t.number == trial.number]
    assert _stored(stored) == _stored(study.get_trials()[-1])
    assert stored.state == TrialState.COMPLETE and stored.user_attrs["seed"] == 8


def test_flush_and_the_flush_interval_publish_a_running_trial(sqlite_url: str,
                                                              monkeypatch) -> None:
    import tuner.shared_reads

    study = _study(sqlite_url)
    trial = _running_trial(study)
    assert _fresh_view(sqlite_url).get_trials()[-1].params == {}
    flush(study, trial)
    stored = _fresh_view(sqlite_url).get_trials()[-1]
    assert stored.state == TrialState.RUNNING
    assert stored.params == trial.params and stored.intermediate_values == {1: 0.5}
    trial.report(0.25, 2)
    assert _fresh_view(sqlite_url).get_trials()[-1].intermediate_values == {1: 0.5}
    monkeypatch.setattr(tuner.shared_reads, "FLUSH_S", 0.0)  # every write is old enough
    trial.report(0.125, 3)
    assert _fresh_view(sqlite_url).get_trials()[-1].intermediate_values == {
        1: 0.5, 2: 0.25, 3: 0.125}


def _warm(study: optuna.Study) -> None:
    """A first trial: the distribution of "x" is known from then on (a parameter's first
    suggestion in a process is written at once, to check it against the study's)."""
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, 0.0)


def _running_trial(study: optuna.Study) -> optuna.Trial:
    """A running trial after the first, with "x" suggested and epoch 1 reported (buffered)."""
    _warm(study)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(0.5, 1)
    return trial


def test_a_trial_another_process_finished_keeps_its_state_and_refuses_ours(
        sqlite_url: str) -> None:
    study = _study(sqlite_url)
    trial = _running_trial(study)
    other = _fresh_view(sqlite_url)
    other._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # a reaper
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study.tell(trial, 1.0)
    stored = _fresh_view(sqlite_url).get_trials()[-1]
    assert stored.state == TrialState.FAIL and stored.params == {}
    assert stored.intermediate_values == {}


def test_a_failed_write_keeps_the_buffer_for_the_next_attempt(sqlite_url: str,
                                                              monkeypatch) -> None:
    from tuner.errors import StorageUnavailable
    from tuner.storage_guard import GuardedRDBStorage

    study = _study(sqlite_url)
    trial = _running_trial(study)
    real = GuardedRDBStorage.write_trial
    calls = []

    def fail_once(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise StorageUnavailable("disk full: test")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GuardedRDBStorage, "write_trial", fail_once)
    with pytest.raises(StorageUnavailable):
        study.tell(trial, 1.0)
    study.tell(trial, 1.0)
    stored = _fresh_view(sqlite_url).get_trials()[-1]
    assert stored.state == TrialState.COMPLETE and stored.value == 1.0
    assert stored.params == trial.params and stored.intermediate_values == {1: 0.5}


def test_a_queued_trial_taken_by_ask_is_written_behind_too(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    _warm(study)
    study.enqueue_trial({"x": 0.25})
    trial = study.ask()
    assert trial.suggest_float("x", 0.0, 1.0) == 0.25
    trial.report(0.5, 1)
    before = study._storage.transactions
    study.tell(trial, 1.0)
    assert study._storage.transactions == before + 1
    stored = _fresh_view(sqlite_url).get_trials()[-1]
    assert stored.params == {"x": 0.25} and stored.intermediate_values == {1: 0.5}
    assert stored.state == TrialState.COMPLETE


def test_an_incompatible_parameter_is_refused_when_suggested(sqlite_url: str) -> None:
    study = _study(sqlite_url)
    first = study.ask()
    first.suggest_float("x", 0.0, 1.0)
    study.tell(first, 1.0)
    trial = study.ask()
    with pytest.raises(ValueError, match="[Cc]annot set different distribution"):
        trial.suggest_categorical("x", ["a", "b"])


def test_counts_from_one_query_match_the_trials(sqlite_url: str) -> None:
    from tuner.trial_count import _state_counts

    study = _study(sqlite_url)
    for value in (1.0, None, 2.0):
        trial = study.ask()
        if value is None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
    running = [study.ask() for _ in range(3)]
    study.enqueue_trial({"x": 0.5})
    counted = _state_counts(study)
    assert counted == {TrialState.COMPLETE: 2, TrialState.PRUNED: 1, TrialState.RUNNING: 3,
                       TrialState.WAITING: 1}
    below = _state_counts(study, running_below=running[1].number)
    assert below == {TrialState.COMPLETE: 2, TrialState.PRUNED: 1, TrialState.RUNNING: 1}


def test_a_paused_trial_shows_its_last_report_within_the_flush_interval(
        sqlite_url: str, monkeypatch) -> None:
    """No write follows the report (the trial is busy elsewhere): the flush thread writes it."""
    import time

    import tuner.shared_reads

    monkeypatch.setattr(tuner.shared_reads, "FLUSH_S", 0.05)
    study = _study(sqlite_url)
    _warm(study)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    flush(study, trial)
    trial.report(0.5, 1)  # too soon after the flush to be written with it
    end = time.monotonic() + 30
    seen = {}
    while time.monotonic() < end and not seen:
        seen = _fresh_view(sqlite_url).get_trials()[-1].intermediate_values
        time.sleep(0.02)  # polled as a dashboard polls: the storage is the only witness
    assert seen == {1: 0.5}
    study.tell(trial, 1.0)
    assert _fresh_view(sqlite_url).get_trials()[-1].state == TrialState.COMPLETE


def test_trials_are_created_with_their_owner_in_the_same_transaction(sqlite_url: str) -> None:
    from tuner.reaping import OWNER_ATTR, owner_attrs
    from tuner.shared_reads import create_trials_with

    study = _study(sqlite_url)
    create_trials_with(study, owner_attrs)
    trials = [study.ask() for _ in range(3)]
    stored = _fresh_view(sqlite_url).get_trials()
    user, system = owner_attrs()
    assert [t.number for t in stored] == [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.RUNNING and t.user_attrs == user
               and t.system_attrs[OWNER_ATTR] == system[OWNER_ATTR] for t in stored)
    create_trials_with(study, None)
    assert _fresh_view(sqlite_url).trials[-1].system_attrs  # the earlier ones keep theirs
    study.ask()
    assert _fresh_view(sqlite_url).trials[-1].system_attrs == {}


def _attrs(url: str) -> dict:
    view = _fresh_view(url)
    return view._storage.get_study_system_attrs(view._study_id)


def test_study_attributes_in_a_block_are_written_together_or_not_at_all(
        sqlite_url: str) -> None:
    from tuner.shared_reads import study_attrs_together

    study = _study(sqlite_url)
    storage, sid = study._storage, study._study_id
    with study_attrs_together(study):
        storage.set_study_system_attr(sid, "a", 1)
        storage.set_study_system_attr(sid, "b", [2])
        assert storage.get_study_system_attrs(sid)["b"] == [2]  # read back here at once
        assert "a" not in _attrs(sqlite_url)  # not yet in the file
    assert {"a": 1, "b": [2]}.items() <= _attrs(sqlite_url).items()
    with pytest.raises(RuntimeError), study_attrs_together(study):
        storage.set_study_system_attr(sid, "a", 3)
        raise RuntimeError("a refresh that fails half-way")
    assert _attrs(sqlite_url)["a"] == 1  # the earlier value stays
