"""Looking inside a trained model: integrated gradients and the LSTM's running state.

Runs in the inference process (core/inference.py), never in the web server: integrated
gradients differentiate the Keras model with TensorFlow; the LSTM's running state is
recomputed in numpy from the layer weights (Keras's equations, gate order i, f, g, o).

Both read one review's padded row, as the model does, and report per token of
``Encoder.encode(text).codes`` (the start token, then one entry per word) which column of
the row it sits in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

IG_STEPS = 48  # trapezoid intervals from the baseline to the review: 49 rows in one batch
# Architectures whose LSTM reads one step per word (no convolution, one direction) and whose
# Dense head reads the last LSTM's hidden state, or (lstm-maxpool[-dropout]: dropout is an
# identity at inference) the max of its states over the steps: the running sentiment (the
# head on the state so far, or on the running max) is exact for them, its last point the
# prediction.
INSIDE_ARCHITECTURES = ("lstm", "lstm-dropout", "stacked-lstm", "lstm-maxpool",
                        "lstm-maxpool-dropout")


class ExplainError(ValueError):
    """The model cannot be explained this way; the message is for the user."""


def columns(n_codes: int, n_cut: int, maxlen: int) -> list[int | None]:
    """Column of each code of a review (start token first) in its padded row; None for
    codes cut at the front by 'pre' truncation."""
    offset = maxlen - (n_codes - n_cut)
    return [None if j < n_cut else offset + j - n_cut for j in range(n_codes)]


# -- integrated gradients ----------------------------------------------------------------------
@dataclass
class IGResult:
    attributions: np.ndarray  # (maxlen,): one per column; exactly 0 on padding columns
    p: float  # f(review)
    p_baseline: float  # f(all padding)
    seconds: float
    steps: int

    @property
    def total(self) -> float:
        return float(self.attributions.sum())

    @property
    def gap(self) -> float:
        """|sum of attributions - (f(x) - f(x'))| relative to |f(x) - f(x')|."""
        diff = self.p - self.p_baseline
        return abs(self.total - diff) / max(abs(diff), 1e-9)


def _embedding_chain(model):
    """(the embedding layer, the layers after it), for models that are one chain from the
    embedding to the output; ExplainError otherwise."""
    names = [layer.name for layer in model.layers]
    if "embedding" not in names:
        raise ExplainError("integrated gradients need a model whose words go through one "
                           "'embedding' layer")
    i = names.index("embedding")
    rest = model.layers[i + 1:]
    for prev, layer in zip(model.layers[i:], rest):
        inbound = [t for node in layer._inbound_nodes for t in node.input_tensors]
        if len(inbound) != 1 or inbound[0] is not prev.output:
            raise ExplainError("integrated gradients need a model that is one chain of "
                               f"layers after its embedding ({layer.name} is not)")
    return model.layers[i], rest


class IntegratedGradients:
    """Gradients of P(positive) w.r.t. the embedding output, for one model (one traced
    TensorFlow function per model, reused for every review).

    Every interpolated row equals the baseline on the review's padding columns (x = x'
    there), so for models whose recurrent layers are LSTMs reading the embeddings (lstm,
    lstm-dropout, stacked-lstm) the padding prefix is run once, in numpy, and the batch of
    interpolations starts from the LSTMs' states after it: the same function, ~maxlen/words
    times less work. Other models run every column."""

    def __init__(self, model, steps: int = IG_STEPS):
        import tensorflow as tf

        self.embedding, rest = _embedding_chain(model)
        self.steps = steps
        self.maxlen = int(model.inputs[0].shape[1])
        table = self.embedding.embeddings
        kinds = [type(layer).__name__ for layer in rest]
        self.lstms = [layer for layer in rest if type(layer).__name__ == "LSTM"]
        self.skips = bool(self.lstms) and kinds[-1] == "Dense" and all(
            k in ("Dropout", "LSTM") for k in kinds[:-1])
        self._pad_states: list[tuple[np.ndarray, np.ndarray]] | None = None
        n_states = len(self.lstms) if self.skips else 0

        def head(z, states):
            k = 0
            for layer in rest:
                if self.skips and type(layer).__name__ == "LSTM":
                    n = tf.shape(z)[0]
                    h, c = (tf.tile(s[k][None], [n, 1]) for s in states)
                    z = layer(z, initial_state=[h, c], training=False)
                    k += 1
                else:
                    z = layer(z, training=False)
            return z

        @tf.function(reduce_retracing=True)
        def run(codes, hs, cs):
            e = tf.gather(table, codes)  # (columns, dim)
            base = tf.broadcast_to(tf.gather(table, 0), tf.shape(e))  # all padding
            alphas = tf.reshape(tf.cast(tf.linspace(0.0, 1.0, steps + 1), e.dtype), (-1, 1, 1))
            z = base[None] + alphas * (e - base)[None]  # (steps + 1, columns, dim)
            with tf.GradientTape() as tape:
                tape.watch(z)
                p = tf.reshape(head(z, (hs, cs)), (-1,))
            g = tape.gradient(p, z)
            w = tf.cast(tf.concat([[0.5], tf.ones(steps - 1), [0.5]], 0) / steps, e.dtype)
            avg = tf.tensordot(w, g, axes=1)  # (columns, dim): the trapezoid rule's mean
            return p[-1], p[0], tf.reduce_sum((e - base) * avg, axis=-1)

        self._run, self._n_states = run, n_states

    def pad_states(self, n_pad: int) -> tuple[np.ndarray, np.ndarray]:
        """Each LSTM's (h, c) after ``n_pad`` padding columns, stacked (layers, units)."""
        if self._pad_states is None:  # once per model: every prefix length at once
            x = np.repeat(np.asarray(self.embedding.embeddings)[:1], self.maxlen, axis=0)
            self._pad_states = []
            for layer in self.lstms:
                seq = lstm_sequence(x, *(np.asarray(w) for w in layer.get_weights()))
                self._pad_states.append((seq["h"], seq["c"]))
                x = seq["h"]
        dtype = np.asarray(self.embedding.embeddings).dtype
        if n_pad == 0:
            zero = np.zeros((len(self.lstms), self.lstms[0].units), dtype)
            return zero, zero
        return tuple(np.stack([s[i][n_pad - 1] for s in self._pad_states]).astype(dtype)
                     for i in (0, 1))

    def __call__(self, row: np.ndarray) -> IGResult:
        t0 = time.perf_counter()
        row = np.asarray(row, dtype=np.int32)
        n_pad = int(np.argmax(row != 0)) if row.any() else len(row)
        if self.skips and n_pad < len(row):
            hs, cs = self.pad_states(n_pad)
            tail = row[n_pad:]
        else:
            n_pad, tail = 0, row
            hs = cs = np.zeros((0, 1), np.asarray(self.embedding.embeddings).dtype)
        p, p0, attr = self._run(tail, hs, cs)
        full = np.zeros(len(row))
        full[n_pad:] = np.asarray(attr, dtype=np.float64)
        # p0: the tail's first row is padding from the padding state, i.e. f(all padding)
        return IGResult(full, float(p), float(p0), time.perf_counter() - t0, self.steps)


# -- inside the LSTM -----------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def lstm_sequence(x: np.ndarray, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Keras's LSTM (tanh, sigmoid gates, zero initial state) over ``x`` (steps, n_in), in
    float64: each step's input, forget, output gates, candidate g, cell c and hidden h,
    each (steps, units)."""
    units = recurrent.shape[0]
    xw = x.astype(np.float64) @ kernel.astype(np.float64) + bias.astype(np.float64)
    rk = recurrent.astype(np.float64)
    h, c = np.zeros(units), np.zeros(units)
    out = {k: np.empty((len(x), units)) for k in ("i", "f", "o", "g", "c", "h")}
    for t in range(len(x)):
        z = xw[t] + h @ rk
        i, f = _sigmoid(z[:units]), _sigmoid(z[units:2 * units])
        g, o = np.tanh(z[2 * units:3 * units]), _sigmoid(z[3 * units:])
        c = f * c + i * g
        h = o * np.tanh(c)
        for k, v in (("i", i), ("f", f), ("o", o), ("g", g), ("c", c), ("h", h)):
            out[k][t] = v
    return out


def _check_lstm(layer) -> None:
    cfg = layer.get_config()
    if (cfg.get("activation") != "tanh" or cfg.get("recurrent_activation") != "sigmoid"
            or not cfg.get("use_bias", True) or cfg.get("go_backwards")):
        raise ExplainError(f"{layer.name}: only LSTMs with Keras's default activations are "
                           "recomputed here")


def inside_lstm(model, architecture: str, row: np.ndarray) -> dict[str, np.ndarray]:
    """The last LSTM layer's gates and states over every column of ``row`` and the running
    sentiment: the Dense head applied to the hidden state after each step (at the last step
    exactly the model's prediction)."""
    if architecture not in INSIDE_ARCHITECTURES:
        raise ExplainError(f"{architecture}: 'inside the LSTM' needs a one-directional LSTM "
                           f"reading one word per step ({', '.join(INSIDE_ARCHITECTURES)})")
    layers = {layer.name: layer for layer in model.layers}
    x = np.asarray(layers["embedding"].embeddings)[np.asarray(row)]
    lstms = [layer for layer in model.layers if type(layer).__name__ == "LSTM"]
    seq: dict[str, np.ndarray] = {}
    for layer in lstms:  # dropout layers are identities at inference
        _check_lstm(layer)
        kernel, recurrent, bias = (np.asarray(w) for w in layer.get_weights())
        seq = lstm_sequence(x, kernel, recurrent, bias)
        x = seq["h"]
    w, b = (np.asarray(v, dtype=np.float64) for v in layers["output"].get_weights())
    pooled = any(type(layer).__name__ == "GlobalMaxPooling1D" for layer in model.layers)
    head_in = np.maximum.accumulate(seq["h"], axis=0) if pooled else seq["h"]
    seq["running"] = _sigmoid(head_in @ w[:, 0] + b[0])
    seq["layer"] = lstms[-1].name
    return seq
