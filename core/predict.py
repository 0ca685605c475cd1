"""Scoring typed reviews with a finished run's model.

Models are only ever loaded from the run store, by run id, with ``safe_mode=True`` (no
Lambda layers or other code inside a model file runs). The run's saved encoder turns text
into codes exactly as in training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.store import COMPLETED, ENCODER_FILE, MODEL_FILE, Run, RunStore
from core.text import OOV, START, Encoder, check_text, tokenize

ZIP_MAGIC = b"PK\x03\x04"  # a .keras file is a zip archive
ATTRIBUTION_MAX_WORDS = 500  # occlusion is batched over at most this many words


class PredictError(ValueError):
    """A review or run that cannot be scored; the message is for the user."""


@dataclass
class Prediction:
    probability: float | None  # P(positive); None when the text could not be scored
    label: str  # "positive" / "negative" / "" (not scored)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    n_words: int = 0
    n_oov: int = 0
    n_truncated: int = 0

    def as_dict(self) -> dict:
        return {"probability": self.probability, "label": self.label, "error": self.error,
                "warnings": self.warnings, "words": self.n_words, "oov_words": self.n_oov,
                "truncated_tokens": self.n_truncated}


@dataclass
class WordAttribution:
    word: str
    code: int
    delta: float  # P(full) - P(word occluded): > 0 pushes towards positive
    status: str  # "known" | "oov" | "truncated"


def label_of(p: float) -> str:
    return "positive" if p >= 0.5 else "negative"


def load_run_model(store: RunStore, run_id: str):
    """The Keras model of a completed run, loaded safely from the store only."""
    import keras

    run = store.get(run_id)
    if run.status != COMPLETED:
        raise PredictError(f"run {run_id} is {run.status}; only completed runs have a model")
    path = store.artifact(run_id, MODEL_FILE)  # PostgreSQL: fetched from the database
    if path is None:
        raise PredictError(f"run {run_id} has no saved model file")
    with open(path, "rb") as fh:
        if fh.read(4) != ZIP_MAGIC:  # HDF5 (.h5) and anything else: the legacy loaders
            raise PredictError(refuse_model_file(path))  # have weaker safety checks
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:  # safe mode refused a Lambda/unsafe object
        raise PredictError(f"run {run_id}'s model file was refused in safe mode: {exc}") from exc


def refuse_model_file(path: Path | str) -> str:
    """Model files are never loaded from a path or upload; this is the message shown."""
    return (f"Refused to load {Path(str(path)).name!r}: models are only loaded from this lab's "
            "run store by run id (safe mode), never from an uploaded or typed file path.")


class Predictor:
    """A loaded run: encoder + model (+ the exact fast path when it applies)."""

    def __init__(self, model, encoder: Encoder, fast=None, run: Run | None = None):
        """Around a model in memory; ``fast``: its FastPredictor, or None for model.predict.
        Runs are loaded with :meth:`load`."""
        self.model, self.encoder, self.fast, self.run = model, encoder, fast, run
        self.run_id = run.id if run is not None else ""

    @classmethod
    def load(cls, store: RunStore, run_id: str) -> Predictor:
        """A completed run's model and encoder, from the store only (safe mode)."""
        from core import fast

        run = store.get(run_id)
        model = load_run_model(store, run_id)
        encoder = store.artifact(run_id, ENCODER_FILE)
        if encoder is None:
            raise PredictError(f"run {run_id} has no saved encoder file")
        return cls(model, Encoder.load(encoder),
                   fast.FastPredictor.try_build(model, run.config), run)

    def _probs(self, x: np.ndarray) -> np.ndarray:
        """P(positive) for padded code rows; fast exact path when available."""
        if self.fast is not None:
            return self.fast.predict_padded(x)
        return np.asarray(self.model.predict(x, batch_size=256, verbose=0)).ravel()

    def predict(self, texts: list[str]) -> list[Prediction]:
        out: list[Prediction | None] = []
        rows, where = [], []
        for text in texts:
            error, warnings = check_text(text, self.encoder)
            if error:
                out.append(Prediction(None, "", error, warnings))
                continue
            enc = self.encoder.encode(text)
            out.append(Prediction(None, "", None, warnings, len(enc.tokens), enc.n_oov,
                                  enc.n_truncated))
            rows.append(enc.padded)
            where.append(len(out) - 1)
        if rows:
            probs = self._probs(np.stack(rows))
            for i, p in zip(where, probs):
                out[i].probability = float(p)
                out[i].label = label_of(float(p))
        return out

    def predict_one(self, text: str) -> Prediction:
        return self.predict([text])[0]

    def attribution(self, text: str) -> tuple[float, list[WordAttribution]]:
        """Occlusion: each kept word replaced by the OOV marker, all variants in one batch."""
        error, _ = check_text(text, self.encoder)
        if error:
            raise PredictError(error)
        enc = self.encoder.encode(text)
        maxlen = self.encoder.maxlen
        n_cut = enc.n_truncated  # codes cut at the front (the start token first)
        words = enc.tokens
        # codes[j] is word j-1 (codes[0] is the start token); code j sits at column j - n_cut
        # of the unpadded tail, or is cut when j < n_cut.
        base = enc.padded
        offset = maxlen - (len(enc.codes) - n_cut)
        variants, positions = [], []
        if self.encoder.ngrams == "set":  # distinct sorted ids: no word is cut as such
            n_cut = 0
        for j in range(1, len(enc.codes)):
            if j < n_cut or enc.codes[j] == OOV or len(variants) >= ATTRIBUTION_MAX_WORDS:
                continue
            if self.encoder.ngrams:  # the word's bigrams go too: encode the review again
                tokens = list(words)
                tokens[j - 1] = ""  # never a token: read as OOV
                variants.append(self.encoder.encode_tokens(tokens).padded)
                positions.append(j)
                continue
            row = base.copy()
            row[offset + j - n_cut] = OOV
            variants.append(row)
            positions.append(j)
        probs = self._probs(np.stack([base, *variants]))
        p_full = float(probs[0])
        delta = {j: p_full - float(p) for j, p in zip(positions, probs[1:])}
        result = []
        for j in range(1, len(enc.codes)):
            code = enc.codes[j]
            status = "truncated" if j < n_cut else ("oov" if code == OOV else "known")
            result.append(WordAttribution(words[j - 1], code, delta.get(j, 0.0), status))
        return p_full, result

    def inspect(self, text: str) -> dict:
        """The exact index sequence the model sees, with each code's meaning."""
        enc = self.encoder.encode(text)
        return {"tokens": enc.tokens, "codes": enc.codes, "padded": enc.padded.tolist(),
                "n_pad": max(0, self.encoder.maxlen - len(enc.codes)),
                "n_truncated": enc.n_truncated, "n_oov": enc.n_oov,
                "start_kept": bool(START in enc.padded.tolist()), "maxlen": self.encoder.maxlen,
                "vocab_size": self.encoder.vocab_size, "words": len(tokenize(text)),
                "ngrams": self.encoder.ngrams, "features": len(enc.features),
                "bigrams": [[int(i), self.encoder.bigram_text(i)] for i in enc.features
                            if i >= self.encoder.top_words]}

    # -- looking inside (core.explain) -----------------------------------------------------
    def _encoded_columns(self, text: str):
        error, _ = check_text(text, self.encoder)
        if error:
            raise PredictError(error)
        from core.explain import columns

        enc = self.encoder.encode(text)
        return enc, columns(len(enc.codes), enc.n_truncated, self.encoder.maxlen)

    def integrated_gradients(self, text: str) -> dict:
        """Integrated gradients from the all-padding input to the review (core.explain):
        one attribution per word (the start token's apart), with the completeness check."""
        from core.explain import ExplainError, IntegratedGradients

        enc, cols = self._encoded_columns(text)
        if self.encoder.ngrams:
            raise PredictError("integrated gradients follow each word's position in the "
                               "input; this model's inputs are words and bigrams "
                               f"({self.encoder.ngrams!r} features): see occlusion above")
        try:
            if getattr(self, "_ig", None) is None:
                self._ig = IntegratedGradients(self.model)
            res = self._ig(enc.padded)
        except ExplainError as exc:
            raise PredictError(str(exc)) from exc
        words = []
        for j in range(1, len(enc.codes)):
            col, code = cols[j], enc.codes[j]
            status = "truncated" if col is None else ("oov" if code == OOV else "known")
            words.append(WordAttribution(enc.tokens[j - 1], code,
                                         0.0 if col is None else float(res.attributions[col]),
                                         status))
        start = 0.0 if cols[0] is None else float(res.attributions[cols[0]])
        return {"p": res.p, "p_baseline": res.p_baseline, "total": res.total, "gap": res.gap,
                "start": start, "words": words, "steps": res.steps, "seconds": res.seconds}

    def inside(self, text: str) -> dict:
        """The LSTM's running sentiment, hidden states and gates over the review's own
        tokens (start token first; padding columns left out), from core.explain."""
        from core.explain import ExplainError, inside_lstm

        enc, cols = self._encoded_columns(text)
        arch = self.run.config.architecture if self.run is not None else "lstm"
        t0 = time.perf_counter()
        try:
            seq = inside_lstm(self.model, arch, enc.padded)
        except ExplainError as exc:
            raise PredictError(str(exc)) from exc
        kept = [c for c in cols if c is not None]
        tokens = ["<start>", *enc.tokens][len(cols) - len(kept):]
        out = {k: seq[k][kept].astype(np.float32) for k in ("i", "f", "o", "g", "c", "h")}
        out.update(tokens=tokens, running=seq["running"][kept].tolist(), layer=seq["layer"],
                   n_pad=int(kept[0]) if kept else 0, n_truncated=enc.n_truncated,
                   p=float(seq["running"][-1]), seconds=time.perf_counter() - t0)
        return out
