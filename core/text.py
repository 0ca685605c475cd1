"""The one tokenizer/encoder: raw review text -> Keras-imdb-style index sequences.

Conventions are those of ``keras.datasets.imdb``: 0 = padding, 1 = start of review,
2 = out-of-vocabulary, a word of frequency rank r (1 = most frequent) is ``r + 3``; only
codes below ``top_words`` are kept, others become 2. Padding and truncation are 'pre',
as ``keras.utils.pad_sequences`` does by default. Training and prediction both call this
module, and a run saves its :class:`Encoder` so typed text is encoded as in training.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAD = 0  # padding index
START = 1  # start-of-review marker
OOV = 2  # out-of-vocabulary word
INDEX_FROM = 3  # word of rank r gets code r + INDEX_FROM

# keras.preprocessing.text.text_to_word_sequence's default filters.
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_TRANSLATE = str.maketrans({ch: " " for ch in KERAS_FILTERS})
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)

# Typed text longer than this is cut before tokenizing (a review is a few KB; this
# keeps a pasted novel from stalling the page).
MAX_TEXT_CHARS = 200_000


_WORD = re.compile(r"\S+")  # a token: a run of non-separators (str.split's whitespace)


def _separated(text: str) -> str:
    """``text`` with NULs, ``<br />`` tags and Keras's filter characters replaced by spaces,
    character for character, so positions in it are positions in ``text``."""
    text = _BR.sub(lambda m: " " * len(m.group()), text.replace("\x00", " "))
    return text.translate(_TRANSLATE)


def tokenize(text: str) -> list[str]:
    """Lowercase, drop ``<br />``, replace Keras's punctuation filters by spaces, split."""
    return _separated(text).lower().split()


def tokenize_spans(text: str) -> list[tuple[int, int]]:
    """Where each token of ``tokenize(text)`` lies in ``text``: ``text[a:b].lower()`` is the
    token. Both split the same separated text, so they agree token for token (lowercasing
    never makes or removes a separator), for highlighting words in place."""
    return [m.span() for m in _WORD.finditer(_separated(text))]


def readable(text: str) -> str:
    """A review's text for display: its ``<br />`` tags as line breaks."""
    return _BR.sub("\n", text)


def rank_words(token_lists: Iterable[Sequence[str]]) -> list[str]:
    """Words by descending frequency; ties broken alphabetically so ranks are stable."""
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def pad_pre(seqs: Sequence[Sequence[int]], maxlen: int, dtype=np.int32) -> np.ndarray:
    """Same result as ``keras.utils.pad_sequences(seqs, maxlen)`` with its defaults
    (padding='pre', truncating='pre', value=0), without importing Keras."""
    out = np.zeros((len(seqs), maxlen), dtype=dtype)
    for i, s in enumerate(seqs):
        if len(s) == 0:
            continue
        tail = s[-maxlen:]
        out[i, maxlen - len(tail):] = tail
    return out


def pad_flat(flat: np.ndarray, offsets: np.ndarray, maxlen: int) -> np.ndarray:
    """pad_pre for ragged data stored as one flat array + offsets (vectorised)."""
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    kept = np.minimum(lengths, maxlen)
    out = np.zeros((n, maxlen), dtype=np.int32)
    # Source index of every kept token, and its destination column.
    rows = np.repeat(np.arange(n), kept)
    starts = offsets[1:] - kept
    within = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
    cols = maxlen - np.repeat(kept, kept) + within
    out[rows, cols] = flat[np.repeat(starts, kept) + within]
    return out


@dataclass
class Encoded:
    """One review as the model sees it, for inspectors and messages."""

    tokens: list[str]  # the words after tokenizing
    codes: list[int]  # start token + one code per word (before padding)
    padded: np.ndarray  # shape (maxlen,)
    n_oov: int  # words outside the vocabulary
    n_truncated: int  # codes cut off at the front by 'pre' truncation
    n_known: int  # words inside the vocabulary
    features: list[int] = field(default_factory=list)  # codes + n-gram ids, before padding


# N-gram modes of an encoder: "" (words only); "append": the ids of the review's known
# bigrams follow its word codes, in order (Keras's imdb_fasttext.py); "set": the review's
# distinct word codes and bigram ids, sorted (binary features, NBSVM); "inline": each known
# bigram's id right after its second word (reading order, for a recurrent model). Bigram k
# (by training frequency) has id top_words + k.
NGRAM_MODES = ("", "append", "set", "inline")


def bigram_keys(flat: np.ndarray, offsets: np.ndarray, top_words: int) -> np.ndarray:
    """``a * top_words + b`` for each pair of consecutive codes (a, b) within a review, in
    order; -1 where a pair would straddle two reviews (vectorised over a ragged split)."""
    flat = np.asarray(flat, dtype=np.int64)
    keys = flat[:-1] * top_words + flat[1:]
    ends = np.asarray(offsets[1:-1], dtype=np.int64) - 1  # last code of each review but one
    keys[ends[(ends >= 0) & (ends < len(keys))]] = -1
    return keys


def learn_bigrams(flat: np.ndarray, offsets: np.ndarray, top_words: int, n: int,
                  min_count: int = 2) -> list[list[int]]:
    """The ``n`` most frequent bigrams of codes (below ``top_words``) seen at least
    ``min_count`` times in the given (training) reviews, as [a, b] pairs; ties by codes."""
    if n <= 0 or len(flat) < 2:
        return []
    keys = bigram_keys(np.where(np.asarray(flat) >= top_words, OOV, flat), offsets, top_words)
    uniq, counts = np.unique(keys[keys >= 0], return_counts=True)
    keep = counts >= min_count
    uniq, counts = uniq[keep], counts[keep]
    order = np.lexsort((uniq, -counts))[:n]
    return [[int(k // top_words), int(k % top_words)] for k in uniq[order]]


@dataclass
class Encoder:
    """Word ranks plus the encoding settings; saved with every run."""

    words: list[str]  # words by rank; words[0] has rank 1 (code 4)
    top_words: int = 5000
    maxlen: int = 500
    source: str = ""
    ngrams: str = ""  # one of NGRAM_MODES
    bigrams: list[list[int]] = field(default_factory=list)  # [a, b] code pairs, by frequency
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Only words whose code is below top_words are kept, as load_data(num_words=...) does.
        n_keep = max(0, min(len(self.words), self.top_words - INDEX_FROM - 1))
        self._index = {w: i + 1 + INDEX_FROM for i, w in enumerate(self.words[:n_keep])}
        keys = np.array([a * self.top_words + b for a, b in self.bigrams], dtype=np.int64)
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[self._order]

    @property
    def vocab_size(self) -> int:
        return len(self._index)

    @property
    def input_dim(self) -> int:
        """Distinct input ids: the word codes below top_words, then one per bigram."""
        return self.top_words + len(self.bigrams)

    def _bigram_ids(self, keys: np.ndarray) -> np.ndarray:
        """The id of each bigram key, -1 for bigrams not kept (and for keys of -1)."""
        if not len(self._sorted_keys):
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.clip(np.searchsorted(self._sorted_keys, keys), 0, len(self._sorted_keys) - 1)
        found = (self._sorted_keys[at] == keys) & (keys >= 0)
        return np.where(found, self.top_words + self._order[at], -1)

    def features(self, codes: Sequence[int]) -> list[int]:
        """What the model reads before padding: the codes, plus their bigrams' ids in the
        encoder's n-gram mode."""
        if not self.ngrams:
            return list(codes)
        arr = np.asarray(codes, dtype=np.int64)
        ids_all = self._bigram_ids(bigram_keys(arr, np.array([0, len(arr)]), self.top_words))
        ids = ids_all[ids_all >= 0]
        if self.ngrams == "append":
            return [*map(int, arr), *map(int, ids)]
        if self.ngrams == "inline":
            keys = np.r_[2 * np.arange(len(arr)), 2 * np.flatnonzero(ids_all >= 0) + 3]
            return [int(v) for v in np.r_[arr, ids][np.argsort(keys, kind="stable")]]
        return [int(c) for c in np.unique(np.concatenate([arr, ids]))]

    def encode_ragged(self, flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Padded feature rows of a ragged split of codes (already cut to top_words), as
        :meth:`features` + 'pre' padding would give row by row (vectorised)."""
        flat = np.asarray(flat, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        if not self.ngrams:
            return pad_flat(flat, offsets, self.maxlen)
        n = len(offsets) - 1
        review = np.repeat(np.arange(n), np.diff(offsets))
        ids = self._bigram_ids(bigram_keys(flat, offsets, self.top_words))
        keep = ids >= 0
        values = np.concatenate([flat, ids[keep]])
        owner = np.concatenate([review, review[:-1][keep]])
        if self.ngrams == "append":  # words first, then bigrams, each in review order
            part = np.r_[np.zeros(len(flat), np.int8), np.ones(int(keep.sum()), np.int8)]
            order = np.lexsort((np.arange(len(values)), part, owner))
            values, owner = values[order], owner[order]
        elif self.ngrams == "inline":  # pair (i, i + 1)'s id right after code i + 1
            pos = np.r_[2 * np.arange(len(flat)), 2 * np.flatnonzero(keep) + 3]
            order = np.argsort(pos, kind="stable")
            values, owner = values[order], owner[order]
        else:  # distinct, sorted
            key = np.unique(owner * self.input_dim + values)
            owner, values = key // self.input_dim, key % self.input_dim
        new_offsets = np.r_[0, np.cumsum(np.bincount(owner, minlength=n))]
        return pad_flat(values.astype(np.int32), new_offsets, self.maxlen)

    def code(self, word: str) -> int:
        return self._index.get(word, OOV)

    def word(self, code: int) -> str:
        if code == PAD:
            return "<pad>"
        if code == START:
            return "<start>"
        if code == OOV:
            return "<oov>"
        rank = code - INDEX_FROM
        return self.words[rank - 1] if 1 <= rank <= len(self.words) else "<?>"

    def codes(self, tokens: Sequence[str]) -> list[int]:
        """Start token followed by each word's code."""
        get = self._index.get
        return [START] + [get(t, OOV) for t in tokens]

    def encode(self, text: str) -> Encoded:
        return self.encode_tokens(tokenize(text[:MAX_TEXT_CHARS]))

    def encode_tokens(self, tokens: list[str]) -> Encoded:
        codes = self.codes(tokens)
        feats = self.features(codes)
        padded = pad_pre([feats], self.maxlen)[0]
        n_oov = sum(1 for c in codes[1:] if c == OOV)
        # 'pre' truncation cuts the front of the features: for words only, "append" and
        # "inline", the first words (start token first) and, inline, their bigrams' ids
        # (ids >= top_words, not counted); "set": a count of sorted ids, not words.
        cut = max(0, len(feats) - self.maxlen)
        n_cut = (min(len(codes), cut) if self.ngrams == "set" else
                 sum(1 for f in feats[:cut] if f < self.top_words))
        return Encoded(tokens=tokens, codes=codes, padded=padded, n_oov=n_oov,
                       n_truncated=n_cut, n_known=len(tokens) - n_oov, features=feats)

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        return pad_pre([self.features(self.codes(tokenize(t[:MAX_TEXT_CHARS])))
                        for t in texts], self.maxlen)

    def with_settings(self, top_words: int, maxlen: int) -> Encoder:
        return Encoder(words=self.words, top_words=top_words, maxlen=maxlen, source=self.source,
                       ngrams=self.ngrams if top_words == self.top_words else "",
                       bigrams=self.bigrams if top_words == self.top_words else [])

    def with_bigrams(self, mode: str, bigrams: list[list[int]]) -> Encoder:
        if mode not in NGRAM_MODES:
            raise ValueError(f"n-gram mode {mode!r} (allowed: {NGRAM_MODES})")
        return Encoder(words=self.words, top_words=self.top_words, maxlen=self.maxlen,
                       source=self.source, ngrams=mode, bigrams=[list(b) for b in bigrams])

    def bigram_text(self, bigram_id: int) -> str:
        a, b = self.bigrams[bigram_id - self.top_words]
        return f"{self.word(a)} {self.word(b)}"

    # -- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict:
        n_keep = max(0, min(len(self.words), self.top_words - INDEX_FROM - 1))
        d = {"top_words": self.top_words, "maxlen": self.maxlen, "source": self.source,
             "index_from": INDEX_FROM, "filters": KERAS_FILTERS, "words": self.words[:n_keep]}
        if self.ngrams:
            d.update(ngrams=self.ngrams, bigrams=self.bigrams)
        return d

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Encoder:
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(words=d["words"], top_words=d["top_words"], maxlen=d["maxlen"],
                   source=d.get("source", ""), ngrams=d.get("ngrams", ""),
                   bigrams=d.get("bigrams", []))


# Probe sentences: re-scored after every epoch of a run.
MAX_PROBES = 8
MAX_PROBE_CHARS = 500


def check_probes(probes: Sequence[str]) -> list[str]:
    """Problems with a run's probe sentences, one line each (none: they can be used).

    One place for the form, the CLI's --probe and jobs.submit."""
    errors = []
    if len(probes) > MAX_PROBES:
        errors.append(f"probes: {len(probes)} sentences given, at most {MAX_PROBES} "
                      "(one per line)")
    for i, p in enumerate(probes, start=1):
        if len(p) > MAX_PROBE_CHARS:
            errors.append(f"probes: sentence {i} has {len(p)} characters "
                          f"(allowed up to {MAX_PROBE_CHARS})")
        elif not tokenize(p):
            errors.append(f"probes: sentence {i} has no words once punctuation is removed")
    return errors


def check_text(text: object, encoder: Encoder | None = None) -> tuple[str | None, list[str]]:
    """Validate typed text before prediction: (error or None, warnings).

    One place for what every page and the CLI say about a review that cannot be
    scored, or can only be scored in part.
    """
    if not isinstance(text, str):
        return "The review must be text.", []
    if not text.strip():
        return "The review is empty: type a sentence or two to score.", []
    warnings: list[str] = []
    if len(text) > MAX_TEXT_CHARS:
        warnings.append(f"The review is {len(text):,} characters; only the first "
                        f"{MAX_TEXT_CHARS:,} are read.")
    tokens = tokenize(text[:MAX_TEXT_CHARS])
    if not tokens:
        return ("The review has no words once punctuation is removed "
                "(the model reads lowercase words split on spaces)."), warnings
    if encoder is not None:
        codes = encoder.codes(tokens)
        if all(c == OOV for c in codes[1:]):
            counted = "The only word" if len(tokens) == 1 else f"None of the {len(tokens)} words"
            verb = "is not" if len(tokens) == 1 else "is"
            return (f"{counted} {verb} in the model's {encoder.vocab_size:,}-word vocabulary, so "
                    "the model would only see unknown-word markers."), warnings
        if len(codes) > encoder.maxlen:
            warnings.append(f"The review has {len(codes) - 1:,} words; the model reads only the "
                            f"last {encoder.maxlen:,} tokens (the first {len(codes) - encoder.maxlen:,} "
                            "are cut, as in training).")
    return None, warnings
