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


def _lazy_adam_reference(w0, steps, lr, beta_1=0.9, beta_2=0.999, eps=1e-7):
    """NumPy Adam restricted to the rows each step's slices name (duplicates summed)."""
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, (rows, values) in enumerate(steps, start=1):
        g = np.zeros_like(w0)
        np.add.at(g, rows, values)
        r = np.unique(rows)
        m[r] = beta_1 * m[r] + (1 - beta_1) * g[r]
        v[r] = beta_2 * v[r] + (1 - beta_2) * g[r] ** 2
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        w[r] -= alpha * m[r] / (np.sqrt(v[r]) + eps)
    return w


def test_lazy_adam_moves_only_the_rows_of_a_sparse_gradient_by_adams_formula():
    import keras
    import tensorflow as tf

    from core.models import LazyAdam

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(7, 3)).astype(np.float32)
    steps = [(np.array([1, 3, 1]), rng.normal(size=(3, 3)).astype(np.float32)),  # row 1 twice
             (np.array([3, 4]), rng.normal(size=(2, 3)).astype(np.float32))]
    lazy, dense = keras.Variable(w0), keras.Variable(w0)
    opt, adam = LazyAdam(learning_rate=0.1), keras.optimizers.Adam(learning_rate=0.1)
    for rows, values in steps:
        for o, var in ((opt, lazy), (adam, dense)):
            o.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(rows),
                                                 tf.constant(w0.shape)), var)])
    got = lazy.numpy()
    np.testing.assert_allclose(got, _lazy_adam_reference(w0, steps, 0.1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[[0, 2, 5, 6]], w0[[0, 2, 5, 6]])  # never looked up
    # Keras's Adam moves row 1 again at step 2 (its momentum); the lazy one leaves it.
    assert not np.allclose(dense.numpy()[1], got[1])
    np.testing.assert_allclose(got[1], _lazy_adam_reference(w0, steps[:1], 0.1)[1], rtol=1e-5,
                               atol=1e-6)


def test_lazy_adam_trains_the_fasttext_embedding_sparsely_and_the_rest_as_adam():
    """Through compile_model and fit, as a job trains: the embedding's gradient reaches the
    optimizer as slices (rows of the first batch only are not moved by the second), and the
    dense output layer gets Keras's Adam step."""
    import keras

    cfg = load_config({"architecture": "bigram-fasttext", "top_words": 20, "bigrams": 10,
                       "maxlen": 4, "embedding_dim": 3, "optimizer": "lazy-adam",
                       "learning_rate": 0.05})
    keras.utils.set_random_seed(3)
    model = compile_model(build_model(cfg), cfg)
    twin = compile_model(build_model(cfg), load_config({**cfg.to_dict(), "optimizer": "adam"}))
    twin.set_weights(model.get_weights())
    first, second = np.array([[0, 5, 6, 7]]), np.array([[0, 8, 9, 25]])
    y = np.array([[1.0]])
    emb = model.get_layer("embedding")
    for m in (model, twin):
        m.train_on_batch(first, y)
    after_first = emb.get_weights()[0].copy()
    for m in (model, twin):
        m.train_on_batch(second, y)
    after = emb.get_weights()[0]
    np.testing.assert_array_equal(after[[5, 6, 7]], after_first[[5, 6, 7]])
    assert not np.allclose(after[[8, 9, 25]], after_first[[8, 9, 25]])
    assert not np.allclose(twin.get_layer("embedding").get_weights()[0][[5, 6, 7]],
                           after_first[[5, 6, 7]])  # dense Adam: momentum moves them
    np.testing.assert_allclose(model.get_layer("output").get_weights()[0],
                               twin.get_layer("output").get_weights()[0], rtol=1e-5)


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
