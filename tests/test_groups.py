"""Seed groups in core: the members' configurations, their statistics (checked against
numpy), and ``jobs.submit_group``'s checks: the number of seeds, the configuration, the
class's nickname rule and caps, the owner's queue, and reuse. No training: runs are created
and finished in the store, so each test takes well under a second."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import tiny_config
from core import access, classroom, groups, jobs, reuse
from core.config import GROUP_SEEDS, NAME_MAX_CHARS, ConfigError, preset, validate_seeds
from core.store import COMPLETED, QUEUED, RUNNING, QueueFull

ANA, BEN = access.Actor("Ana"), access.Actor("Ben")


# -- the group's configurations ---------------------------------------------------------------

@pytest.mark.parametrize("first, n, message", [
    (7, 1, "seeds: 1 is out of range (allowed 2 to 10 seeds per group)"),
    (7, 11, "seeds: 11 is out of range (allowed 2 to 10 seeds per group)"),
    (7, "3", "seeds: the number of seeds must be a whole number from 2 to 10, got '3'"),
    (7, 2.5, "seeds: the number of seeds must be a whole number from 2 to 10, got 2.5"),
    (2**31 - 2, 3, "seeds: 3 seeds from seed 2147483646 pass the largest seed 2147483647 "
                   "(start at 2147483645 or lower)"),
])
def test_a_bad_number_of_seeds_is_named_with_the_allowed_range(first, n, message):
    assert validate_seeds(first, n) == [message]


def test_the_bounds_themselves_are_fine():
    assert GROUP_SEEDS == (2, 10)
    assert validate_seeds(7, 2) == validate_seeds(0, 10) == validate_seeds(2**31 - 3, 3) == []


def test_members_differ_only_in_seed_and_name():
    cfg = tiny_config(seed=7, name="x" * NAME_MAX_CHARS)
    members = groups.members(cfg, 3)
    assert [m.seed for m in members] == [7, 8, 9]
    for m in members:
        assert {k for k, v in m.to_dict().items() if cfg.to_dict()[k] != v} <= {"seed", "name"}
        assert len(m.name) == NAME_MAX_CHARS and m.name.endswith(f"… · seed {m.seed}")
    assert groups.label(tiny_config(name="tiny"), 3) == "tiny × 3 seeds"
    assert len(groups.label(cfg, 10)) == NAME_MAX_CHARS
    assert groups.new_group_id() != groups.new_group_id()


# -- statistics -------------------------------------------------------------------------------

def _rows(values: dict[tuple[str, str], list[float]]) -> list[dict]:
    """Store-like epoch rows: {(phase, name): [value of epoch 0, epoch 1, ...]}."""
    return [{"phase": phase, "name": name, "epoch": e, "value": v, "step": 0, "t": 0.0}
            for (phase, name), series in values.items() for e, v in enumerate(series)]


def test_epoch_statistics_match_numpy_and_count_what_is_done():
    rng = np.random.default_rng(3)
    acc = rng.uniform(0.5, 0.9, size=(3, 4))  # 3 seeds x 4 epochs of validation accuracy
    loss = rng.uniform(0.2, 0.7, size=(3, 4))
    rows = {f"r{i}": _rows({("val", "accuracy"): list(acc[i]), ("val", "loss"): list(loss[i]),
                            ("train", "accuracy"): list(acc[i] - 0.1)})
            for i in range(3)}
    # a seed still training: two epochs done; and rows the statistics must ignore
    rows["r3"] = _rows({("val", "accuracy"): [0.6, 0.7], ("val", "loss"): [0.5, float("nan")]})
    rows["r3"] += [{"phase": "val", "name": "auc", "epoch": 0, "value": 0.9},
                   {"phase": "batch", "name": "loss", "epoch": 0, "value": 9.0},
                   {"phase": "val", "name": "loss", "epoch": 2, "value": None}]
    stats = groups.epoch_stats(rows)
    assert list(stats.columns) == groups.STAT_COLUMNS
    val_acc = stats[(stats.phase == "validation") & (stats.metric == "accuracy")]
    assert list(val_acc.epoch) == [1, 2, 3, 4] and list(val_acc.seeds) == [4, 4, 3, 3]
    for e in range(4):
        column = np.array([*acc[:, e], *([0.6, 0.7][e:e + 1])])  # the running seed: e < 2
        got = val_acc.iloc[e]
        assert got["mean"] == pytest.approx(column.mean())
        assert got["std"] == pytest.approx(column.std(ddof=1))
        assert got["lo"] == pytest.approx(column.mean() - column.std(ddof=1))
        assert got["hi"] == pytest.approx(column.mean() + column.std(ddof=1))
    val_loss = stats[(stats.phase == "validation") & (stats.metric == "loss")]
    assert list(val_loss.seeds) == [4, 3, 3, 3]  # the NaN and the NULL are left out
    assert val_loss.iloc[1]["mean"] == pytest.approx(loss[:, 1].mean())
    train = stats[stats.phase == "train"]
    assert set(train.metric) == {"accuracy"} and list(train.seeds) == [3, 3, 3, 3]


def test_one_seed_has_no_spread_and_no_rows_give_an_empty_frame():
    stats = groups.epoch_stats({"r0": _rows({("val", "accuracy"): [0.5, 0.8]})})
    assert list(stats["std"]) == [0.0, 0.0] and list(stats["lo"]) == [0.5, 0.8]
    empty = groups.epoch_stats({"r0": [], "r1": []})
    assert empty.empty and list(empty.columns) == groups.STAT_COLUMNS


def _run(seed: int, status: str, acc: float | None, cfg=None):
    results = {} if acc is None else {"test_accuracy": acc, "best_val_accuracy": acc + 0.01}
    return SimpleNamespace(id=f"run{seed}", status=status, results=results,
                           config=dataclasses.replace(cfg or tiny_config(), seed=seed))


def test_test_accuracy_per_seed_and_its_spread_beside_the_tutorial():
    cfg = preset("seed-lstm")
    runs = [_run(9, COMPLETED, 0.85, cfg), _run(7, COMPLETED, 0.87, cfg),
            _run(8, RUNNING, None, cfg), _run(10, "failed", 0.5, cfg)]
    stats = groups.accuracy_stats(runs)
    accs = np.array([85.0, 87.0])
    assert stats["done"] == 2 and stats["runs"] == 4
    assert stats["mean"] == pytest.approx(accs.mean())
    assert stats["std"] == pytest.approx(accs.std(ddof=1))
    assert (stats["min"], stats["max"]) == pytest.approx((85.0, 87.0))
    assert stats["preset"] == "seed-lstm" and stats["reference"] == 87.48
    frame = groups.seed_frame(runs)
    assert list(frame.seed) == [7, 8, 9, 10]  # in seed order
    assert list(frame.status) == [COMPLETED, RUNNING, COMPLETED, "failed"]
    assert frame.test_accuracy.iloc[0] == pytest.approx(87.0)
    assert frame.test_accuracy.isna().tolist() == [False, True, False, True]  # done only
    own = groups.accuracy_stats([_run(1, COMPLETED, 0.7)])
    assert own["std"] == 0.0 and own["reference"] is None and own["preset"] is None
    nothing = groups.accuracy_stats([_run(1, QUEUED, None)])
    assert nothing["done"] == 0 and nothing["mean"] is None


# -- submit_group -----------------------------------------------------------------------------

def test_a_group_queues_n_runs_differing_only_in_seed(lab):
    ids = jobs.submit_group(lab, tiny_config(seed=7, name="tiny"), 3, ["a fine film"],
                            n_train=2000, n_test=2000, actor=ANA, start=False)
    runs = [lab.get(i) for i in ids]
    assert [r.config.seed for r in runs] == [7, 8, 9] and {r.status for r in runs} == {QUEUED}
    assert [r.name for r in runs] == ["tiny · seed 7", "tiny · seed 8", "tiny · seed 9"]
    assert len({r.group_id for r in runs}) == 1 and runs[0].group_id
    assert {r.group_label for r in runs} == {"tiny × 3 seeds"}
    assert {r.owner for r in runs} == {"Ana"} and runs[0].probes == ["a fine film"]
    assert [r.id for r in lab.group(runs[0].group_id)] == ids
    assert len({r.reuse_key for r in runs}) == 3  # each seed is its own training


@pytest.mark.parametrize("n, overrides, message", [
    (1, {}, "seeds: 1 is out of range"),
    (11, {}, "seeds: 11 is out of range"),
    (3, {"units": 0}, "units: 0 is out of range"),
    (3, {"seed": 2**31 - 2}, "pass the largest seed"),
])
def test_a_bad_group_is_refused_before_anything_is_stored(lab, n, overrides, message):
    with pytest.raises(ConfigError, match=message):
        jobs.submit_group(lab, tiny_config(**overrides), n, actor=ANA, start=False)
    assert lab.list_runs() == []


def test_a_group_takes_the_class_rules_of_a_single_run(lab, monkeypatch):
    """In a class: a nickname is needed, a student's caps apply (not the instructor's),
    and the owner's queue must have room for every seed, which the error counts."""
    monkeypatch.setenv(access.KEY_ENV, "s3cret")
    access.register_key(lab)
    with pytest.raises(ConfigError, match="pick a nickname"):
        jobs.submit_group(lab, tiny_config(), 2, actor=access.ANONYMOUS, start=False)
    classroom.save(lab, classroom.ClassSettings(caps={"epochs": 1}))
    with pytest.raises(ConfigError, match="epochs: 2 is over the class cap of 1"):
        jobs.submit_group(lab, tiny_config(epochs=2), 2, actor=ANA, start=False)
    teacher = access.Actor("Teacher", instructor=True)
    assert len(jobs.submit_group(lab, tiny_config(epochs=2), 2, actor=teacher,
                                 start=False)) == 2
    jobs.submit(lab, tiny_config(), actor=ANA, start=False)  # LAB_MAX_QUEUED_PER_USER=3
    with pytest.raises(QueueFull, match="3 more runs would give Ana 4 waiting.*"
                                        "LAB_MAX_QUEUED_PER_USER=3.*Ana may queue 2 more now"):
        jobs.submit_group(lab, tiny_config(), 3, actor=ANA, start=False)
    assert [r.owner for r in lab.list_runs()].count("Ana") == 1  # none of the three
    assert len(jobs.submit_group(lab, tiny_config(), 2, actor=ANA, start=False)) == 2
    assert len(jobs.submit_group(lab, tiny_config(), 3, actor=BEN, start=False)) == 3


def test_with_reuse_on_a_seed_already_trained_is_copied_into_the_group(lab):
    done = lab.create_run(tiny_config(seed=8), reuse_key=reuse.reuse_key(tiny_config(seed=8)))
    lab.claim_next(1)
    lab.update_results(done, test_accuracy=0.75)
    lab.model_path(done).write_bytes(b"model")
    lab.finish(done, COMPLETED)
    classroom.save(lab, classroom.ClassSettings(reuse=True))
    ids = jobs.submit_group(lab, tiny_config(seed=7), 3, actor=ANA, start=False)
    runs = [lab.get(i) for i in ids]
    assert [r.status for r in runs] == [QUEUED, COMPLETED, QUEUED]
    assert runs[1].reused_from == done and runs[1].config.seed == 8
    assert len({r.group_id for r in runs}) == 1 and lab.get(done).group_id is None


# -- the scoreboard's charts and lines (app_pages/scoreboard_views.py) --------------------------

def _marks(chart) -> list[str]:
    return [layer["mark"]["type"] for layer in chart.to_dict()["layer"]]


def test_the_scoreboard_draws_the_band_the_seeds_and_the_tutorials_line():
    from app_pages import scoreboard_views as sv

    cfg = preset("seed-lstm")
    runs = [_run(7, COMPLETED, 0.86, cfg), _run(8, COMPLETED, 0.88, cfg),
            _run(9, RUNNING, None, cfg)]
    acc, seeds = groups.accuracy_stats(runs), groups.seed_frame(runs)
    chart = sv.seeds_chart(seeds, acc)
    assert _marks(chart) == ["rect", "rule", "circle", "rule", "text"]
    spec = chart.to_dict()
    points = next(v for v in spec["datasets"].values() if v and "seed" in v[0])
    assert [p["seed"] for p in points] == [7, 8]  # finished seeds only
    assert "tutorial 87.48 %" in str(spec["datasets"])
    assert sv.summary(acc) == ("Test accuracy over 2 of 3 seeds: mean **87.00 %** ± 1.41 "
                               "(min 86.00, max 88.00) · the tutorial reported **87.48 %**.")
    own = [_run(1, QUEUED, None)]
    assert _marks(sv.seeds_chart(groups.seed_frame(own), groups.accuracy_stats(own))) == [
        "circle"]  # nothing finished, no tutorial line
    assert sv.summary(groups.accuracy_stats(own)) == "No seed has finished yet (0 of 1)."

    stats = groups.epoch_stats({"a": _rows({("val", "accuracy"): [0.8, 0.85]}),
                                "b": _rows({("val", "accuracy"): [0.82, 0.86]})})
    assert _marks(sv.band_chart(stats, "accuracy", 0.8748, "tutorial")) == [
        "area", "line", "rule", "text"]
    assert _marks(sv.band_chart(stats, "loss")) == ["area", "line"]
    assert list(sv.seeds_table(seeds).columns) == list(sv.SEED_COLUMNS.values())


def test_compare_lists_each_group_once_newest_first():
    from app_pages import scoreboard_views as sv

    def run(seq, group, label="g"):
        return SimpleNamespace(seq=seq, group_id=group, group_label=label, name="n",
                               owner="Ana" if group == "g2" else None)

    runs = [run(1, "g1", "old × 2 seeds"), run(2, "g1"), run(3, None), run(4, "g2", "new"),
            run(5, "g2", "new"), run(6, "g2", "new")]
    assert sv.group_choices(runs) == {"g2": "new · 3 runs · by Ana", "g1": "g · 2 runs · by —"}
