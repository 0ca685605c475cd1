"""Warm workers: a run is handed to a worker that already imported TensorFlow, one job per
process, a replacement waits for the next run, and an idle one leaves by itself."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from conftest import RUN_TIMEOUT_S, tiny_config, wait_for
from core import jobs, warm
from core.store import COMPLETED


def wait_ready(home, timeout: float = RUN_TIMEOUT_S) -> int:
    deadline = time.monotonic() + timeout
    while not (ready := warm._entries(home, "ready")):
        assert time.monotonic() < deadline, "no warm worker became ready"
        time.sleep(0.1)
    return ready[0]


@pytest.fixture
def warm_lab(lab, monkeypatch):
    monkeypatch.setenv("LAB_WARM_WORKERS", "1")
    return lab


def test_a_run_goes_to_the_waiting_worker_and_a_new_one_waits(warm_lab):
    lab = warm_lab
    jobs.dispatch(lab)  # nothing queued: starts the first warm worker
    waiting = wait_ready(lab.home)
    run_id = jobs.submit(lab, tiny_config(name="warm run"))
    run = wait_for(lab, run_id)
    assert run.status == COMPLETED, run.error
    assert run.pid == waiting  # the loaded worker ran it
    assert lab.metric_count(run_id, "batch") > 0
    replacement = wait_ready(lab.home)
    assert replacement != waiting
    deadline = time.monotonic() + 30
    while psutil.pid_exists(waiting) and psutil.Process(waiting).status() != "zombie":
        assert time.monotonic() < deadline, "the warm worker did not exit after its job"
        time.sleep(0.2)


def test_an_idle_warm_worker_leaves(warm_lab, monkeypatch):
    monkeypatch.setenv("LAB_WARM_IDLE_S", "0.5")
    started = warm.ensure(warm_lab.home, lambda: jobs.spawn(
        warm_lab.home, [warm.FLAG], warm.log_path(warm_lab.home)))
    assert started
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while psutil.pid_exists(started) and psutil.Process(started).status() != "zombie":
        assert time.monotonic() < deadline, "the idle warm worker is still there"
        time.sleep(0.2)
    assert not list(warm.folder(warm_lab.home).glob(f"{started}.*"))


def test_a_starting_worker_is_taken_when_none_waits(warm_lab):
    """A ready worker first; else a starting one, which then runs the run once loaded
    (this process and its parent stand in for two live workers)."""
    home, me, parent = warm_lab.home, os.getpid(), os.getppid()
    root = warm.folder(home)
    (root / f"{me}.starting").touch()
    (root / f"{parent}.ready").touch()
    assert warm.hand_over(home, "run-1") == parent
    (root / f"{parent}.taken").unlink()
    (root / f"{parent}.go").unlink()
    assert not warm.handed(home)
    assert warm.hand_over(home, "run-2") == me
    assert warm.handed(home) and not (root / f"{me}.starting").exists()
    assert warm.wait_for_run(home) == "run-2"  # at once, never announced as ready
    assert not list(root.glob(f"{me}.*"))


def test_a_loaded_warm_worker_prepares_once_wanted(lab):
    """It waits while the run that made it trains alone; a queued run, that run's end or
    a hand-over ends the wait."""
    from core import worker
    from core.store import COMPLETED

    run_id = lab.create_run(tiny_config())
    lab.claim_next(1)
    t0 = time.monotonic()
    threading.Timer(1.0, lambda: lab.create_run(tiny_config(seed=2))).start()
    worker.wait_until_needed(lab, run_id)
    assert 1.0 <= time.monotonic() - t0 < 1.0 + worker.NEEDED_POLL_S + 2.0
    lab.request_cancel(lab.queue_order()[0])  # the queue is empty again
    t0 = time.monotonic()
    worker.wait_until_needed(lab, run_id, handed=lambda: True)
    threading.Timer(1.0, lambda: lab.finish(run_id, COMPLETED)).start()
    worker.wait_until_needed(lab, run_id)
    assert time.monotonic() - t0 >= 1.0


# -- the warm worker's head start (core/warmstart.py) ----------------------------------------


def _train_tiny(cfg, prepared=None):
    """In this process: (weights, optimizer variables, batch losses, test probabilities,
    whether a prepared model trained) of a fast run of ``cfg``, built as a worker builds it,
    after preparing ``prepared``'s model when given."""
    import keras
    import numpy as np

    from core import fast, warmstart
    from core.data import load_dataset
    from core.models import build_model, compile_model

    warmstart.forget()
    if prepared is not None:
        assert warmstart.prepare(prepared).startswith("prepared")
    keras.utils.set_random_seed(cfg.seed)
    fresh = compile_model(build_model(cfg), cfg)
    model = warmstart.adopt(fresh, cfg)
    ds = load_dataset()
    x, y = ds.arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
    losses = []

    class Losses(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(logs["loss"])

    fast.fit(model, cfg, x[:192], y[:192], None, (x[192:], y[192:]), [Losses()])
    p = fast.predict(model, cfg, ds.arrays("test", cfg.top_words, cfg.maxlen, 128)[0])
    warmstart.forget()
    return ([np.asarray(v) for v in model.variables],
            [np.asarray(v) for v in model.optimizer.variables], losses, p, model is not fresh)


def test_a_prepared_model_trains_exactly_as_a_fresh_one(lab):
    """Prepared with another seed and learning rate, traced and stepped on a dummy batch:
    after adopting the run's fresh model it trains to the same bits, and no step retraces."""
    import numpy as np

    cfg = tiny_config(epochs=2, seed=3, learning_rate=0.01)
    cold = _train_tiny(cfg)
    warm_ = _train_tiny(cfg, prepared=tiny_config(seed=9))
    assert not cold[4] and warm_[4]  # the second trained the prepared twin
    for a, b in zip(cold[0] + cold[1], warm_[0] + warm_[1], strict=True):
        assert np.array_equal(a, b)
    assert cold[2] == warm_[2] and np.array_equal(cold[3], warm_[3])
    # Another shape is not adopted: the run builds and traces its own.
    assert not _train_tiny(tiny_config(units=5), prepared=tiny_config())[4]


def test_the_kept_data_is_used_while_its_source_is_unchanged(lab, monkeypatch):
    """The kept dataset and padded rows serve a run exactly as padding anew would, while the
    source is the one they were read from."""
    import numpy as np

    from core import data, warmstart

    cfg = tiny_config()
    warmstart.keep_data(cfg)
    try:
        kept = warmstart.dataset()
        assert kept is warmstart._kept["dataset"] and kept.source.is_demo
        for split, n in (("train", 100), ("test", 0), ("train", 10**6)):
            x, y = warmstart.arrays(kept, split, cfg.top_words, cfg.maxlen, n)
            want = kept.arrays(split, cfg.top_words, cfg.maxlen, n)
            assert np.array_equal(x, want[0]) and np.array_equal(y, want[1])
            assert not x.flags.writeable and not y.flags.writeable
        other = warmstart.arrays(kept, "train", cfg.top_words, cfg.maxlen + 1, 10)
        assert other[0].shape == (10, cfg.maxlen + 1) and other[0].flags.writeable
        monkeypatch.setattr(data, "fingerprint", lambda src: "changed")  # the data changed
        assert warmstart.dataset() is not kept
    finally:
        warmstart.forget()


def test_no_words_only_rows_are_kept_for_a_model_that_reads_ngrams(lab):
    """An n-gram model's job builds its own rows (training.ngram_arrays): the warm worker
    keeps the dataset view for it but pads nothing it would throw away."""
    from core import warmstart

    warmstart.forget()
    try:
        warmstart.keep_data(tiny_config(architecture="cnn-lstm-bigrams", bigrams=50))
        assert warmstart._kept["dataset"] is warmstart.dataset()
        assert warmstart._kept["arrays"] == {}
    finally:
        warmstart.forget()


def test_a_warm_worker_prepares_the_queued_run_and_matches_a_cold_run(warm_lab, monkeypatch):
    """A warm worker traces the queued run's model before it is handed the run and trains
    it to the same rows and results as a cold worker; with warm workers then turned off,
    the cold run gets a fresh worker and no spare is started."""
    lab = warm_lab
    cfg = tiny_config(epochs=2, seed=4)
    probes = ["a wonderful film", "a boring waste"]
    queued = jobs.submit(lab, cfg, probes, start=False)  # first in the queue as it wakes
    started = warm.ensure(lab.home, lambda: jobs.spawn(lab.home, [warm.FLAG],
                                                       warm.log_path(lab.home)))
    assert wait_ready(lab.home) == started
    jobs.dispatch(lab)
    run = wait_for(lab, queued)
    assert run.status == COMPLETED, run.error
    assert run.pid == started and run.results["prepared_model"] is True
    assert f"prepared {cfg.display_name()}" in warm.log_path(lab.home).read_text()
    monkeypatch.setenv("LAB_WARM_WORKERS", "0")
    warm.stop_all(lab.home)
    cold = wait_for(lab, jobs.submit(lab, cfg, probes))
    assert cold.status == COMPLETED and cold.results["prepared_model"] is False
    # Off means a fresh worker per run: none was started ahead to wait for the next one.
    assert not warm._entries(lab.home, "ready") and not warm._entries(lab.home, "starting")

    def rows(run_id):  # every batch, epoch, validation and probe value (not the timings)
        return [(m["step"], m["phase"], m["name"], m["value"]) for m in lab.metrics(run_id)
                if m["name"] != "seconds"]

    assert rows(run.id) == rows(cold.id)
    for key in ("test_accuracy", "auc", "confusion", "params"):
        assert run.results[key] == cold.results[key]


def test_a_ready_worker_prepares_again_when_the_next_run_changes(lab):
    """The queue's next run decides what a waiting worker has traced: a new kind of run
    that stays next for two looks is prepared, a passing one or an empty queue is not."""
    from core import warmstart, worker

    look = worker.Reprepare()
    first = tiny_config(seed=3)
    other = tiny_config(units=6, maxlen=30)
    assert warmstart.graph_key(first) != warmstart.graph_key(other)
    try:
        queued = lab.create_run(first)
        assert not look()  # seen once: it may be a moment's order
        assert look() and warmstart._kept["key"] == warmstart.graph_key(first)
        assert not look()  # prepared already
        lab.request_cancel(queued)
        assert not look() and not look()  # nothing queued: what is prepared stays
        assert warmstart._kept["key"] == warmstart.graph_key(first)
        lab.create_run(other)
        assert not look()
        assert look() and warmstart._kept["key"] == warmstart.graph_key(other)
        assert list(warmstart._kept["arrays"]) == [("train", 100, 30), ("test", 100, 30)]
    finally:
        warmstart.forget()
