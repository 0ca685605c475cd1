"""The training engine end to end: a tiny run through a real worker process, read back."""

from __future__ import annotations

import math

import pytest

from conftest import tiny_config, wait_for
from core import jobs
from core.config import ConfigError
from core.predict import Predictor
from core.store import CANCELLED, COMPLETED, DIVERGED, FAILED, PARTIAL_MODEL_FILE


def test_tiny_run_through_the_worker_streams_every_metric(lab_with_run):
    """What a worker leaves of a tiny two-epoch run: every batch, epoch, validation and probe
    row, the results, the phases, the model; the saved model predicts as the last probe.
    The run is the session's trained one (conftest.trained_home: jobs.submit through a real
    worker process, tiny_config(epochs=2), two probes), not a second identical training."""
    lab, run_id = lab_with_run
    run = lab.get(run_id)
    assert run.status == COMPLETED, run.error
    assert run.config == tiny_config(epochs=2, name=run.config.name)
    steps = math.ceil(192 / 32)  # 256 reviews, 25 % held out for validation
    for name in ("loss", "accuracy"):
        batch = [r for r in lab.metrics(run_id, "batch") if r["name"] == name]
        assert [r["step"] for r in batch] == list(range(1, steps * 2 + 1))
        assert all(math.isfinite(r["value"]) for r in batch)
        assert len([r for r in lab.metrics(run_id, "val") if r["name"] == name]) == 2
        assert len([r for r in lab.metrics(run_id, "train") if r["name"] == name]) == 2
    probes = lab.metrics(run_id, "probe")
    assert len(probes) == 2 * 3  # two sentences, before training and after each epoch
    r = run.results
    assert r["params"] == 100 * 8 + 4 * (4 * (8 + 4) + 4) + 5
    assert 0.0 <= r["test_accuracy"] <= 1.0 and r["test_reviews"] == 128
    assert sum(r["confusion"].values()) == 128
    assert r["roc"]["fpr"][0] == 0.0 and r["roc"]["tpr"][-1] == 1.0 and 0 <= r["auc"] <= 1
    assert len(r["epoch_seconds"]) == 2 and "Total params" in r["summary"]
    # Where the job's time went, from the worker process's start (kernels: fast mode).
    phases = r["phases"]
    assert list(phases) == ["start", "imports", "data", "encoder", "model", "kernels",
                            "first batch", "training", "evaluation", "saving"]
    assert all(s >= 0 for s in phases.values()) and phases["start"] > 0
    assert run.env["keras"].startswith("3.") and run.env["data"]["source"] == "demo"
    assert run.progress["stage"] == COMPLETED and run.progress["done"] == steps * 2
    assert lab.model_path(run_id).exists()
    assert not (lab.run_dir(run_id) / PARTIAL_MODEL_FILE).exists()
    # The saved model and encoder predict exactly as the model evaluated at the end.
    pred = Predictor.load(lab, run_id)
    p = pred.predict_one("a wonderful film")
    assert 0 < p.probability < 1 and p.label in ("positive", "negative")
    last_probe = [m["value"] for m in probes if m["name"] == "probe0"][-1]
    assert p.probability == pytest.approx(last_probe, abs=1e-5)


def test_invalid_config_starts_nothing(lab):
    with pytest.raises(ConfigError) as info:
        jobs.submit(lab, tiny_config(units=0, batch_size=10_000), n_train=2000, n_test=2000)
    assert any(e.startswith("units:") for e in info.value.errors)
    assert any(e.startswith("batch_size:") for e in info.value.errors)
    assert lab.list_runs() == []


def test_a_failing_run_keeps_its_traceback(lab, monkeypatch, tmp_path):
    # Valid when submitted; the data vanishes before the worker reads it.
    gone = tmp_path / "aclImdb_v1.tar.gz"
    monkeypatch.setenv("IMDB_DATA", str(gone))
    run_id = jobs.submit(lab, tiny_config())
    run = wait_for(lab, run_id)
    assert run.status == FAILED
    assert "Traceback" in run.error and "DataError" in run.error and "does not exist" in run.error


def test_non_finite_loss_ends_diverged_at_that_batch(lab, monkeypatch):
    monkeypatch.setenv("LAB_FAULT", "nan-label")
    run_id = jobs.submit(lab, tiny_config(epochs=3))
    run = wait_for(lab, run_id)
    assert run.status == DIVERGED, run.error
    at = run.results["diverged_at"]
    losses = [r for r in lab.metrics(run_id, "batch") if r["name"] == "loss"]
    # SQLite stores NaN as NULL: the last batch row is the non-finite one, and the only one.
    assert losses[-1]["step"] == at["step"] and losses[-1]["value"] is None
    assert all(r["value"] is not None and math.isfinite(r["value"]) for r in losses[:-1])
    assert at["epoch"] == 1 and not lab.model_path(run_id).exists()


def test_cancel_stops_a_running_job(lab, slow_batches):
    # 50 epochs x 32 batches, each at least slow_batches s: >= 80 s, cancelled after 2.
    run_id = jobs.submit(lab, tiny_config(epochs=50, train_size=1000, validation_split=0.0))
    wait_for(lab, run_id, until=lambda r: r.progress.get("done", 0) >= 2)
    jobs.cancel(lab, run_id)
    run = wait_for(lab, run_id)
    assert run.status == CANCELLED
    done = run.progress["done"]
    steps = [r["step"] for r in lab.metrics(run_id, "batch") if r["name"] == "loss"]
    assert steps[-1] == done and done < 50 * 32

