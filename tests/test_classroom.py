"""Classroom mode in core: nicknames, ownership enforced by core, the fair queue and its
per-owner cap, the instructor's caps, run reuse and the store migration. No training here:
runs are created and claimed in the store, so each test takes well under a second."""

from __future__ import annotations

import sqlite3

import pytest

from conftest import tiny_config
from core import access, classroom, identity, jobs, reuse
from core.config import ConfigError
from core.store import _SCHEMA, ACTIVE, CANCELLED, COMPLETED, QUEUED, RUNNING, QueueFull, RunStore

ANA, BEN = access.Actor("Ana"), access.Actor("Ben")
TEACHER = access.Actor("Teacher", instructor=True)


@pytest.fixture
def klass(lab, monkeypatch):
    """``lab`` in class mode: an instructor key is configured (as the web server does)."""
    monkeypatch.setenv(access.KEY_ENV, "s3cret")
    access.register_key(lab)
    return lab


# -- nicknames --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    ("", "enter a nickname"),
    ("   ", "enter a nickname"),
    ("x" * 25, "25 characters is too long"),
    ("<b>Ana</b>", "HTML or markdown"),
    ("**Ana**", "HTML or markdown"),
    ("[Ana](javascript:x)", "HTML or markdown"),
    ("Ana\u202eneB", "text-direction control"),
    ("Ana\u200f", "text-direction control"),
    ("Ana 🎉", "emoji"),
    ("Ana\nBen", "control"),
])
def test_bad_nicknames_get_a_clear_message(lab, raw, message):
    """Every kind of unusable nickname is refused before anything is stored, and says why."""
    with pytest.raises(identity.IdentityError, match=message):
        identity.register(lab, raw)
    assert lab.users() == []


def test_nicknames_of_any_script_are_unique_per_class_ignoring_case(lab):
    """Arabic or accented names are fine; 'ana' after 'Ana' (or full-width ＡＮＡ) is taken."""
    token, name = identity.register(lab, "  Ana  ")
    assert name == "Ana" and identity.lookup(lab, token) == "Ana"
    assert identity.register(lab, "مريم")[1] == "مريم"
    assert identity.register(lab, "José-Luis O'Neil")[1] == "José-Luis O'Neil"
    for dup in ("ana", "ＡＮＡ"):
        with pytest.raises(identity.IdentityError, match="already taken"):
            identity.register(lab, dup)
    assert identity.lookup(lab, "forged-token") is None


def test_the_class_code_is_checked_when_set(lab, monkeypatch):
    monkeypatch.setenv(identity.CODE_ENV, "lstm-101")
    with pytest.raises(identity.IdentityError, match="class code"):
        identity.register(lab, "Ana", "wrong")
    assert identity.register(lab, "Ana", " lstm-101 ")[1] == "Ana"


# -- ownership --------------------------------------------------------------------------------

def test_only_the_owner_or_the_instructor_may_stop_rename_or_delete(klass):
    """Core refuses whatever a page shows: the error names the owner."""
    run_id = klass.create_run(tiny_config(), owner="Ana")
    for call in (lambda a: jobs.cancel(klass, run_id, a),
                 lambda a: klass.rename(run_id, "mine now", a),
                 lambda a: klass.delete(run_id, a)):
        for intruder in (BEN, access.ANONYMOUS, None):
            with pytest.raises(access.PermissionDenied, match="belongs to Ana"):
                call(intruder)
    assert klass.get(run_id).status == QUEUED and klass.get(run_id).name != "mine now"
    klass.rename(run_id, "Ana's run", ANA)
    assert jobs.cancel(klass, run_id, ANA) == CANCELLED
    klass.delete(run_id, TEACHER)
    assert not klass.exists(run_id)


def test_ownerless_runs_are_shared_without_an_instructor_and_the_instructors_with_one(
        lab, monkeypatch):
    """Old runs (owner NULL): a single-user lab keeps managing them; a class does not."""
    run_id = lab.create_run(tiny_config())
    lab.rename(run_id, "still mine", BEN)
    monkeypatch.setenv(access.KEY_ENV, "s3cret")
    access.register_key(lab)
    with pytest.raises(access.PermissionDenied, match="no owner"):
        lab.rename(run_id, "not yours", BEN)
    lab.rename(run_id, "the instructor's", TEACHER)


def test_in_a_class_only_a_named_student_or_the_instructor_may_submit(klass):
    with pytest.raises(ConfigError, match="pick a nickname"):
        jobs.submit(klass, tiny_config(), actor=access.ANONYMOUS, start=False)
    jobs.submit(klass, tiny_config(), actor=access.Actor(None, instructor=True), start=False)
    assert klass.get(jobs.submit(klass, tiny_config(), actor=ANA, start=False)).owner == "Ana"


# -- the fair queue ---------------------------------------------------------------------------

def _drain(store: RunStore) -> list[str]:
    """Claim and finish runs one at a time (one slot); the names in start order."""
    names = []
    while (run := store.claim_next(max_running=1)) is not None:
        names.append(run.name)
        store.finish(run.id, COMPLETED)
    return names


@pytest.mark.parametrize("submitted", [
    ["A1", "A2", "A3", "B1", "B2", "B3"],
    ["A1", "B1", "B2", "A2", "B3", "A3"],
])
def test_two_owners_start_alternately_whatever_order_they_submitted(lab, submitted):
    """Behind a running job, A's and B's three runs start A1 B1 A2 B2 A3 B3; the queue
    positions shown beforehand are that same order."""
    blocker = lab.create_run(tiny_config(name="C1"), owner="Cy")
    assert lab.claim_next(1).id == blocker
    ids = {name: lab.create_run(tiny_config(name=name), owner="Ann" if name[0] == "A" else "Bo")
           for name in submitted}
    expected = ["A1", "B1", "A2", "B2", "A3", "B3"]
    assert [lab.queue_position(ids[n]) for n in expected] == [1, 2, 3, 4, 5, 6]
    lab.finish(blocker, COMPLETED)
    assert _drain(lab) == expected


def test_the_job_board_shows_the_fair_order_and_estimated_waits(lab):
    """The sidebar's board lists the queue in the order it will start, and each queued
    run's wait grows with the (estimated) runs ahead of it."""
    from core.board import Board

    lab.create_run(tiny_config(name="C1"), owner="Cy")
    lab.claim_next(1)  # running (fresh heartbeat), so the board's dispatch starts nothing
    ids = {n: lab.create_run(tiny_config(name=n), owner="Ann" if n[0] == "A" else "Bo")
           for n in ("A1", "A2", "B1")}
    board = Board(lab)
    assert [r.name for r in board.active()] == ["C1", "A1", "B1", "A2"]
    assert [board.queue_position(ids[n]) for n in ("A1", "B1", "A2")] == [1, 2, 3]
    waits = [board.estimated_wait(ids[n]) for n in ("A1", "B1", "A2")]
    assert 0 < waits[0] < waits[1] < waits[2]


def test_an_owner_who_started_recently_waits_for_one_who_has_not(lab):
    """Ann started a run; Bo (who never started) goes before Ann's next, though later."""
    first = lab.create_run(tiny_config(name="A1"), owner="Ann")
    lab.claim_next(1)
    lab.create_run(tiny_config(name="A2"), owner="Ann")
    lab.create_run(tiny_config(name="B1"), owner="Bo")
    lab.finish(first, COMPLETED)
    assert _drain(lab) == ["B1", "A2"]


def test_one_running_run_per_owner(lab):
    """Two free slots, Ann's two runs: the second waits for the first; Bo's may start."""
    a1 = lab.create_run(tiny_config(name="A1"), owner="Ann")
    lab.create_run(tiny_config(name="A2"), owner="Ann")
    assert lab.claim_next(2).id == a1
    assert lab.claim_next(2) is None
    lab.create_run(tiny_config(name="B1"), owner="Bo")
    assert lab.claim_next(2).name == "B1"


def test_the_fourth_queued_run_of_one_owner_is_refused(lab, monkeypatch):
    """LAB_MAX_QUEUED_PER_USER=3 (the default): the fourth says so; others are unaffected."""
    blocker = jobs.submit(lab, tiny_config(), actor=access.Actor("Cy"), start=False)
    lab.claim_next(1)
    for _ in range(3):
        jobs.submit(lab, tiny_config(), actor=ANA, start=False)
    with pytest.raises(QueueFull, match="Ana already has 3 runs waiting.*"
                                          "LAB_MAX_QUEUED_PER_USER=3"):
        jobs.submit(lab, tiny_config(), actor=ANA, start=False)
    jobs.submit(lab, tiny_config(), actor=BEN, start=False)
    assert len(lab.list_runs([QUEUED])) == 4 and lab.get(blocker).status == RUNNING
    monkeypatch.setenv("LAB_MAX_QUEUED_PER_USER", "4")
    jobs.submit(lab, tiny_config(), actor=ANA, start=False)


# -- instructor caps --------------------------------------------------------------------------

def test_caps_refuse_a_student_naming_the_cap_and_allow_the_instructor(klass):
    classroom.save(klass, classroom.ClassSettings(
        architectures=["lstm", "gru"], caps={"epochs": 3, "units": 16, "train_size": 500}))
    big = tiny_config(epochs=5, units=32, architecture="bilstm", train_size=0)
    with pytest.raises(ConfigError) as refused:
        jobs.submit(klass, big, n_train=2000, n_test=2000, actor=ANA, start=False)
    text = str(refused.value)
    assert "epochs: 5 is over the class cap of 3" in text
    assert "units: 32 is over the class cap of 16" in text
    assert "train_size: 0 (all 2000 training reviews) is over the class cap of 500" in text
    assert "architecture: bilstm is not allowed in this class" in text
    assert klass.list_runs() == []
    run_id = jobs.submit(klass, big, n_train=2000, n_test=2000, actor=TEACHER, start=False)
    assert klass.get(run_id).owner == "Teacher"
    assert classroom.allowed_ranges(classroom.load(klass).limits())["epochs"] == (1, 3)


def test_bad_class_settings_are_refused(lab):
    with pytest.raises(ValueError, match="units cap 0"):
        classroom.save(lab, classroom.ClassSettings(caps={"units": 0}))
    with pytest.raises(ValueError, match="allow at least one"):
        classroom.save(lab, classroom.ClassSettings(architectures=[]))


# -- run reuse --------------------------------------------------------------------------------

def _completed(store: RunStore, cfg, owner: str) -> str:
    """A run as a worker leaves it: completed, with results, a metric and a model file."""
    run_id = store.create_run(cfg, owner=owner, reuse_key=reuse.reuse_key(cfg))
    store.claim_next(1)
    store.update_results(run_id, test_accuracy=0.75)
    store.add_metrics(run_id, [(1, 0, "train", "accuracy", 0.7, 0.0)])
    store.model_path(run_id).write_bytes(b"model")
    store.finish(run_id, COMPLETED)
    return run_id


def test_an_identical_submission_is_answered_at_once_and_a_changed_one_trains(lab):
    """With reuse on, the same config and seed (another name) gets a completed copy linked
    to the original, owned by the submitter, with the model file: no queue, no worker.
    Any changed field (here the seed) is queued to train."""
    original = _completed(lab, tiny_config(name="Ana's"), "Ana")
    classroom.save(lab, classroom.ClassSettings(reuse=True))
    copy_id = jobs.submit(lab, tiny_config(name="Ben's"), actor=BEN)
    copy = lab.get(copy_id)
    assert copy.status == COMPLETED and copy.reused_from == original
    assert copy.owner == "Ben" and copy.name == "Ben's"
    assert copy.results["test_accuracy"] == 0.75 and copy.results["reused_from"] == original
    assert copy.pid is None and lab.list_runs(ACTIVE) == []  # no worker started
    assert lab.model_path(copy_id).read_bytes() == b"model"
    assert len(lab.metrics(copy_id, "train")) == 1
    changed = jobs.submit(lab, tiny_config(seed=2), actor=BEN, start=False)
    assert lab.get(changed).status == QUEUED and lab.get(changed).reused_from is None


def test_reuse_off_trains_again(lab):
    _completed(lab, tiny_config(), "Ana")
    assert lab.get(jobs.submit(lab, tiny_config(), actor=BEN, start=False)).status == QUEUED


# -- archive and migration --------------------------------------------------------------------

def test_archiving_hides_runs_and_frees_nicknames(lab):
    token, _ = identity.register(lab, "Ana")
    done = _completed(lab, tiny_config(), "Ana")
    waiting = lab.create_run(tiny_config(), owner="Ana")
    assert lab.archive_class() == 2
    assert lab.list_runs(archived=False) == [] and lab.get(done).archived
    assert lab.get(waiting).status == CANCELLED
    assert identity.lookup(lab, token) is None  # a new class: pick a nickname again
    identity.register(lab, "Ana")


def test_a_store_made_before_classroom_mode_gets_owner_columns(tmp_path):
    """Old runs keep working: owner NULL (shown '—'), not archived."""
    db = sqlite3.connect(tmp_path / "runs.db")
    db.executescript(_SCHEMA.split("CREATE TABLE IF NOT EXISTS users")[0])
    db.execute("INSERT INTO runs (id, seq, name, architecture, config, status, created_at) "
               "VALUES ('20200101-000000-aaaaaa', 1, 'old', 'lstm', ?, 'completed', 0)",
               (tiny_config().to_json(),))
    db.commit()
    db.close()
    store = RunStore(tmp_path)
    run = store.get("20200101-000000-aaaaaa")
    assert run.owner is None and not run.archived and access.owner_label(run.owner) == "—"
