"""Model registry: the seed's exact parameter counts, every architecture builds and runs."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import ARCHITECTURES, load_config, preset
from core.models import build_model, compile_model, summary_text


@pytest.mark.parametrize("name,params", [("seed-lstm", 213_301), ("seed-lstm-dropout", 213_301),
                                         ("seed-cnn-lstm", 216_405)])
def test_seed_models_have_the_tutorials_parameter_counts(name, params):
    model = build_model(preset(name))
    assert model.count_params() == params
    assert f"Total params: {params:,}" in summary_text(model)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_builds_compiles_and_predicts(arch):
    cfg = load_config({"architecture": arch, "top_words": 50, "maxlen": 12, "units": 3,
                       "embedding_dim": 4, "conv_filters": 2})
    model = compile_model(build_model(cfg), cfg)
    x = np.random.default_rng(0).integers(0, 50, size=(5, 12))
    p = np.asarray(model(x, training=False))
    assert p.shape == (5, 1) and np.all((p > 0) & (p < 1))
    assert model.optimizer.learning_rate.numpy() == pytest.approx(cfg.learning_rate)


def test_clipnorm_reaches_the_optimizer():
    cfg = load_config({"clipnorm": 1.0, "optimizer": "rmsprop", "maxlen": 8, "units": 2})
    model = compile_model(build_model(cfg), cfg)
    assert model.optimizer.clipnorm == 1.0


# Hyperparameter grid for the plain-Python layer tables: odd sizes, pools that do not divide
# maxlen, a kernel wider than the pool, one unit, a big vocabulary.
GRID = [
    {"top_words": 5000, "maxlen": 500, "embedding_dim": 32, "units": 100},
    {"top_words": 123, "maxlen": 7, "embedding_dim": 3, "units": 1, "conv_filters": 5,
     "kernel_size": 5, "pool_size": 3, "bigrams": 7},
    {"top_words": 20000, "maxlen": 33, "embedding_dim": 17, "units": 9, "conv_filters": 2,
     "kernel_size": 2, "pool_size": 4, "bigrams": 100_000},
    {"top_words": 60, "maxlen": 2, "embedding_dim": 1, "units": 7, "conv_filters": 1,
     "kernel_size": 1, "pool_size": 2},
]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("sizes", GRID, ids=lambda s: f"m{s['maxlen']}u{s['units']}")
def test_plain_python_layer_table_equals_keras(arch, sizes):
    """The web server counts parameters and prints the summary without TensorFlow: both
    must be exactly what Keras builds."""
    from core import shapes

    cfg = load_config({"architecture": arch, **sizes})
    model = build_model(cfg)
    assert shapes.count_params(cfg) == model.count_params()
    assert [(r.name, r.params, r.shape) for r in shapes.layers_of(cfg)] == [
        (layer.name, layer.count_params(), tuple(layer.output.shape)) for layer in model.layers]
    assert shapes.summary(cfg) == summary_text(model)


def test_the_pooled_bidirectional_cnn_lstm_pools_both_directions_of_every_step(tmp_path):
    import keras

    cfg = load_config({"architecture": "cnn-bilstm-pool", "top_words": 50, "maxlen": 12,
                       "units": 3, "embedding_dim": 4, "conv_filters": 2, "pool_size": 2})
    model = build_model(cfg)
    assert tuple(model.get_layer("bilstm").output.shape) == (None, 6, 6)
    assert tuple(model.get_layer("mean_max").output.shape) == (None, 12)
    from core.fast.plan import inference_plan

    assert inference_plan(model) is None  # no shared padding prefix: Keras predicts it
    # Keras's own layers only: it loads in safe mode as the run store does, same outputs.
    x = np.random.default_rng(1).integers(0, 50, size=(3, 12))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
