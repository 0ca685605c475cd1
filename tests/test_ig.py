"""Looking inside a model (core.explain): integrated gradients against a finite-difference
path integral, the LSTM's recomputed gates and running sentiment against Keras, and both
through the inference process."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import load_config
from core.explain import IntegratedGradients, columns, inside_lstm
from core.predict import PredictError, Predictor
from core.text import Encoder

WORDS = [f"w{i}" for i in range(60)]
TEXT = "w1 w5 nope w9 w2 w40 w3"


@pytest.fixture
def float64():
    import keras

    old, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the global policy is cached at first use
    yield
    keras.config.set_floatx(old)
    keras.config.set_dtype_policy(policy)


def tiny(arch: str, seed: int = 0, **sizes):
    import keras

    from core.models import build_model

    cfg = load_config({"architecture": arch, "top_words": 50, "maxlen": 12,
                       "embedding_dim": 4, "units": 3, "conv_filters": 2, **sizes})
    keras.utils.set_random_seed(seed)
    model = build_model(cfg)
    # Larger weights than the initializers give, so the function is far from linear.
    model.set_weights([w * 3.0 for w in model.get_weights()])
    return cfg, model


def after_embedding(model, z):
    names = [layer.name for layer in model.layers]
    for layer in model.layers[names.index("embedding") + 1:]:
        z = layer(z, training=False)
    return np.asarray(z).ravel()


@pytest.mark.parametrize("arch", ["lstm", "gru", "stacked-lstm"])  # smooth: no ReLU or max-pool kinks
def test_integrated_gradients_equal_a_finite_difference_path_integral(float64, arch):
    cfg, model = tiny(arch)
    assert model.get_layer("embedding").embeddings.dtype == "float64"
    ig = IntegratedGradients(model, steps=32)
    row = Encoder(WORDS, cfg.top_words, cfg.maxlen).encode(TEXT).padded
    res = ig(row)
    table = np.asarray(model.get_layer("embedding").embeddings)
    e, base = table[row], np.broadcast_to(table[0], (cfg.maxlen, cfg.embedding_dim))
    alphas = np.linspace(0, 1, 33)
    weights = np.r_[0.5, np.ones(31), 0.5] / 32
    h = 1e-5
    want = np.zeros(cfg.maxlen)
    for col in range(cfg.maxlen):
        d = np.zeros_like(e)
        d[col] = e[col] - base[col]
        zs = base[None] + alphas[:, None, None] * (e - base)[None]
        up, down = after_embedding(model, zs + h * d), after_embedding(model, zs - h * d)
        want[col] = weights @ ((up - down) / (2 * h))
    np.testing.assert_allclose(res.attributions, want, atol=1e-8, rtol=1e-5)
    pad = row == 0
    assert pad.any() and np.all(res.attributions[pad] == 0)
    p = float(np.asarray(model(row[None], training=False)).ravel()[0])
    assert res.p == pytest.approx(p, abs=1e-12)
    assert res.gap < 0.05  # completeness: sum = f(x) - f(baseline), within the quadrature


def test_integrated_gradients_per_word_through_the_predictor():
    cfg, model = tiny("lstm", seed=3)
    enc = Encoder(WORDS, cfg.top_words, cfg.maxlen)
    out = Predictor(model, enc).integrated_gradients(TEXT + " w7 w8 w9 w10 w11 w12")
    assert [w.word for w in out["words"]] == (TEXT + " w7 w8 w9 w10 w11 w12").split()
    assert [w.status for w in out["words"][:3]] == ["truncated", "known", "oov"]  # start, w1 cut
    assert out["words"][0].delta == 0 and out["words"][2].delta != 0  # the OOV marker counts
    total = sum(w.delta for w in out["words"]) + out["start"]
    assert total == pytest.approx(out["total"], abs=1e-6) and out["start"] == 0  # start: cut
    assert abs(out["total"] - (out["p"] - out["p_baseline"])) <= 0.05 * abs(
        out["p"] - out["p_baseline"])
    with pytest.raises(PredictError, match="empty"):
        Predictor(model, enc).integrated_gradients("  ")


@pytest.mark.parametrize("arch", ["lstm", "lstm-dropout", "stacked-lstm", "lstm-maxpool",
                                  "lstm-maxpool-dropout"])
def test_inside_the_lstm_recomputes_keras(arch):
    import keras

    cfg, model = tiny(arch, seed=1)
    row = Encoder(WORDS, cfg.top_words, cfg.maxlen).encode(TEXT).padded
    seq = inside_lstm(model, arch, row)
    # The gates recompute the states: c_t = f c_{t-1} + i g, h_t = o tanh(c_t).
    c_prev = np.vstack([np.zeros((1, cfg.units)), seq["c"][:-1]])
    np.testing.assert_allclose(seq["c"], seq["f"] * c_prev + seq["i"] * seq["g"], atol=1e-12)
    np.testing.assert_allclose(seq["h"], seq["o"] * np.tanh(seq["c"]), atol=1e-12)
    # The hidden states are Keras's own (its LSTM, returning sequences, same weights).
    last = model.get_layer(seq["layer"])
    probe = keras.Model(model.input, last.input)
    clone = keras.layers.LSTM(cfg.units, return_sequences=True)
    h_keras = clone(probe(row[None]))
    clone.set_weights(last.get_weights())
    h_keras = np.asarray(clone(probe(row[None])))[0]
    np.testing.assert_allclose(seq["h"], h_keras, atol=2e-6)
    # The running sentiment ends at the model's prediction.
    p = float(np.asarray(model(row[None], training=False)).ravel()[0])
    assert seq["running"][-1] == pytest.approx(p, abs=1e-6)


def test_inside_refuses_other_architectures_and_keeps_the_reviews_own_steps():
    cfg, model = tiny("gru")
    with pytest.raises(ValueError, match="one-directional LSTM"):
        inside_lstm(model, "gru", np.zeros(cfg.maxlen, dtype=np.int32))
    cfg, model = tiny("lstm")
    out = Predictor(model, Encoder(WORDS, cfg.top_words, cfg.maxlen)).inside(TEXT)
    assert out["tokens"] == ["<start>", *TEXT.split()]
    assert out["h"].shape == (len(out["tokens"]), cfg.units) and len(out["running"]) == 8
    assert out["n_pad"] == cfg.maxlen - 8
    assert columns(20, 8, 12) == [None] * 8 + list(range(12))


def test_the_inference_process_serves_both(lab_with_run):
    from core import inference

    store, run_id = lab_with_run
    client = inference.InferenceClient(store.home)
    try:
        text = "a wonderful moving film with a dull ending"
        p = client.predict(run_id, [text])[0]["probability"]
        ig = client.integrated_gradients(run_id, text)
        assert ig["p"] == pytest.approx(p, abs=1e-5) and len(ig["words"]) == len(text.split())
        assert ig["gap"] < 0.05
        inside = client.inside(run_id, text)
        assert inside["running"][-1] == pytest.approx(p, abs=1e-5)
        assert inside["tokens"][1:] == text.split()
    finally:
        inference.stop(store.home)
