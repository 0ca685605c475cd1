"""The one encoder: Keras imdb conventions, pad_sequences-identical padding, tricky text."""

from __future__ import annotations

import numpy as np
import pytest
from keras.utils import pad_sequences

from core.text import OOV, PAD, START, Encoder, check_text, pad_flat, pad_pre, rank_words, tokenize


@pytest.mark.parametrize("maxlen", [1, 5, 50, 500])
def test_padding_equals_keras_pad_sequences(maxlen):
    rng = np.random.default_rng(maxlen)
    seqs = [list(rng.integers(1, 5000, size=n)) for n in [0, 1, 4, 5, 6, 49, 50, 51, 499, 500, 501, 1200]]
    want = pad_sequences(seqs, maxlen=maxlen)  # Keras defaults: 'pre' padding and truncation
    np.testing.assert_array_equal(pad_pre(seqs, maxlen), want)
    lengths = np.array([len(s) for s in seqs])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.array([c for s in seqs for c in s], dtype=np.int32)
    np.testing.assert_array_equal(pad_flat(flat, offsets, maxlen), want)


@pytest.mark.parametrize("text,tokens", [
    ("Great movie!", ["great", "movie"]),
    ("It was<br /><br />GREAT", ["it", "was", "great"]),
    ("it<br/>was<BR>good", ["it", "was", "good"]),
    ("don't stop", ["don't", "stop"]),  # the apostrophe is not among Keras's filters
    ("well...ok,fine;yes", ["well", "ok", "fine", "yes"]),
    ("tabs\tand\nnewlines", ["tabs", "and", "newlines"]),
    ("(10/10) #1 @home", ["10", "10", "1", "home"]),
    ("Café ÜBER naïve", ["café", "über", "naïve"]),
    ("电影 很好", ["电影", "很好"]),
    ("nul\x00byte", ["nul", "byte"]),
    ("   ", []),
    ("!!!???", []),
    ("<script>alert(1)</script>", ["script", "alert", "1", "script"]),
])
def test_tokenizer_on_tricky_text(text, tokens):
    assert tokenize(text) == tokens


def test_ranks_are_by_frequency_with_alphabetical_ties():
    ranked = rank_words([["b", "a", "c", "c", "c"], ["b", "a", "d"]])
    assert ranked == ["c", "a", "b", "d"]


def test_codes_follow_keras_imdb_conventions():
    words = ["the", "movie", "good", "bad", "plot"]
    enc = Encoder(words=words, top_words=7, maxlen=6)
    # Keras: rank r -> code r + 3; codes >= top_words become OOV (2); 1 starts a review.
    assert enc.code("the") == 4 and enc.code("movie") == 5 and enc.code("good") == 6
    assert enc.code("bad") == OOV and enc.code("unseen") == OOV
    e = enc.encode("The movie was good")
    assert e.codes == [START, 4, 5, OOV, 6]
    assert e.padded.tolist() == [PAD, START, 4, 5, OOV, 6]
    assert e.n_oov == 1 and e.n_truncated == 0
    long = enc.encode("the " * 10)
    assert long.n_truncated == 5 and long.padded.tolist() == [4] * 6  # start token cut ('pre')
    assert enc.word(1) == "<start>" and enc.word(2) == "<oov>" and enc.word(4) == "the"


def test_encoder_round_trips_through_its_file(tmp_path):
    enc = Encoder(words=["a", "b", "c"] * 1 + [f"w{i}" for i in range(100)], top_words=20,
                  maxlen=9, source="demo")
    enc.save(tmp_path / "encoder.json")
    again = Encoder.load(tmp_path / "encoder.json")
    for text in ["a b c w5 w16 w17 zzz", "", "w1 " * 20]:
        np.testing.assert_array_equal(again.encode(text).padded, enc.encode(text).padded)


@pytest.mark.parametrize("text,fragment", [
    ("", "empty"), ("   \n\t", "empty"), ("?!... ---", "no words"), (None, "must be text"),
    ("zzzz qqqq", "None of the 2 words"),
])
def test_check_text_explains_what_cannot_be_scored(text, fragment):
    enc = Encoder(words=["good", "bad"], top_words=100, maxlen=10)
    error, _ = check_text(text, enc)
    assert error and fragment in error


def test_check_text_warns_about_truncation():
    enc = Encoder(words=["good"], top_words=100, maxlen=10)
    error, warnings = check_text("good " * 30, enc)
    assert error is None and any("cut" in w for w in warnings)
