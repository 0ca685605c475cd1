"""Config: JSON round trip, presets, and the validation table (every bad value named)."""

from __future__ import annotations

import pytest

from core.config import (
    ARCHITECTURES,
    FIELD_TYPES,
    PRESETS,
    ConfigError,
    TrainConfig,
    check,
    load_config,
    parse_overrides,
    preset,
    preset_of,
    validate,
)
from core.fields import FIELDS

# (overrides, field that must be named, data sizes (n_train, n_test) or None)
INVALID = [
    ({"units": 0}, "units", None),
    ({"units": -5}, "units", None),
    ({"units": 10**6}, "units", None),
    ({"units": "abc"}, "units", None),
    ({"units": 2.5}, "units", None),
    ({"maxlen": 0}, "maxlen", None),
    ({"maxlen": -1}, "maxlen", None),
    ({"top_words": 0}, "top_words", None),
    ({"top_words": 3}, "top_words", None),
    ({"embedding_dim": 0}, "embedding_dim", None),
    ({"dropout": 1.5}, "dropout", None),
    ({"dropout": 1.0}, "dropout", None),
    ({"dropout": -0.1}, "dropout", None),
    ({"dropout": "nan"}, "dropout", None),
    ({"learning_rate": 0}, "learning_rate", None),
    ({"learning_rate": -1e-3}, "learning_rate", None),
    ({"learning_rate": "fast"}, "learning_rate", None),
    ({"learning_rate": "inf"}, "learning_rate", None),
    ({"clipnorm": -1}, "clipnorm", None),
    ({"batch_size": 0}, "batch_size", None),
    ({"batch_size": 512, "train_size": 100}, "batch_size", (25000, 25000)),
    ({"batch_size": 64, "train_size": 80, "validation_split": 0.5 - 1e-9}, "batch_size", (25000, 25000)),
    ({"epochs": 0}, "epochs", None),
    ({"epochs": 10_000}, "epochs", None),
    ({"validation_split": 0.5}, "validation_split", None),
    ({"validation_split": -0.1}, "validation_split", None),
    ({"train_size": -1}, "train_size", None),
    ({"train_size": 30_000}, "train_size", (25000, 25000)),
    ({"test_size": 30_000}, "test_size", (25000, 25000)),
    ({"architecture": "transformer"}, "architecture", None),
    ({"architecture": ""}, "architecture", None),
    ({"optimizer": "lbfgs"}, "optimizer", None),
    ({"seed": -1}, "seed", None),
    ({"seed": "x"}, "seed", None),
    ({"fast": "maybe"}, "fast", None),
    ({"name": "x" * 200}, "name", None),
    ({"name": "bad\x00name"}, "name", None),
    ({"architecture": "cnn-lstm", "kernel_size": 50, "maxlen": 20}, "kernel_size", None),
    ({"architecture": "cnn-lstm", "pool_size": 0}, "pool_size", None),
    ({"bogus_key": 1}, "bogus_key", None),
]


@pytest.mark.parametrize("overrides,field,sizes", INVALID,
                         ids=[f"{i}-{c[1]}" for i, c in enumerate(INVALID)])
def test_every_invalid_value_is_rejected_naming_the_field(overrides, field, sizes):
    cfg = load_config(overrides)
    errors = validate(cfg, *(sizes or (None, None)))
    assert errors, f"{overrides} was accepted"
    assert any(e.startswith(f"{field}:") for e in errors), errors
    with pytest.raises(ConfigError) as info:
        check(cfg, *(sizes or (None, None)))
    assert info.value.errors == errors


def test_messages_name_the_value_and_the_allowed_range():
    errors = validate(load_config({"units": 0, "dropout": 1.5}))
    assert "units: 0 is out of range (allowed 1 to 1024)" in errors
    assert any("dropout: 1.5" in e and "[0, 1)" in e for e in errors)


def test_defaults_and_presets_are_valid():
    assert validate(TrainConfig(), 25000, 25000) == []
    for name in PRESETS:
        assert validate(preset(name), 25000, 25000) == []
        assert preset_of(preset(name, seed=3)) == name


def test_presets_hold_the_tutorials_settings():
    for name in PRESETS:
        cfg = preset(name)
        assert (cfg.top_words, cfg.maxlen, cfg.embedding_dim, cfg.units, cfg.batch_size,
                cfg.optimizer, cfg.learning_rate, cfg.train_size) == \
            (5000, 500, 32, 100, 64, "adam", 0.001, 0)
    assert preset("seed-lstm").epochs == 2 and preset("seed-cnn-lstm").epochs == 3
    assert preset("seed-lstm-dropout").dropout == 0.2


def test_json_round_trip_keeps_every_field():
    cfg = load_config({"architecture": "gru", "units": 17, "dropout": 0.3, "name": "ü run",
                       "clipnorm": 1.5, "fast": False})
    again = TrainConfig.from_json(cfg.to_json())
    assert again == cfg


def test_strings_from_forms_and_cli_are_coerced():
    cfg = load_config(parse_overrides(["units=50", "dropout=0.3", "fast=false", "epochs=3.0"]))
    assert (cfg.units, cfg.dropout, cfg.fast, cfg.epochs) == (50, 0.3, False, 3)
    with pytest.raises(ConfigError):
        parse_overrides(["units"])


def test_each_architecture_declares_what_it_uses():
    for name, arch in ARCHITECTURES.items():
        cfg = load_config({"architecture": name})
        assert ("bigrams" in cfg.uses()) == bool(arch.get("ngrams"))  # n-gram readers only
        assert ("units" in cfg.uses()) != (arch.get("ngrams") == "set")  # bags: no recurrence
        assert "batch_size" in cfg.uses()
        assert arch["help"] and arch["label"]
    assert "dropout" not in load_config({"architecture": "lstm"}).uses()
    assert "conv_filters" in load_config({"architecture": "cnn-lstm"}).uses()


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="preset: unknown value 'nope'"):
        preset("nope")


def test_estimate_counts_the_cost_per_step_epoch_and_job():
    """Small models with small batches are dominated by Keras's fixed cost per recurrent
    step, not by FLOPs: the Train page must not promise '< 1 s' for a job that takes ~40 s.
    Calibration of 2026-11-30 05:56 UTC (bench/estimates.py --calibrate, plain mode, 2,000
    real reviews, 1 epoch, maxlen 40, load average ~3 on 2 cores): batch 2 trained its
    epoch in 4.5 s after 2.3 s of tracing, batch 32 in 1.2 s after 2.5 s."""
    from core.guard import JOB_OVERHEAD_S, estimate

    tiny = {"architecture": "lstm", "top_words": 100, "maxlen": 40, "embedding_dim": 8,
            "units": 4, "epochs": 3, "test_size": 400, "fast": False}
    small_batches = estimate(load_config({**tiny, "batch_size": 2}), 2000, 2000)
    large_batches = estimate(load_config({**tiny, "batch_size": 32}), 2000, 2000)
    assert 10 < 3 * small_batches.seconds_per_epoch < 25
    assert 20 < small_batches.seconds < 50 and small_batches.seconds > JOB_OVERHEAD_S
    assert 3 < small_batches.seconds_per_epoch / large_batches.seconds_per_epoch < 8
    assert 10 < large_batches.seconds < 25
    # The seed LSTM in plain Keras on the full data: 90-140 s per epoch measured
    # (BENCHMARKS.md section 6), 189 s under contention.
    seed = estimate(preset("seed-lstm", fast=False), 25_000, 25_000)
    assert not seed.fast and seed.speed == "plain Keras"
    assert 80 < seed.seconds_per_epoch < 200
    assert estimate(preset("seed-cnn-lstm", fast=False), 25_000, 25_000).seconds_per_epoch \
        < seed.seconds_per_epoch


def test_estimate_is_at_the_speed_the_run_trains():
    """Fast mode, where it applies, is estimated over each review's own steps at the native
    kernels' rate (full data: 22-25 s per seed-LSTM epoch measured, 73 s under heavy
    contention; BENCHMARKS.md section 6); the LSTM + Dropout trains the plain way."""
    import numpy as np

    from core.guard import DEFAULT_MEAN_WORDS, estimate, mean_steps

    plain = estimate(preset("seed-lstm", fast=False), 25_000, 25_000)
    fast = estimate(preset("seed-lstm"), 25_000, 25_000, lengths=np.full(25_000, 233))
    assert fast.fast and "fast mode" in fast.describe()
    assert 15 < fast.seconds_per_epoch < 100
    assert fast.seconds_per_epoch < plain.seconds_per_epoch / 2.5
    assert fast.seconds < plain.seconds
    assert not estimate(preset("seed-lstm-dropout"), 25_000, 25_000).fast
    # Steps per review: the data's own lengths (+1 start token) up to maxlen, after the CNN's
    # pooling; unknown lengths: DEFAULT_MEAN_WORDS with an exponential tail.
    short = estimate(preset("seed-lstm"), 2000, 2000, lengths=np.full(2000, 49))
    assert 50 <= short.steps_per_review <= 55 and short.seconds < fast.seconds
    long = estimate(preset("seed-lstm"), 2000, 2000, lengths=np.full(2000, 4000))
    assert long.steps_per_review == 500
    cnn = estimate(preset("seed-cnn-lstm"), 2000, 2000, lengths=np.full(2000, 199))
    assert 100 <= cnn.steps_per_review <= 106  # 200 steps, pooled by 2
    default = mean_steps(preset("seed-lstm"), np.array([]))
    assert 0.8 * DEFAULT_MEAN_WORDS < default < 1.05 * DEFAULT_MEAN_WORDS


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.low is not None])
def test_the_field_table_bounds_every_value(name):
    """core/fields.py is the one place a field's range is written: validation refuses just
    outside it, and the form's help states it."""
    from app_pages.views import FIELD_HELP

    f = FIELDS[name]
    above = f.high + 1 if FIELD_TYPES[name] is int else f.high * 1.5
    below = f.low - 1 if FIELD_TYPES[name] is int else f.low - 0.5
    for value in (above, below):
        assert any(e.startswith(f"{name}:") for e in validate(load_config({name: value})))
    assert "Allowed:" in FIELD_HELP[name]


def test_beyond_presets_are_valid_and_lstm_best_trains_in_fast_mode():
    from core import fast
    from core.config import BEYOND_PRESETS

    for name in BEYOND_PRESETS:
        assert validate(preset(name), 25000, 25000) == [], name
        assert preset_of(preset(name)) is None  # not one of the tutorial's
    used, reason = fast.applies(preset("lstm-best"))
    assert used, reason


def test_the_max_pooled_lstm_reads_embedding_and_units_and_is_exact_in_fast_mode():
    from core import fast

    cfg = load_config({"architecture": "lstm-maxpool", "units": 16, "embedding_dim": 8})
    assert validate(cfg, 100, 100) == []
    assert {"embedding_dim", "units"} <= set(cfg.uses()) and "dropout" not in cfg.uses()
    assert fast.applies(cfg)[0]
    assert any("units: 0" in e for e in validate(load_config({"architecture": "lstm-maxpool",
                                                               "units": 0})))
    # With dropout after the pooling: it reads the rate and stays exact at any rate.
    cfg = load_config({"architecture": "lstm-maxpool-dropout", "dropout": 0.5})
    assert validate(cfg, 100, 100) == [] and "dropout" in cfg.uses()
    assert fast.applies(cfg)[0]


def test_the_pooled_bidirectional_cnn_lstm_reads_the_cnn_fields_and_trains_plain():
    from core import fast, guard

    cfg = load_config({"architecture": "cnn-bilstm-pool", "units": 16, "dropout": 0.3,
                       "pool_size": 4})
    assert validate(cfg, 100, 100) == []
    assert {"embedding_dim", "units", "dropout", "conv_filters", "kernel_size",
            "pool_size"} <= set(cfg.uses())
    used, reason = fast.applies(cfg)  # the backward LSTM reads the padding last
    assert not used and "plain Keras fit" in reason
    # Cost: both directions over the pooled steps.
    assert guard.loop_steps(cfg) == 2 * (cfg.maxlen // 4)
    assert any(e.startswith("kernel_size:") for e in validate(load_config(
        {"architecture": "cnn-bilstm-pool", "maxlen": 2, "kernel_size": 3})))
