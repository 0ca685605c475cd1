"""N-gram features of the one encoder (core.text) and the n-gram presets: bigrams learned
from training reviews only, the vectorised training rows equal to typed text's, saved with
the run, NBSVM's ratios, no fast mode."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import ARCHITECTURES, BEYOND_PRESETS, PRESETS, load_config, preset
from core.text import START, Encoder, learn_bigrams, pad_pre

WORDS = ["good", "bad", "film", "not", "very", "plot"]  # codes 4..9
REVIEWS = ["not good film", "very good film", "not bad film very good", "bad plot",
           "good film", "zzz good film"]


def ragged(enc: Encoder, texts):
    seqs = [enc.encode(t).codes for t in texts]
    offsets = np.r_[0, np.cumsum([len(s) for s in seqs])]
    return np.concatenate(seqs).astype(np.int32), offsets


@pytest.mark.parametrize("mode", ["append", "set", "inline"])
def test_vectorised_rows_equal_typed_text(mode):
    base = Encoder(WORDS, top_words=10, maxlen=6)
    flat, offsets = ragged(base, REVIEWS)
    bigrams = learn_bigrams(flat, offsets, 10, n=3)
    # "good film" x4 first; then ties by code: (start, not) x2 ... (the start token counts)
    assert bigrams[0] == [base.code("good"), base.code("film")]
    assert len(bigrams) == 3 and all(a < 10 and b < 10 for a, b in bigrams)
    enc = base.with_bigrams(mode, bigrams)
    rows = enc.encode_ragged(flat, offsets)
    want = np.stack([enc.encode(t).padded for t in REVIEWS])
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_array_equal(enc.encode_batch(REVIEWS), want)
    good_film = 10  # the first bigram's id: top_words + 0
    feats = enc.encode("very good film").features
    if mode == "append":
        assert feats[:4] == enc.encode("very good film").codes and feats[-1] == good_film  # in order
    elif mode == "inline":  # each bigram right after its second word
        good, film = base.code("good"), base.code("film")
        assert enc.encode("good film bad").features[:4] == [START, good, film, good_film]
        cut = base.with_settings(10, 3).with_bigrams(mode, bigrams).encode("good film bad")
        assert cut.padded.tolist() == [film, good_film, base.code("bad")]
        assert cut.n_truncated == 2  # the start token and "good": words, not the bigram
    else:
        assert feats == sorted(set(feats)) and good_film in feats and START in feats
    assert enc.bigram_text(good_film) == "good film"


def test_bigrams_are_saved_with_the_encoder_and_pairs_never_straddle_reviews(tmp_path):
    base = Encoder(WORDS, top_words=10, maxlen=8)
    flat, offsets = ragged(base, ["good", "film"])  # "good" | "film": no bigram across
    assert learn_bigrams(flat, offsets, 10, n=10, min_count=1) == [
        [START, base.code("good")], [START, base.code("film")]]  # tie: by codes
    enc = base.with_bigrams("append", [[4, 6]])
    enc.save(tmp_path / "encoder.json")
    back = Encoder.load(tmp_path / "encoder.json")
    assert (back.ngrams, back.bigrams, back.input_dim) == ("append", [[4, 6]], 11)
    np.testing.assert_array_equal(back.encode("good film").padded, enc.encode("good film").padded)
    plain = Encoder.load(tmp_path / "encoder.json").with_settings(10, 8)
    assert plain.ngrams == "append"  # same vocabulary: the bigram ids still hold
    assert pad_pre([[1, 2]], 3).tolist() == [[0, 1, 2]]


def test_nb_ratios_and_the_nbsvm_model():
    from core.models import build_model, nb_ratios, prepare_model

    x = np.array([[0, 4, 5], [0, 4, 6], [0, 0, 6]])
    y = np.array([1, 1, 0])
    r = nb_ratios(x, y, 8)
    p = 1 + np.bincount(x[:2].ravel(), minlength=8)
    q = 1 + np.bincount(x[2:].ravel(), minlength=8)
    want = np.log((p / p.sum()) / (q / q.sum()))
    want[0] = 0
    np.testing.assert_allclose(r, want, rtol=1e-6)
    cfg = load_config({"architecture": "nbsvm-bigram", "top_words": 6, "bigrams": 2,
                       "maxlen": 3})
    model = build_model(cfg)
    prepare_model(model, cfg, x, y)
    np.testing.assert_allclose(model.get_layer("nb_ratios").get_weights()[0][:, 0], r)
    w = np.arange(8, dtype=np.float32)[:, None] / 10
    model.get_layer("weights").set_weights([w])
    logit = (r[x] * w[x, 0]).sum(axis=1)  # w . (r * x) over the review's distinct features
    kernel, bias = model.get_layer("output").get_weights()
    want = 1 / (1 + np.exp(-(logit * kernel[0, 0] + bias[0])))
    np.testing.assert_allclose(np.asarray(model(x)).ravel(), want, rtol=1e-5)
    assert len(model.trainable_weights) == 3  # weights, the output's kernel and bias


def test_fasttext_rows_hold_each_word_and_bigram_of_a_review_once():
    """bigram-fasttext averages over the review's distinct n-grams (mode "set"; every
    occurrence, Keras's rows, validated lower: README), in training as in typed text."""
    from core.training import ngram_arrays

    texts = [*REVIEWS, "good film good film good"]

    class Data:
        def ragged(self, split, top_words, n):
            return ragged(Encoder(WORDS, top_words=top_words), texts)

        def encoder(self, top_words, maxlen):
            return Encoder(WORDS, top_words=top_words, maxlen=maxlen)

    cfg = load_config({"architecture": "bigram-fasttext", "top_words": 10, "bigrams": 3,
                       "maxlen": 12})
    enc, rows = ngram_arrays(Data(), cfg, len(texts))
    assert enc.ngrams == "set" and enc.bigrams[0] == [4, 6]  # "good film" first
    last = rows[-1][rows[-1] > 0].tolist()
    assert last == sorted(set(last)) and last.count(10) == 1 and last.count(4) == 1
    np.testing.assert_array_equal(rows, enc.encode_batch(texts))


@pytest.mark.parametrize("name", ["bigram-fasttext", "nbsvm-bigram"])
def test_ngram_presets_train_plainly(name):
    from core import fast
    from core.models import build_model

    cfg = preset(name)
    assert ARCHITECTURES[cfg.architecture]["ngrams"] and name in BEYOND_PRESETS
    assert name not in PRESETS  # the tutorial's: reproduce and reference accuracies
    used, reason = fast.applies(cfg)
    assert not used and "plain Keras fit" in reason
    small = load_config({**cfg.to_dict(), "top_words": 30, "bigrams": 5, "maxlen": 9,
                         "embedding_dim": 3})
    assert fast.FastPredictor.try_build(build_model(small), small) is None


@pytest.mark.parametrize("mode,arch", [("append", "bigram-fasttext"), ("set", "nbsvm-bigram"),
                                       ("inline", "cnn-lstm-bigrams")])
def test_typed_reviews_are_scored_occluded_and_inspected_with_their_bigrams(mode, arch):
    import keras

    from core.models import build_model
    from core.predict import PredictError, Predictor

    base = Encoder(WORDS, top_words=10, maxlen=12)
    enc = base.with_bigrams(mode, learn_bigrams(*ragged(base, REVIEWS), 10, n=3))
    cfg = load_config({"architecture": arch, "top_words": 10, "bigrams": 3, "maxlen": 12,
                       "embedding_dim": 3, "units": 4, "conv_filters": 3})
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    model.set_weights([np.random.default_rng(1).normal(size=w.shape).astype("float32")
                       for w in model.get_weights()])
    pred = Predictor(model, enc)
    text = "not good film very good"
    p, words = pred.attribution(text)
    score = lambda t: pred.predict([t])[0].probability  # noqa: E731
    assert p == pytest.approx(score(text), abs=1e-6)
    # occluding "good" (the 2nd word) removes it and its bigrams: as if it were unknown
    assert words[1].delta == pytest.approx(p - score("not zzz film very good"), abs=1e-6)
    info = pred.inspect(text)
    assert info["ngrams"] == mode and [b for _, b in info["bigrams"]].count("good film") == 1
    with pytest.raises(PredictError, match="bigrams"):
        pred.integrated_gradients(text)


@pytest.mark.parametrize("arch", ["nbsvm-bigram", "bigram-fasttext", "cnn-lstm-bigrams"])
def test_a_tiny_ngram_run_through_the_worker(lab, arch):
    from conftest import tiny_config, wait_for
    from core import jobs
    from core.data import load_dataset
    from core.predict import Predictor
    from core.store import COMPLETED

    cfg = tiny_config(architecture=arch, maxlen=80, bigrams=300, epochs=2)
    run_id = jobs.submit(lab, cfg, probes=["a wonderful film"])
    run = wait_for(lab, run_id)
    assert run.status == COMPLETED, run.error
    recurrent = arch == "cnn-lstm-bigrams"  # exact in fast mode, as the CNN + LSTM is
    assert run.results["fast"] is recurrent
    assert ("plain Keras fit" in run.results["fast_reason"]) is not recurrent
    enc = Encoder.load(lab.encoder_path(run_id))
    ds = load_dataset()
    flat, offsets = ds.ragged("train", cfg.top_words, cfg.train_size)
    n_fit = 192  # 256 reviews, 25 % held out: the bigrams are counted on the 192 only
    assert enc.ngrams and enc.bigrams == learn_bigrams(
        flat[:offsets[n_fit]], offsets[:n_fit + 1], cfg.top_words, 300)
    assert 0 < len(enc.bigrams) <= 300
    texts = ds.texts("test")[:5]
    pred = Predictor.load(lab, run_id)
    got = [p.probability for p in pred.predict(texts)]
    want = pred.model.predict(enc.encode_ragged(*ds.ragged("test", cfg.top_words, 5)),
                              verbose=0).ravel()
    np.testing.assert_allclose(got, want, atol=1e-6)  # typed text = the training rows


def test_reuse_keys_of_earlier_configs_are_unchanged(monkeypatch):
    import hashlib
    import json

    from core import reuse

    monkeypatch.setattr(reuse, "data_fingerprint", lambda: "data")
    cfg = preset("seed-lstm")
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("name", "bigrams")}
    ident = {"config": old, "data": "data", "engine": reuse.engine_version()}
    assert reuse.reuse_key(cfg) == hashlib.sha256(
        json.dumps(ident, sort_keys=True).encode()).hexdigest()
    assert reuse.reuse_key(preset("nbsvm-bigram")) != reuse.reuse_key(
        preset("nbsvm-bigram", bigrams=1))
