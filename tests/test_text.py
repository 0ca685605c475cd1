"""The one encoder: Keras imdb conventions, pad_sequences-identical padding, tricky text."""

from __future__ import annotations

import numpy as np
import pytest
from keras.utils import pad_sequences

from core.text import (
    OOV,
    PAD,
    START,
    Encoder,
    check_text,
    pad_flat,
    pad_pre,
    rank_words,
    tokenize,
    tokenize_spans,
)


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


# Every code point but the surrogates, each between two letters: whitespace of every kind,
# filters, characters whose lowercase is longer (İ, ǅ) or differs in case only.
EVERY_CHAR = "".join(f"a{chr(c)}B " for c in range(0x30000) if not 0xD800 <= c < 0xE000)


@pytest.mark.parametrize("text", [
    "Hello, <br />World! it's <script>alert(1)</script>",
    "Tabs\tand\nnewlines \x00 and ümlauts — dashes…",
    "İstanbul ǅemal ß KELVIN \u212a",
    "a<BR/>b<br >c<br\t/>d",
    "", "   ", "!!!",
    EVERY_CHAR,
])
def test_token_spans_line_up_with_tokenize(text):
    spans = tokenize_spans(text)
    assert [text[a:b].lower() for a, b in spans] == tokenize(text)
    assert all(a < b for a, b in spans) and spans == sorted(spans)


def test_every_character_tokenizes_as_a_separator_or_a_letter():
    """Keras's filters and str.split's whitespace separate words; every other character
    (including NUL's neighbours and the unicode spaces) stays inside its word."""
    tokens = tokenize(EVERY_CHAR)
    for c in (ord(" "), ord("\t"), 0x1C, 0xA0, 0x2028, 0x3000, ord("!"), ord("~"), 0):
        assert f"a{chr(c).lower()}b" not in tokens
    for c in (ord("'"), 0x200B, ord("é"), 0x4E2D):
        assert f"a{chr(c)}b" in tokens


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
