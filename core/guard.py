"""Cost estimates for a configuration, and the budget that refuses what will not fit.

The estimates count the model's floating-point work, the fixed costs per recurrent step,
per batch, per epoch and per job, and the largest tensors, at the speed the run will train:
fast mode (core.fast.applies: the native LSTM kernels run each review's own steps only) or
plain Keras (every padded step). The constants below were calibrated on the 2-core build
machine; ``bench/estimates.py`` checks them against real jobs (BENCHMARKS.md section 12).

In fast mode a review costs the steps it really has, min(length + 1, maxlen) (the CNN:
that over pool_size), from the data's lengths when its cache is on disk (data_lengths),
else DEFAULT_MEAN_WORDS words with an exponential tail (E[min(L, maxlen)] =
m (1 - e^(-maxlen/m))); plain Keras runs every padded step. The calibration is described
with the constants.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from core import fmt
from core.config import ARCHITECTURES, BIDIRECTIONAL, ConfigError, TrainConfig, input_dim

# All times below: seconds on the 2-core build machine, calibrated 2026-11-30 with
# ``bench/estimates.py --calibrate``, which fits each constant to the phases of nine jobs
# (tiny models at batch 2 and 32, the seed LSTM and CNN + LSTM on the first 2,000 real
# reviews, 1 epoch, fast and plain, the LSTM + Dropout plain; one at a time, fresh worker
# each) and prints them. The fixed costs are the fit of the round at 05:56 UTC (load
# average 2.4-4.2 on 2 cores); the FLOP and prediction rates are set between that fit
# (plain 2.5e10, fast 5.1e10) and the full-data figures (seed LSTM epochs 90-140 s plain,
# 22-25 s fast, BENCHMARKS.md section 6; test evaluation, section 9), a single 2,000-review
# epoch being noisy. Two earlier rounds under heavy contention (load 8-12: three other
# engineers' test suites) fitted rates 2-3x lower and an import 2x longer: on a busy
# server jobs run that much slower than estimated. On another server, run
# ``bench/estimates.py --calibrate`` and copy the constants it prints.
#
# Plain Keras: sustained fp32 training throughput (FLOP/s, padded steps).
PLAIN_FLOPS_PER_S = 3.5e10
# Forward + backward cost relative to forward alone.
TRAIN_FACTOR = 3.0
# Keras's recurrent loop costs this per time step per training batch beyond its FLOPs
# (graph executor dispatch, forward + backward; a validation batch costs a third): it
# dominates small models. From the tiny models (40 steps, 4 units, batch 2 vs 32).
STEP_OVERHEAD_S = 0.00009
# Per epoch (plain): validation and probe scoring setup, callbacks, the epoch's store writes.
EPOCH_OVERHEAD_S = 1.0
# Tracing and compiling before the first batch (counted in the first epoch): plain, fast.
PLAIN_TRACE_S = 2.5
FAST_TRACE_S = 2.0
# Per job: the worker's start and TensorFlow import, data from the cache, building the
# model, saving it (the "start", "imports", "data", "model", "saving" phases: 4-14 s
# measured, most of it the import, which the machine's load stretches).
JOB_OVERHEAD_S = 5.0
# Test evaluation: a fixed cost, then the forward FLOPs at the prediction rate (plain
# model.predict on padded rows; fast mode: fast.predict over each review's own steps).
TEST_OVERHEAD_S = 0.5
PLAIN_PREDICT_FLOPS_PER_S = 4.0e10
FAST_PREDICT_FLOPS_PER_S = 1.0e11
# Fast mode (native LSTM kernels, core/native): sustained training FLOP rate over the
# steps it runs (each review's own, in length buckets), the cost per recurrent step per
# batch (the kernels' loop in C: small), per batch (the Python loop around the kernels,
# the callbacks) and per epoch.
FAST_FLOPS_PER_S = 6.5e10
FAST_STEP_OVERHEAD_S = 0.00001
FAST_BATCH_OVERHEAD_S = 0.0026
FAST_EPOCH_OVERHEAD_S = 0.05
# Fast mode's length buckets: a batch runs as many steps as its longest review, a little
# more than the mean of its reviews.
BUCKET_FACTOR = 1.05
# Mean words per review of the real IMDB data (train 234, test 228; a long tail: median
# 174, max 2,473): used when the data's own lengths are not on disk yet.
DEFAULT_MEAN_WORDS = 230.0
# Ids per word (the start token's included) in rows that carry each known bigram's id after
# its second word (core.text "inline"): 1.74 on aclImdb's training reviews for 5,000 words +
# 40,000 bigrams (lstm-best), 1.65 for 20,000 bigrams, 1.39 for 2,000 (measured 2026-11-30).
INLINE_IDS_PER_WORD = 1.74
# Bytes kept per float per (sample, step) for backprop, including TF's loop overhead.
ACTIVATION_OVERHEAD = 3.0
FLOAT_BYTES = 4
# Default budgets: overridable per server by LAB_MAX_TRAIN_MINUTES / LAB_MAX_MEMORY_GB.
DEFAULT_MAX_TRAIN_MINUTES = 24 * 60
DEFAULT_MEMORY_SHARE = 0.6  # of physical memory, for one job

# What to change when a job needs too much memory (the guard and the worker's OOM message).
MEMORY_ADVICE = "a smaller batch_size, maxlen, units, top_words or embedding_dim"


@dataclass
class Estimate:
    flops_per_epoch: float  # training FLOPs per epoch over the steps the run computes
    seconds_per_epoch: float  # training + validation + per-batch overhead, at ``speed``
    seconds: float  # the whole job: start, tracing, all epochs, testing, saving
    memory_bytes: float  # peak, rough
    fast: bool = False  # estimated at fast mode's speed (else plain Keras)
    steps_per_review: float = 0.0  # recurrent steps one review costs (first layer)
    training_seconds: float = 0.0  # fit: tracing and all epochs
    other_seconds: float = 0.0  # the rest: start, imports, data, tracing, test, saving

    @property
    def speed(self) -> str:
        return "fast mode" if self.fast else "plain Keras"

    def describe(self) -> str:
        return (f"about {fmt.seconds_rough(self.seconds)} ({fmt.seconds_rough(self.seconds_per_epoch)} per epoch "
                f"at {self.speed} speed, plus "
                f"~{self.other_seconds:.0f} s to start, "
                "trace, test and save) and "
                f"{self.memory_bytes / 2**30:.1f} GiB of memory")


def _recurrent_flops(cfg: TrainConfig, n_in: int, gates: int) -> float:
    return 2.0 * gates * cfg.units * (n_in + cfg.units + 1)


def recurrent_steps(cfg: TrainConfig) -> int:
    """Time steps one recurrent layer runs over a padded review (after the CNN's pooling)."""
    if cfg.architecture.startswith("cnn"):
        return max(1, cfg.maxlen // cfg.pool_size)
    return cfg.maxlen


def flops_per_sample(cfg: TrainConfig) -> tuple[float, int]:
    """Forward FLOPs for one padded review, and the floats per step kept for backprop."""
    arch = cfg.architecture
    floats = cfg.embedding_dim
    flops = 0.0
    rnn_in = cfg.embedding_dim
    if arch.startswith("cnn"):
        flops += 2.0 * cfg.maxlen * cfg.conv_filters * cfg.kernel_size * cfg.embedding_dim
        floats += cfg.conv_filters
        rnn_in = cfg.conv_filters
    gates = 3 if arch == "gru" else 4
    per_step = _recurrent_flops(cfg, rnn_in, gates)
    floats += (gates + 2) * cfg.units
    if arch in BIDIRECTIONAL:
        per_step *= 2
        floats *= 2
    elif arch == "stacked-lstm":
        per_step += _recurrent_flops(cfg, cfg.units, gates)
        floats += (gates + 2) * cfg.units
    flops += per_step * recurrent_steps(cfg) + 2.0 * cfg.units
    return flops, floats


def loop_steps(cfg: TrainConfig) -> int:
    """Recurrent time steps per batch (all layers and directions), each with a fixed cost."""
    two = BIDIRECTIONAL + ("stacked-lstm",)
    return recurrent_steps(cfg) * (2 if cfg.architecture in two else 1)


_LENGTHS: dict[tuple[str, str], np.ndarray] = {}
_CACHE_FILES: dict[tuple[str, str], Path | None] = {}


def data_lengths() -> np.ndarray | None:
    """Words per training review of the data in use (IMDB_DATA, LAB_CACHE), read from the
    data's disk cache once per process; None while there is no cache (nothing is loaded or
    encoded here: the Train page and the CLI have loaded the data before they estimate)."""
    from core import paths

    key = (os.environ.get("IMDB_DATA", ""), str(paths.cache_dir()))
    if key in _LENGTHS:
        return _LENGTHS[key]
    try:
        if key not in _CACHE_FILES:
            from core import data

            src = data.resolve_source()
            _CACHE_FILES[key] = (paths.cache_dir()
                                 / f"data-{src.kind}-{data._cache_key(src)}.npz")
        path = _CACHE_FILES[key]
        if path is None or not path.exists():
            return None
        with np.load(path) as z:
            lengths = np.diff(z["train_offsets"]) - 1
    except Exception:  # noqa: BLE001 - an estimate never fails for want of lengths
        _CACHE_FILES[key] = None
        return None
    _LENGTHS[key] = lengths
    return lengths


def mean_steps(cfg: TrainConfig, lengths: np.ndarray | None = None) -> float:
    """Recurrent steps the first recurrent layer runs per review in fast mode: each
    review's own codes (its words and the start token; with bigram ids in reading order,
    INLINE_IDS_PER_WORD ids per word) up to maxlen (after the CNN's
    pooling), from ``lengths`` (words per review; default: the data in use's first
    train_size reviews) or, unknown, DEFAULT_MEAN_WORDS with an exponential tail."""
    if lengths is None:
        lengths = data_lengths()
        if lengths is not None and cfg.train_size:
            lengths = lengths[:cfg.train_size]
    inline = ARCHITECTURES[cfg.architecture].get("ngrams") == "inline"
    per_word = INLINE_IDS_PER_WORD if inline else 1.0
    if lengths is not None and len(lengths):
        steps = float(np.minimum((np.asarray(lengths) + 1) * per_word, cfg.maxlen).mean())
    else:
        m = (DEFAULT_MEAN_WORDS + 1) * per_word
        steps = m * (1 - math.exp(-cfg.maxlen / m))
    if cfg.architecture.startswith("cnn"):
        steps = steps / cfg.pool_size
    return max(1.0, min(steps * BUCKET_FACTOR, recurrent_steps(cfg)))


def estimate(cfg: TrainConfig, n_train: int | None = None, n_test: int | None = None,
             lengths: np.ndarray | None = None) -> Estimate:
    """Time and memory of a job, at the speed it will train: fast mode where
    core.fast.applies (each review's own steps, the native kernels' rate; ``lengths``:
    words per training review, default the data in use's), else plain Keras."""
    from core import fast

    n = cfg.train_size or n_train or 25_000
    n_val = int(round(n * cfg.validation_split))
    n_fit = n - n_val
    n_tested = cfg.test_size or n_test or 25_000
    fwd, floats = flops_per_sample(cfg)
    batches = -(-n_fit // cfg.batch_size) + -(-n_val // cfg.batch_size) / 3  # train + val
    use_fast = fast.applies(cfg)[0]
    if use_fast:
        steps = mean_steps(cfg, lengths)
        share = steps / recurrent_steps(cfg)  # of the padded model's recurrent work
        fwd_run = fwd * share
        flops_epoch = fwd_run * TRAIN_FACTOR * n_fit
        sec_epoch = ((flops_epoch + fwd_run * n_val) / FAST_FLOPS_PER_S
                     + batches * steps * loop_steps(cfg) / recurrent_steps(cfg)
                     * FAST_STEP_OVERHEAD_S
                     + batches * FAST_BATCH_OVERHEAD_S + FAST_EPOCH_OVERHEAD_S)
        testing = TEST_OVERHEAD_S + fwd_run * n_tested / FAST_PREDICT_FLOPS_PER_S
        trace = FAST_TRACE_S
    else:
        steps = float(recurrent_steps(cfg))
        flops_epoch = fwd * TRAIN_FACTOR * n_fit
        sec_epoch = ((flops_epoch + fwd * n_val) / PLAIN_FLOPS_PER_S
                     + batches * loop_steps(cfg) * STEP_OVERHEAD_S + EPOCH_OVERHEAD_S)
        testing = TEST_OVERHEAD_S + fwd * n_tested / PLAIN_PREDICT_FLOPS_PER_S
        trace = PLAIN_TRACE_S
    params = input_dim(cfg) * cfg.embedding_dim + 8 * cfg.units * (cfg.units + cfg.embedding_dim)
    memory = (cfg.batch_size * cfg.maxlen * floats * FLOAT_BYTES * ACTIVATION_OVERHEAD
              + 2 * n * cfg.maxlen * FLOAT_BYTES  # padded train + test arrays (int32)
              + 4 * params * FLOAT_BYTES  # weights, gradients, two Adam slots
              + 600 * 2**20)  # TensorFlow itself
    training = trace + sec_epoch * cfg.epochs
    return Estimate(flops_epoch, sec_epoch, JOB_OVERHEAD_S + training + testing, memory,
                    use_fast, steps, training, JOB_OVERHEAD_S + trace + testing)


def budgets() -> tuple[float, float]:
    """(max seconds, max bytes) for one job on this server."""
    try:
        minutes = float(os.environ.get("LAB_MAX_TRAIN_MINUTES", DEFAULT_MAX_TRAIN_MINUTES))
    except ValueError:
        minutes = DEFAULT_MAX_TRAIN_MINUTES
    try:
        mem = float(os.environ["LAB_MAX_MEMORY_GB"]) * 2**30
    except (KeyError, ValueError):
        mem = psutil.virtual_memory().total * DEFAULT_MEMORY_SHARE
    return minutes * 60, mem


def check_budget(cfg: TrainConfig, n_train: int | None = None, n_test: int | None = None
                 ) -> Estimate:
    """Raise ConfigError (with the estimate) when a job exceeds this server's budget."""
    est = estimate(cfg, n_train, n_test)
    max_s, max_bytes = budgets()
    errors = []
    if est.seconds > max_s:
        errors.append(f"estimated training time {fmt.seconds_rough(est.seconds)} exceeds this server's "
                      f"budget of {fmt.seconds_rough(max_s)} (fewer epochs, a smaller train_size or "
                      "fewer units)")
    if est.memory_bytes > max_bytes:
        errors.append(f"estimated memory {est.memory_bytes / 2**30:.1f} GiB exceeds this "
                      f"server's budget of {max_bytes / 2**30:.1f} GiB ({MEMORY_ADVICE})")
    if errors:
        raise ConfigError(errors)
    return est
