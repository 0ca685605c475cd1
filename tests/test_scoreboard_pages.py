"""The seed scoreboard on the pages (AppTest): Train's "Reproduce over N seeds" control
queues a group under Launch's rules, and the scoreboard renders for a group of completed
tiny runs on Train (under the watched run) and on Compare ("Seed groups")."""

from __future__ import annotations

import os

import pytest
from test_pages import assert_clean, fill_form, keys, open_page, query_run, texts

from conftest import TINY, tiny_config
from core import jobs
from core.store import CANCELLED, QUEUED


@pytest.fixture
def busy_lab(lab):
    """``lab`` with its one training slot held by this (live) process: what is queued
    waits, so nothing trains here."""
    blocker = lab.create_run(tiny_config(name="blocker"))
    lab.claim_next(1)
    lab.set_worker(blocker, os.getpid())
    yield lab
    lab.finish(blocker, CANCELLED)  # before the lab fixture kills active runs' workers


def test_reproduce_queues_a_group_and_shows_its_scoreboard(busy_lab):
    at = fill_form(open_page("train"), {**TINY, "name": "tiny group"})
    assert "train_seeds" in keys(at.number_input) and "train_reproduce" in keys(at.button)
    assert at.button(key="train_reproduce").label == "Reproduce over 3 seeds"

    at.number_input(key="train_seeds").set_value(11).run()
    assert "seeds: 11 is out of range (allowed 2 to 10 seeds per group)" in texts(
        at.error).replace("\\", "")
    assert at.button(key="train_reproduce").disabled

    at.number_input(key="train_seeds").set_value(2).run()
    assert not at.button(key="train_reproduce").disabled
    at.button(key="train_reproduce").click().run()
    assert_clean(at)
    group = [r for r in busy_lab.list_runs() if r.group_id]
    assert sorted(r.config.seed for r in group) == [1, 2]
    assert {r.status for r in group} == {QUEUED} and len({r.group_id for r in group}) == 1
    first = min(group, key=lambda r: r.seq)
    assert query_run(at) == first.id
    assert "Seed scoreboard: tiny group × 2 seeds" in texts(at.subheader)
    assert "2 runs of one configuration, seeds 1 to 2 · 2 queued" in texts(at.caption)
    assert "No seed has finished yet (0 of 2)" in texts(at.markdown)
    for r in group:
        jobs.cancel(busy_lab, r.id)


def test_reproduce_follows_launchs_rules(lab, monkeypatch):
    """A bad value disables both buttons; in a class without a nickname too."""
    at = fill_form(open_page("train"), {"units": 0})
    assert at.button(key="train_launch").disabled and at.button(key="train_reproduce").disabled
    from core import access

    monkeypatch.setenv(access.KEY_ENV, "s3cret")
    at = open_page("train")
    assert at.button(key="train_reproduce").disabled
    assert lab.list_runs() == []


def _group_of_completed(store, run_id: str, accuracies=(0.70, 0.74, 0.78)) -> list[str]:
    """Completed copies of the trained tiny run, seeds 1.., as one group, each with its own
    test accuracy (their epoch curves are the original's)."""
    source = store.get(run_id)
    ids = []
    for seed, acc in enumerate(accuracies, start=1):
        cfg = tiny_config(epochs=2, seed=seed, name=f"tiny · seed {seed}")
        copy = store.copy_completed(source, cfg, None, group_id="g-test",
                                    group_label="tiny × 3 seeds")
        store.update_results(copy, test_accuracy=acc)
        ids.append(copy)
    return ids


def _assert_scoreboard(at) -> None:
    assert_clean(at)
    assert "Seed scoreboard: tiny × 3 seeds" in texts(at.subheader)
    assert "3 runs of one configuration, seeds 1 to 3 · 3 completed" in texts(at.caption)
    summary = texts(at.markdown)
    assert "Test accuracy over 3 of 3 seeds: mean **74.00 %** ± 4.00" in summary
    specs = " ".join(c.proto.spec for c in at.get("vega_lite_chart"))
    for title in ("Epoch loss across seeds", "Epoch accuracy across seeds",
                  "Test accuracy per seed"):
        assert title in specs
    table = next(d.value for d in at.dataframe if "Test acc (%)" in d.value.columns)
    assert list(table["Seed"]) == [1, 2, 3]
    assert list(table["Test acc (%)"]) == pytest.approx([70.0, 74.0, 78.0])


def test_the_scoreboard_renders_under_a_watched_run_of_a_group(lab_with_run):
    store, run_id = lab_with_run
    ids = _group_of_completed(store, run_id)
    _assert_scoreboard(open_page("train", {"run": ids[1]}))
    # a run in no group has no scoreboard
    assert "Seed scoreboard" not in texts(open_page("train", {"run": run_id}).subheader)


def test_compare_lists_seed_groups_and_shows_the_chosen_ones_scoreboard(lab_with_run):
    store, run_id = lab_with_run
    _group_of_completed(store, run_id)
    at = open_page("compare")
    assert "Seed groups" in texts(at.subheader)
    assert at.selectbox(key="compare_group").value == "g-test"
    _assert_scoreboard(at)
