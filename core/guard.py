"""Cost estimates for a configuration, and the budget that refuses what will not fit.

The estimates count the model's floating-point work, Keras's fixed cost per recurrent step
and its largest tensors; the constants below were calibrated on the 2-core build machine
(FLOP rate: seed LSTM ~63 s per epoch of FLOPs, plain Keras; fixed costs: tiny models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from core.config import ConfigError, TrainConfig

# Sustained fp32 throughput of plain Keras training on the build machine (FLOP/s).
PLAIN_FLOPS_PER_S = 6.3e10
# Forward + backward cost relative to forward alone.
TRAIN_FACTOR = 3.0
# Keras's recurrent loop costs this per time step per training batch beyond its FLOPs
# (graph executor dispatch, forward + backward; a validation batch costs a third): it
# dominates small models. Measured with tiny models (40 steps, batch 2 and 32, 4 units).
STEP_OVERHEAD_S = 0.00025
# Per epoch: validation and probe scoring setup, callbacks, the epoch's store writes.
EPOCH_OVERHEAD_S = 1.3
# Per job: the worker's start (TensorFlow import), data from the cache, graph tracing,
# the test evaluation's setup and saving the model.
JOB_OVERHEAD_S = 10.0
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
    flops_per_epoch: float  # training FLOPs per epoch on full-length (padded) sequences
    seconds_per_epoch: float  # plain mode: training + validation + per-batch overhead
    seconds: float  # the whole job, plain mode: all epochs, testing and JOB_OVERHEAD_S
    memory_bytes: float  # peak, rough

    def describe(self) -> str:
        return (f"about {_fmt_time(self.seconds)} ({_fmt_time(self.seconds_per_epoch)} per epoch "
                f"at plain speed, plus ~{JOB_OVERHEAD_S:.0f} s to start and test) and "
                f"{self.memory_bytes / 2**30:.1f} GiB of memory")


def _fmt_time(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


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
    if arch == "bilstm":
        per_step *= 2
        floats *= 2
    elif arch == "stacked-lstm":
        per_step += _recurrent_flops(cfg, cfg.units, gates)
        floats += (gates + 2) * cfg.units
    flops += per_step * recurrent_steps(cfg) + 2.0 * cfg.units
    return flops, floats


def loop_steps(cfg: TrainConfig) -> int:
    """Recurrent time steps per batch (all layers and directions), each with a fixed cost."""
    return recurrent_steps(cfg) * (2 if cfg.architecture in ("bilstm", "stacked-lstm") else 1)


def estimate(cfg: TrainConfig, n_train: int | None = None, n_test: int | None = None
             ) -> Estimate:
    """Time and memory of a job in plain mode (fast mode, where it applies, is quicker)."""
    n = cfg.train_size or n_train or 25_000
    n_val = int(round(n * cfg.validation_split))
    n_fit = n - n_val
    fwd, floats = flops_per_sample(cfg)
    flops_epoch = fwd * TRAIN_FACTOR * n_fit
    batches = -(-n_fit // cfg.batch_size) + -(-n_val // cfg.batch_size) / 3  # train + val
    sec_epoch = ((flops_epoch + fwd * n_val) / PLAIN_FLOPS_PER_S
                 + batches * loop_steps(cfg) * STEP_OVERHEAD_S + EPOCH_OVERHEAD_S)
    testing = fwd * (cfg.test_size or n_test or 25_000) / PLAIN_FLOPS_PER_S
    params = cfg.top_words * cfg.embedding_dim + 8 * cfg.units * (cfg.units + cfg.embedding_dim)
    memory = (cfg.batch_size * cfg.maxlen * floats * FLOAT_BYTES * ACTIVATION_OVERHEAD
              + 2 * n * cfg.maxlen * FLOAT_BYTES  # padded train + test arrays (int32)
              + 4 * params * FLOAT_BYTES  # weights, gradients, two Adam slots
              + 600 * 2**20)  # TensorFlow itself
    return Estimate(flops_epoch, sec_epoch, sec_epoch * cfg.epochs + testing + JOB_OVERHEAD_S,
                    memory)


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
        errors.append(f"estimated training time {_fmt_time(est.seconds)} exceeds this server's "
                      f"budget of {_fmt_time(max_s)} (fewer epochs, a smaller train_size or "
                      "fewer units)")
    if est.memory_bytes > max_bytes:
        errors.append(f"estimated memory {est.memory_bytes / 2**30:.1f} GiB exceeds this "
                      f"server's budget of {max_bytes / 2**30:.1f} GiB ({MEMORY_ADVICE})")
    if errors:
        raise ConfigError(errors)
    return est
