"""One training run, as executed inside a worker process.

The callbacks only read ``logs``, write to the run store and set
``self.model.stop_training``; everything else (data, model, evaluation, saving) is plain
code around ``fit`` so a failure anywhere ends in a recorded status.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
import threading
import time
from typing import Any

import numpy as np

from core import store as st
from core.config import check
from core.data import load_dataset
from core.evaluate import evaluate
from core.text import Encoder

FLUSH_EVERY_S = 0.5  # batch metrics are buffered and written at most twice a second
PREDICT_BATCH = 512  # batch size for test-set prediction
RAY_NODE_ENV = "LAB_RAY_NODE_ID"  # set by core.raylaunch in a Ray task
FAULT_ENV = "LAB_FAULT"  # tests only: "nan-label" injects a non-finite loss, "deaf" a worker
# that ignores the cancel flag (the launcher must then stop it by force)


class Progress:
    """Shared between the callback (writer) and the heartbeat thread (persists it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, Any] = {"stage": "starting"}

    def update(self, **values: Any) -> None:
        with self.lock:
            self.state.update(values)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.state)


class Heartbeat(threading.Thread):
    """Writes heartbeat + progress every HEARTBEAT_S while the worker lives."""

    def __init__(self, store: st.RunStore, run_id: str, progress: Progress):
        super().__init__(daemon=True, name="heartbeat")
        self.store, self.run_id, self.progress = store, run_id, progress
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(st.HEARTBEAT_S):
            try:
                self.store.heartbeat(self.run_id, self.progress.snapshot())
            except Exception:  # noqa: BLE001 - a missed beat must never kill training
                pass

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
        self.store.heartbeat(self.run_id, self.progress.snapshot())


def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


def make_store_callback(store: st.RunStore, run_id: str, progress: Progress,
                        steps_per_epoch: int, epochs: int, batch_size: int, n_train: int):
    """The live-metrics callback. Keras 3 passes epoch-running means in batch ``logs``;
    the batch's own loss/accuracy is recovered exactly from consecutive means."""
    Callback = _keras_callback_base()

    class StoreCallback(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.buffer: list[tuple] = []
            self.last_flush = 0.0
            self.t_train = 0.0
            self.t_epoch = 0.0
            self.epoch = 0
            self.prev_mean: dict[str, float] = {}
            self.outcome: str | None = None  # "cancelled" | "diverged"
            self.diverged_at: dict[str, int] | None = None
            self.epoch_times: list[float] = []

        def flush(self) -> None:
            store.add_metrics(run_id, self.buffer)
            self.buffer = []
            self.last_flush = time.monotonic()

        def on_train_begin(self, logs=None):
            self.t_train = time.monotonic()
            progress.update(stage="training", epoch=0, epochs=epochs, batch=0,
                            steps_per_epoch=steps_per_epoch, done=0,
                            total=steps_per_epoch * epochs, eta_s=None)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.t_epoch = time.monotonic()
            self.prev_mean = {}

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            now = time.time()
            step = self.epoch * steps_per_epoch + batch + 1
            seen = min((batch + 1) * batch_size, n_train)
            prev_seen = min(batch * batch_size, n_train)
            size = max(seen - prev_seen, 1)
            for name in ("loss", "accuracy"):
                if name not in logs:
                    continue
                mean = float(logs[name])
                prev = self.prev_mean.get(name, 0.0)
                value = (mean * seen - prev * prev_seen) / size if math.isfinite(mean) else mean
                self.prev_mean[name] = mean
                self.buffer.append((step, self.epoch, "batch", name, value, now))
            done = step
            elapsed = time.monotonic() - self.t_train
            total = steps_per_epoch * epochs
            progress.update(epoch=self.epoch, batch=batch + 1, done=done, elapsed_s=elapsed,
                            eta_s=elapsed / done * (total - done))
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.outcome = "diverged"
                self.diverged_at = {"epoch": self.epoch + 1, "batch": batch + 1, "step": step}
                self.model.stop_training = True
                self.flush()
                return
            if store.cancel_requested(run_id) and os.environ.get(FAULT_ENV) != "deaf":
                self.outcome = "cancelled"
                self.model.stop_training = True
                self.flush()
                return
            if time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
                self.flush()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            now = time.time()
            step = (epoch + 1) * steps_per_epoch
            seconds = time.monotonic() - self.t_epoch
            if self.outcome is None:  # a stopped epoch is not a finished epoch
                self.epoch_times.append(seconds)
                for key, value in logs.items():
                    phase, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
                    self.buffer.append((step, epoch, phase, name, float(value), now))
                self.buffer.append((step, epoch, "train", "seconds", seconds, now))
            self.flush()

        def on_train_end(self, logs=None):
            self.flush()

    return StoreCallback()


def make_probe_callback(store: st.RunStore, run_id: str, probes_x: np.ndarray,
                        steps_per_epoch: int):
    """Re-scores the user's probe sentences at every epoch end (and before training)."""
    Callback = _keras_callback_base()

    class ProbeCallback(Callback):
        def score(self, epoch: int, step: int) -> None:
            p = np.asarray(self.model(probes_x, training=False)).ravel()
            now = time.time()
            store.add_metrics(run_id, [(step, epoch, "probe", f"probe{i}", float(v), now)
                                       for i, v in enumerate(p)])

        def on_train_begin(self, logs=None):
            self.score(-1, 0)

        def on_epoch_end(self, epoch, logs=None):
            self.score(epoch, (epoch + 1) * steps_per_epoch)

    return ProbeCallback()


def environment() -> dict[str, Any]:
    """Library versions and machine, recorded with every run."""
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "host": socket.gethostname(), "platform": platform.platform(),
            "pid": os.getpid(), "argv": sys.argv[:3], **where()}


def where() -> dict[str, Any]:
    """Where this worker runs: its host, and the Ray node id when it runs as a Ray task."""
    node = os.environ.get(RAY_NODE_ENV)
    return {"host": socket.gethostname(), **({"ray_node": node} if node else {})}


def run_training(store: st.RunStore, run_id: str, progress: Progress) -> str:
    """Train, evaluate and save one run; returns its final status. Raises on failure
    (the worker records the traceback)."""
    import keras

    from core import fast
    from core.models import build_model, compile_model, summary_text

    run = store.get(run_id, reap=False)
    cfg = run.config
    progress.update(stage="loading data")
    keras.utils.set_random_seed(cfg.seed)
    ds = load_dataset()
    check(cfg, len(ds.train), len(ds.test))
    env = environment()
    env["data"] = {"source": ds.source.kind, "label": ds.source.label(), "path": ds.source.path}
    store.set_env(run_id, env)

    x_all, y_all = ds.arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
    x_test, y_test = ds.arrays("test", cfg.top_words, cfg.maxlen, cfg.test_size)
    lengths_test = ds.test.head(cfg.test_size).lengths()
    lengths_all = ds.train.head(cfg.train_size).lengths() + 1  # codes incl. start token
    n_val = int(round(len(x_all) * cfg.validation_split))
    # Keras's validation_split convention: the last fraction, taken before shuffling.
    n_fit = len(x_all) - n_val
    x_train, y_train, len_train = x_all[:n_fit], y_all[:n_fit], lengths_all[:n_fit]
    if os.environ.get(FAULT_ENV) == "nan-label":
        # Fault injection for reliability tests: one NaN label makes that batch's loss NaN.
        y_train = y_train.copy()
        y_train[len(y_train) // 2] = np.nan
    val = (x_all[n_fit:], y_all[n_fit:]) if n_val else None

    encoder = ds.encoder(cfg.top_words, cfg.maxlen)
    encoder.save(store.encoder_path(run_id))

    progress.update(stage="building model")
    model = compile_model(build_model(cfg), cfg)
    use_fast, fast_reason = fast.applies(cfg)
    if use_fast:
        fast_reason += f"; {fast.loops(model, cfg)}"
    store.update_results(run_id, params=int(model.count_params()), summary=summary_text(model),
                         n_train=int(n_fit), n_val=int(n_val), n_test=int(len(x_test)),
                         fast=use_fast, fast_reason=fast_reason)

    steps = math.ceil(n_fit / cfg.batch_size)
    cb = make_store_callback(store, run_id, progress, steps, cfg.epochs, cfg.batch_size, n_fit)
    callbacks = [cb]
    if run.probes:
        probes_x = encoder.encode_batch(run.probes)
        callbacks.append(make_probe_callback(store, run_id, probes_x, steps))
    if store.cancel_requested(run_id):
        return st.CANCELLED

    t0 = time.monotonic()
    if use_fast:
        fast.fit(model, cfg, x_train, y_train, len_train, val, callbacks)
    else:
        model.fit(x_train, y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
                  validation_data=val, callbacks=callbacks, verbose=0, shuffle=True)
    train_seconds = time.monotonic() - t0
    store.update_results(run_id, train_seconds=train_seconds, epoch_seconds=cb.epoch_times)

    if cb.outcome == "diverged":
        store.update_results(run_id, diverged_at=cb.diverged_at)
        return st.DIVERGED
    if cb.outcome == "cancelled":
        return st.CANCELLED

    progress.update(stage="evaluating", eta_s=None)
    p = model.predict(x_test, batch_size=PREDICT_BATCH, verbose=0).ravel()
    results = evaluate(y_test, p, lengths_test, cfg.maxlen)
    val_acc = [r["value"] for r in store.metrics(run_id, phase="val") if r["name"] == "accuracy"]
    results["best_val_accuracy"] = max(val_acc) if val_acc else None
    results["epochs_done"] = len(cb.epoch_times)

    progress.update(stage="saving model")
    partial = store.run_dir(run_id) / st.PARTIAL_MODEL_FILE
    model.save(partial)
    os.replace(partial, store.model_path(run_id))
    results["model_bytes"] = store.model_path(run_id).stat().st_size
    store.publish(run_id)  # PostgreSQL: into the database, for web servers on other machines
    store.update_results(run_id, **results)
    progress.update(stage="done", eta_s=0)
    return st.COMPLETED


def load_encoder(store: st.RunStore, run_id: str) -> Encoder:
    return Encoder.load(store.encoder_path(run_id))
