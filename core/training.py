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
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import warmstart
from core.config import ARCHITECTURES, check
from core.evaluate import evaluate
from core.store import (
    CANCELLED,
    COMPLETED,
    DIVERGED,
    HEARTBEAT_S,
    PARTIAL_MODEL_FILE,
    RunStore,
)
from core.text import Encoder, learn_bigrams

FLUSH_EVERY_S = 0.5  # batch metrics are buffered and written at most twice a second
PREDICT_BATCH = 512  # batch size for test-set prediction
RAY_NODE_ENV = "LAB_RAY_NODE_ID"  # set by core.raylaunch in a run's Ray actor
FAULT_ENV = "LAB_FAULT"  # tests only: "nan-label" injects a non-finite loss, "deaf" a worker
# that ignores the cancel flag (the launcher must then stop it by force), "slow-batch:0.05"
# sleeps 0.05 s after every training batch (a job that stays mid-epoch long enough to be
# killed, cancelled or watched, however fast the kernels get)
SLOW_BATCH_FAULT = "slow-batch:"


def slow_batch_seconds() -> float:
    """The sleep per batch that LAB_FAULT=slow-batch:SECONDS asks for (0 otherwise)."""
    fault = os.environ.get(FAULT_ENV, "")
    if not fault.startswith(SLOW_BATCH_FAULT):
        return 0.0
    try:
        return max(0.0, float(fault[len(SLOW_BATCH_FAULT):]))
    except ValueError:
        return 0.0


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

    def __init__(self, store: RunStore, run_id: str, progress: Progress):
        super().__init__(daemon=True, name="heartbeat")
        self.store, self.run_id, self.progress = store, run_id, progress
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
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


def make_store_callback(store: RunStore, run_id: str, progress: Progress,
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
            self.outcome: str | None = None  # CANCELLED | DIVERGED
            self.diverged_at: dict[str, int] | None = None
            self.epoch_times: list[float] = []
            self.first_batch_at: float | None = None  # monotonic, for the run's phases
            self.slow_s = slow_batch_seconds()  # fault injection (tests): 0 normally

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
            if self.first_batch_at is None:
                self.first_batch_at = time.monotonic()
            if self.slow_s:
                time.sleep(self.slow_s)
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
                self.outcome = DIVERGED
                self.diverged_at = {"epoch": self.epoch + 1, "batch": batch + 1, "step": step}
                self.model.stop_training = True
                self.flush()
                return
            if store.cancel_requested(run_id) and os.environ.get(FAULT_ENV) != "deaf":
                self.outcome = CANCELLED
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


def make_probe_callback(store: RunStore, run_id: str, probes_x: np.ndarray,
                        steps_per_epoch: int, score=None):
    """Re-scores the user's probe sentences at every epoch end (and before training).
    ``score(model, x)``: P(positive) per row; default the Keras model called eagerly (for a
    500-step LSTM a Python loop of seconds on the shared machine: fast runs pass fast
    mode's compiled forward pass: milliseconds, within ~1e-7 of it, BENCHMARKS.md section 9)."""
    Callback = _keras_callback_base()

    class ProbeCallback(Callback):
        def score(self, epoch: int, step: int) -> None:
            p = (np.asarray(self.model(probes_x, training=False)).ravel() if score is None
                 else score(self.model, probes_x))
            now = time.time()
            store.add_metrics(run_id, [(step, epoch, "probe", f"probe{i}", float(v), now)
                                       for i, v in enumerate(p)])

        def on_train_begin(self, logs=None):
            self.score(-1, 0)

        def on_epoch_end(self, epoch, logs=None):
            self.score(epoch, (epoch + 1) * steps_per_epoch)

    return ProbeCallback()


def process_age() -> float:
    """Seconds since this process was created. From /proc to 10 ms: psutil's create_time
    adds the boot time in whole seconds, up to 1 s off; psutil elsewhere."""
    try:
        with open("/proc/self/stat") as fh:  # starttime: field 22, in clock ticks
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())


class Phases:
    """Seconds each phase of a job took (``results["phases"]``), so a slow job shows where
    its time went: the start (from the run's claim, or the worker process's creation if
    later, to this job's code: a warm worker's hand-over, or a fresh interpreter, the worker's
    modules and the store), imports (Keras and TensorFlow), data,
    encoder, model, kernels, first batch (tracing), training (the rest of fit), evaluation,
    saving. Written to the store twice: after training and at the end."""

    def __init__(self, claimed_at: float | None = None) -> None:
        self.t = time.monotonic()
        self.seconds: dict[str, float] = {}
        main = getattr(sys.modules.get("__main__"), "__spec__", None)
        if main is not None and main.name == "core.worker":  # not when called in-process
            since_claim = time.time() - claimed_at if claimed_at else float("inf")
            self.seconds["start"] = round(min(process_age(), since_claim), 3)

    def mark(self, name: str, at: float | None = None) -> None:
        """The phase ``name`` ended now (or at monotonic time ``at``)."""
        at = time.monotonic() if at is None else at
        self.seconds[name] = round(self.seconds.get(name, 0.0) + at - self.t, 3)
        self.t = at


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
    """Where this worker runs: its host, and the Ray node id when it runs on Ray."""
    node = os.environ.get(RAY_NODE_ENV)
    return {"host": socket.gethostname(), **({"ray_node": node} if node else {})}


@dataclass
class JobData:
    """A run's arrays: the fit part of the training set, validation, test."""

    x_train: np.ndarray
    y_train: np.ndarray
    len_train: np.ndarray
    val: tuple[np.ndarray, np.ndarray] | None
    x_test: np.ndarray
    y_test: np.ndarray
    lengths_test: np.ndarray
    encoder: Encoder


def load_job_data(store: RunStore, run_id: str, cfg) -> JobData:
    """Load and pad the run's data (recording the source in the run's environment); a warm
    worker's kept dataset view and padded rows when they are still the source's
    (core/warmstart.py)."""
    ds = warmstart.dataset()
    check(cfg, len(ds.train), len(ds.test))
    env = environment()
    env["data"] = {"source": ds.source.kind, "label": ds.source.label(), "path": ds.source.path}
    store.set_env(run_id, env)
    encoder = ds.encoder(cfg.top_words, cfg.maxlen)
    reads_ngrams = ARCHITECTURES[cfg.architecture].get("ngrams")
    if reads_ngrams:  # its rows are built below: only the labels here
        y_all = ds.train.head(cfg.train_size).labels.astype(np.float32)
    else:
        x_all, y_all = warmstart.arrays(ds, "train", cfg.top_words, cfg.maxlen, cfg.train_size)
    n_val = int(round(len(y_all) * cfg.validation_split))
    # Keras's validation_split convention: the last fraction, taken before shuffling.
    n_fit = len(y_all) - n_val
    if reads_ngrams:  # bigrams from the fit reviews only
        encoder, x_all = ngram_arrays(ds, cfg, n_fit)
        x_test = encoder.encode_ragged(*ds.ragged("test", cfg.top_words, cfg.test_size))
        y_test = ds.test.head(cfg.test_size).labels.astype(np.float32)
    else:
        x_test, y_test = warmstart.arrays(ds, "test", cfg.top_words, cfg.maxlen, cfg.test_size)
    lengths_all = ds.train.head(cfg.train_size).lengths() + 1  # codes incl. start token
    y_train = y_all[:n_fit]
    if os.environ.get(FAULT_ENV) == "nan-label":
        # Fault injection for reliability tests: one NaN label makes that batch's loss NaN.
        y_train = y_train.copy()
        y_train[len(y_train) // 2] = np.nan
    return JobData(x_all[:n_fit], y_train, lengths_all[:n_fit],
                   (x_all[n_fit:], y_all[n_fit:]) if n_val else None, x_test, y_test,
                   ds.test.head(cfg.test_size).lengths(), encoder)


def ngram_arrays(ds, cfg, n_fit: int) -> tuple[Encoder, np.ndarray]:
    """An n-gram architecture's encoder (its bigrams counted on the first ``n_fit`` training
    reviews: never the validation or test reviews) and the padded training rows."""
    flat, offsets = ds.ragged("train", cfg.top_words, cfg.train_size)
    bigrams = learn_bigrams(flat[:offsets[n_fit]], offsets[:n_fit + 1], cfg.top_words,
                            cfg.bigrams)
    encoder = ds.encoder(cfg.top_words, cfg.maxlen).with_bigrams(
        ARCHITECTURES[cfg.architecture]["ngrams"], bigrams)
    return encoder, encoder.encode_ragged(flat, offsets)


def predict_test_set(model, cfg, x_test: np.ndarray, use_fast: bool) -> tuple[np.ndarray, str]:
    """(P(positive) for the test rows, how they were computed): through fast mode's exact
    engine when it trained the model, or when fast mode was asked for and the model's
    inference is exact there though its training was not (dropout before the recurrence:
    the identity at inference); length-sorted batches skip the padding, ~5 s instead of
    ~37 s for 25,000 reviews of the seed LSTM, within 1e-5 of predict. Else (``fast``
    off, or no shared padding prefix) model.predict on the padded rows."""
    from core import fast

    if use_fast or (cfg.fast and fast.predicts(model, cfg)):
        return fast.predict(model, cfg, x_test), "fast exact forward pass"
    return (np.asarray(model.predict(x_test, batch_size=PREDICT_BATCH, verbose=0)).ravel(),
            "model.predict on the padded rows")


def build_job_model(store: RunStore, run_id: str, cfg, data: JobData, phases: Phases):
    """Build and compile the model, load fast mode's loops; records what was built.
    Returns (model, fast mode used). In a warm worker that prepared this configuration's
    model, the freshly built model's state moves into that traced twin, which trains
    instead (core/warmstart.py: the same run, without tracing)."""
    from core import fast
    from core.models import build_model, compile_model, prepare_model, summary_text

    fresh = compile_model(build_model(cfg), cfg)
    prepare_model(fresh, cfg, data.x_train, data.y_train)
    model = warmstart.adopt(fresh, cfg)
    phases.mark("model")
    use_fast, fast_reason = fast.applies(cfg)
    if use_fast:
        fast_reason += f"; {fast.loops(model, cfg)}"  # builds the engine: loads the kernels
        phases.mark("kernels")
    n_val = 0 if data.val is None else len(data.val[0])
    store.update_results(run_id, params=int(model.count_params()), summary=summary_text(model),
                         n_train=len(data.x_train), n_val=n_val, n_test=len(data.x_test),
                         fast=use_fast, fast_reason=fast_reason,
                         prepared_model=model is not fresh)
    return model, use_fast


def train_model(cfg, model, use_fast: bool, data: JobData, callbacks: list) -> None:
    """fit: fast mode's exact loop or plain Keras on the padded rows."""
    from core import fast

    if use_fast:
        fast.fit(model, cfg, data.x_train, data.y_train, data.len_train, data.val, callbacks)
    else:
        model.fit(data.x_train, data.y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
                  validation_data=data.val, callbacks=callbacks, verbose=0, shuffle=True)


def make_callbacks(store: RunStore, run, progress: Progress, data: JobData,
                   use_fast: bool = False) -> list:
    """The live-metrics callback first, then the probe scorer if the run has probes
    (through fast mode's forward pass when it trains the model)."""
    from core import fast

    cfg, n_fit = run.config, len(data.x_train)
    steps = math.ceil(n_fit / cfg.batch_size)
    callbacks = [make_store_callback(store, run.id, progress, steps, cfg.epochs,
                                     cfg.batch_size, n_fit)]
    if run.probes:
        probes_x = data.encoder.encode_batch(run.probes)
        score = (lambda model, x: fast.predict(model, cfg, x)) if use_fast else None
        callbacks.append(make_probe_callback(store, run.id, probes_x, steps, score))
    return callbacks


def run_training(store: RunStore, run_id: str, progress: Progress) -> str:
    """Train, evaluate and save one run; returns its final status. Raises on failure
    (the worker records the traceback)."""
    run = store.get(run_id, reap=False)
    phases = Phases(run.started_at)
    import keras  # the first TensorFlow import in a worker: seconds (none in a warm one)

    phases.mark("imports")
    cfg = run.config
    progress.update(stage="loading data")
    keras.utils.set_random_seed(cfg.seed)
    data = load_job_data(store, run_id, cfg)
    phases.mark("data")
    data.encoder.save(store.encoder_path(run_id))
    phases.mark("encoder")
    progress.update(stage="building model")
    model, use_fast = build_job_model(store, run_id, cfg, data, phases)
    callbacks = make_callbacks(store, run, progress, data, use_fast)
    cb = callbacks[0]
    if store.cancel_requested(run_id):
        return CANCELLED

    t0 = time.monotonic()
    train_model(cfg, model, use_fast, data, callbacks)
    train_seconds = time.monotonic() - t0
    if cb.first_batch_at is not None:
        phases.mark("first batch", cb.first_batch_at)
    phases.mark("training")
    store.update_results(run_id, train_seconds=train_seconds, epoch_seconds=cb.epoch_times,
                         phases=phases.seconds)
    if cb.outcome == DIVERGED:
        store.update_results(run_id, diverged_at=cb.diverged_at)
        return DIVERGED
    if cb.outcome == CANCELLED:
        return CANCELLED
    return finish_run(store, run_id, cfg, model, use_fast, data, cb, progress, phases)


def finish_run(store, run_id, cfg, model, use_fast: bool, data: JobData, cb,
               progress: Progress, phases: Phases) -> str:
    """Evaluate the test set, save the model, record results and phases."""
    progress.update(stage="evaluating", eta_s=None)
    p, scored_by = predict_test_set(model, cfg, data.x_test, use_fast)
    results = evaluate(data.y_test, p, data.lengths_test, cfg.maxlen)
    results["test_predict"] = scored_by
    val_acc = [r["value"] for r in store.metrics(run_id, phase="val") if r["name"] == "accuracy"]
    results["best_val_accuracy"] = max(val_acc) if val_acc else None
    results["epochs_done"] = len(cb.epoch_times)
    phases.mark("evaluation")

    progress.update(stage="saving model")
    partial = store.run_dir(run_id) / PARTIAL_MODEL_FILE
    model.save(partial)
    os.replace(partial, store.model_path(run_id))
    results["model_bytes"] = store.model_path(run_id).stat().st_size
    store.publish(run_id)  # PostgreSQL: into the database, for web servers on other machines
    phases.mark("saving")
    store.update_results(run_id, phases=phases.seconds, **results)
    progress.update(stage="done", eta_s=0)
    return COMPLETED


def load_encoder(store: RunStore, run_id: str) -> Encoder:
    return Encoder.load(store.encoder_path(run_id))
