"""Classroom mode in the pages (AppTest): the nickname form, the instructor's limits on the
Train form, owners on Compare, the leaderboard and the Instructor page. Runs are made in
the store (completed with a test accuracy), so nothing trains here."""

from __future__ import annotations

import pytest
from test_pages import assert_clean, fill_form, open_page, texts

from conftest import TINY, tiny_config
from core import access, classroom, identity
from core.store import COMPLETED, RunStore


@pytest.fixture
def klass(lab, monkeypatch):
    """A class: instructor key and class code set, as the web server would have them."""
    monkeypatch.setenv(access.KEY_ENV, "s3cret")
    monkeypatch.setenv(identity.CODE_ENV, "lstm-101")
    access.register_key(lab)
    return lab


def as_user(at, lab, name: str, instructor: bool = False):
    """Act as ``name`` in this AppTest session (the cookie's token, put in the session)."""
    token, _ = identity.register(lab, name, "lstm-101")
    at.session_state["lab_token"] = token
    at.session_state["lab_instructor"] = instructor
    at.run()
    assert_clean(at)
    return at


def completed(lab: RunStore, owner: str | None, acc: float, **cfg) -> str:
    run_id = lab.create_run(tiny_config(**cfg), owner=owner)
    lab.update_results(run_id, test_accuracy=acc)
    lab.finish(run_id, COMPLETED)
    return run_id


def test_the_sidebar_asks_a_nickname_and_says_what_is_wrong(klass):
    """Each bad nickname gets its message; a good one with the class code joins."""
    at = open_page("data")
    assert "Pick a nickname to train" in texts(at.sidebar.caption)
    for bad, message in [("", "enter a nickname"), ("<b>x</b>", "HTML or markdown"),
                         ("Ana\u202e", "text-direction"), ("Ana 🎉", "emoji"),
                         ("y" * 30, "too long")]:
        at.text_input(key="who_nickname").input(bad)
        at.text_input(key="who_code").input("lstm-101")
        at.button(key="who_join").click().run()
        assert message in texts(at.sidebar.error).replace("\\", ""), bad
    identity.register(klass, "Ben", "lstm-101")
    at.text_input(key="who_nickname").input("ben").run()
    at.button(key="who_join").click().run()
    assert "already taken" in texts(at.sidebar.error)
    at.text_input(key="who_nickname").input("Ana").run()
    at.text_input(key="who_code").input("wrong").run()
    at.button(key="who_join").click().run()
    assert "class code" in texts(at.sidebar.error)
    at.text_input(key="who_code").input("lstm-101").run()
    at.button(key="who_join").click().run()
    assert_clean(at)
    assert "**You:** Ana" in texts(at.sidebar.markdown)
    assert "Ana" in klass.users()


def test_a_student_sees_the_class_limits_and_an_over_cap_run_is_refused(klass):
    """The form lists the allowed ranges; over the cap the message names it and Launch is
    off; the instructor may launch the same config."""
    classroom.save(klass, classroom.ClassSettings(
        architectures=["lstm", "gru"], caps={"epochs": 3, "units": 16}))
    at = as_user(open_page("train"), klass, "Ana")
    limits = texts(at.info)
    assert "Class limits" in limits and "Epochs 1 to 3" in limits
    assert "Recurrent units 1 to 16" in limits
    assert at.selectbox(key="train_architecture").options == ["LSTM", "GRU"]
    fill_form(at, {**TINY, "epochs": 5})
    assert "epochs: 5 is over the class cap of 3" in texts(at.error).replace("\\", "")
    assert at.button(key="train_launch").disabled
    at.session_state["lab_instructor"] = True
    at.run()
    assert not at.error and not at.button(key="train_launch").disabled


def test_without_a_nickname_a_class_cannot_train(klass):
    at = open_page("train")
    assert "Pick a nickname in the sidebar" in texts(at.warning)
    assert at.button(key="train_launch").disabled


def test_compare_marks_owners_and_offers_rename_only_to_the_owner(klass):
    """Ana sees her run marked and may rename it; Ben's run shows no rename or delete."""
    ana = completed(klass, "Ana", 0.8, name="ana run")
    ben = completed(klass, "Ben", 0.7, name="ben run")
    at = as_user(open_page("compare"), klass, "Ana")
    identity.register(klass, "Ben", "lstm-101")
    table = at.dataframe[0].value
    assert dict(zip(table["Name"], table["Owner"])) == {"ana run": "Ana (you)",
                                                         "ben run": "Ben"}
    at.selectbox(key="compare_target").set_value(ben).run()
    assert "compare_rename" not in {b.key for b in at.button}
    assert "compare_delete" not in {b.key for b in at.button}
    assert "belongs to Ben" in texts(at.caption)
    at.selectbox(key="compare_target").set_value(ana).run()
    at.text_input(key=f"compare_name_{ana}").input("mine").run()
    at.button(key="compare_rename").click().run()
    assert klass.get(ana).name == "mine"


def test_leaderboard_shows_each_students_best_and_links_to_compare(klass):
    completed(klass, "Ana", 0.80, architecture="lstm")
    best = completed(klass, "Ana", 0.86, architecture="lstm")
    ben = completed(klass, "Ben", 0.84, architecture="lstm")
    completed(klass, None, 0.99)  # no owner: not ranked
    at = as_user(open_page("data"), klass, "Cy")
    at.switch_page("app_pages/leaderboard.py").run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["Student"]) == ["Ana", "Ben"]
    assert list(table["Best test acc (%)"]) == pytest.approx([86.0, 84.0])
    assert "2 students · class mean 85.00 % ± 1.41" in texts(at.caption)
    query = at.get("page_link")[-1].proto.query_string  # Compare, these two runs selected
    assert query.startswith("runs=") and best in query and ben in query
    assert at.get("vega_lite_chart")
    classroom.save(klass, classroom.ClassSettings(leaderboard=False))
    at.run()
    assert "hidden the leaderboard" in texts(at.info)


def test_instructor_page_unlocks_with_the_key_saves_caps_and_archives(klass):
    completed(klass, "Ana", 0.8)
    at = open_page("data")
    at.switch_page("app_pages/instructor.py").run()
    at.text_input(key="instructor_key").input("guess")
    at.button(key="instructor_unlock").click().run()
    assert "not the key" in texts(at.error)
    at.text_input(key="instructor_key").input("s3cret")
    at.button(key="instructor_unlock").click().run()
    assert_clean(at)
    at.number_input(key="instructor_cap_epochs").set_value(4)
    at.toggle(key="instructor_reuse").set_value(True)
    at.button(key="FormSubmitter:instructor_settings-Save settings").click().run()
    assert_clean(at)
    saved = classroom.load(klass)
    assert saved.caps == {"epochs": 4} and saved.reuse
    assert list(at.dataframe[0].value["Owner"]) == ["Ana"]
    at.checkbox(key="instructor_confirm").check().run()
    at.button(key="instructor_archive").click().run()
    assert "Archived 1 runs" in texts(at.success)
    assert klass.list_runs(archived=False) == []


def test_a_single_user_lab_needs_no_nickname_and_has_no_instructor(lab):
    """Without LAB_INSTRUCTOR_KEY: Train launches without a nickname, the new pages say
    what they need, and ownerless runs stay manageable on Compare."""
    at = open_page("train")
    assert "Pick a nickname" not in texts(at.warning)
    assert at.button(key="train_launch").disabled is False
    at.switch_page("app_pages/leaderboard.py").run()
    assert "No completed run with an owner yet" in texts(at.info)
    at.switch_page("app_pages/instructor.py").run()
    assert "Classroom mode is off" in texts(at.info)
    completed(lab, None, 0.8)
    at.switch_page("app_pages/compare.py").run()
    assert_clean(at)
    assert "compare_rename" in {b.key for b in at.button}
