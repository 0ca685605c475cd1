"""The exact fast forward pass in TensorFlow: features (embedding, or conv + pool), the
recurrent layers from the shared padding prefix's state, the head.

TensorFlow is imported when a forward pass is built (the web server never builds one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core import native
from core.fast.plan import Plan

# Each batch's rows run as this many independent time loops, concurrently on the cores.
LOOP_SPLIT = 2


def _candidate_scale(kind: str, units: int) -> np.ndarray:
    """Per-column factor: 2 on the tanh (candidate) block, 1 on the sigmoid gates."""
    blocks = [1, 1, 2, 1] if kind == "lstm" else [1, 1, 2]
    return np.repeat(np.asarray(blocks, np.float32), units)


class _Forward:
    """One model's forward pass (logits) over a batch's window of codes.

    With the native LSTM kernels (core/native) every layer is an LSTM run by its ops;
    otherwise the XLA-compiled loops of core/fast/recurrences.py run each layer."""

    def __init__(self, model, plan: Plan):
        import tensorflow as tf

        from core.fast.recurrences import recurrences

        self.tf, self.model, self.plan = tf, model, plan
        self.native = native.enabled() and all(kind == "lstm" for kind, _ in plan.recurrent)
        self.runs: dict[Any, Any] = recurrences(self.native)
        # The embedding lookups of the pass being traced (see _lookup), and with cut_prefix
        # (the train step's tape) where the padding prefix hands its results on (_cut).
        self.lookups: list[tuple[Any, Any, bool]] = []
        self.boundary: list[tuple[Any, Any]] = []
        self.cut_prefix: Any = None
        # Conv1D + ReLU + MaxPooling1D by the native op (another activation: TensorFlow's).
        self.conv_native = self.native and plan.conv is not None \
            and getattr(plan.conv.activation, "__name__", "") == "relu"

    def _lookup(self, codes, padding: bool):
        """The embedding rows of ``codes`` (shaped as codes, then E), noted in self.lookups
        as (codes, rows, padding): the train step takes the table's gradient per lookup, so
        that the rows the batch's own codes touch can be updated while the padding row's
        backward pass still runs (core/fast/update.py, gradients)."""
        e = self.tf.gather(self.plan.embedding.embeddings, codes)
        self.lookups.append((codes, e, padding))
        return e

    def _cut(self, tensors: list) -> list:
        """The padding prefix's results as the rest of the pass reads them: with cut_prefix
        (the train step's tape, engine._Engine._train_step) each through tf.stop_gradient
        and watched as a source, the pair (result, stopped) noted in self.boundary, so
        that the gradient can be taken in two passes: the batch's own part, then the
        prefix's from the stopped tensors' gradients, ordered after the own part's (its
        backward pass is one row on one core, which the other core can spend on the own
        part's last ops)."""
        if not self.cut_prefix:
            return tensors
        stopped = [self.tf.stop_gradient(t) for t in tensors]
        self.cut_prefix.watch(stopped)  # the tape: a stopped tensor is a source of its own
        self.boundary += zip(tensors, stopped)
        return stopped

    # Features: embeddings, or conv + pool, time-major (T, B, F).
    def _features(self, codes, pad_left: int, pad_right: int, padding: bool = False):
        """``padding``: the codes are the all-padding row of the shared prefix."""
        tf, plan = self.tf, self.plan
        if plan.conv is None:
            # Looked up time-major: the codes transposed, not the rows (B x L x E floats,
            # and their gradient back, which held up the padding prefix's backward pass).
            return self._lookup(tf.transpose(codes), padding)
        e = self._lookup(codes, padding)  # (B, L, E)
        conv = plan.conv
        if self.conv_native:
            return self.runs["conv-pool-native"](
                e, conv.kernel, conv.bias, *(tf.cast(v, tf.int32)
                                             for v in (pad_left, pad_right, plan.pool_size)))
        e = tf.pad(e, [[0, 0], [pad_left, pad_right], [0, 0]])  # 'same' zero padding
        if e.shape[0] == 1:  # a single row (the padding row): one matmul per tap, as a
            n_conv = e.shape[1] - conv.kernel.shape[0] + 1  # batch-1 conv's gradient is slow
            y = conv.bias + sum(tf.matmul(e[0, j: j + n_conv], conv.kernel[j])
                                for j in range(conv.kernel.shape[0]))[None]
        else:
            y = tf.nn.conv1d(e, conv.kernel, stride=1, padding="VALID") + conv.bias
        y = conv.activation(y)
        # As Keras's MaxPooling1D (the same op, so the same gradient routing on ties); VALID
        # drops a last partial window.
        y = tf.nn.max_pool1d(y, plan.pool_size, plan.pool_size, "VALID")
        return tf.transpose(y, [1, 0, 2])

    def _recur(self, kind: str, layer, feats, state, start, end, sequences: bool):
        """Steps [start, end) of one layer over time-major feats; returns (seq, state).

        A batch is split into LOOP_SPLIT independent time loops (rows don't interact in
        a recurrence), which TensorFlow runs concurrently on the CPU's cores. The split
        is made on the narrow features, before the input projection, and the candidate
        scale is folded into the small weight matrices: no pass over the wide (T, B, G)
        projections beyond the matmul that makes them (and its gradient). ``feats`` may
        come already split, as a list of the parts' features (see _split_features)."""
        tf = self.tf
        cell = layer.cell
        scale = tf.constant(_candidate_scale(kind, cell.units))
        weights = (cell.kernel * scale, (cell.bias if kind == "lstm" else cell.bias[0]) * scale,
                   cell.recurrent_kernel * scale)
        split = isinstance(feats, list)
        batch = sum(f.shape[1] for f in feats) if split else feats.shape[1]
        state = [tf.broadcast_to(s, [batch, cell.units]) for s in state]
        parts = len(feats) if split else self._parts(batch)
        feats_parts = feats if split else tf.split(feats, parts, axis=1)
        outs = [self._recur_part(kind, cell, scale, weights, feats_p, state_p, start, end,
                                 sequences)
                for feats_p, *state_p in zip(feats_parts, *(tf.split(s, parts, axis=0)
                                                            for s in state))]
        if parts == 1:
            seq, *last = outs[0]
        else:
            seq = tf.concat([o[0] for o in outs], axis=1) if sequences else outs[0][0]
            last = [tf.concat(list(a), axis=0) for a in zip(*(o[1:] for o in outs))]
        return seq, tuple(last)

    @staticmethod
    def _parts(batch: int) -> int:
        return LOOP_SPLIT if batch % LOOP_SPLIT == 0 and batch >= 2 * LOOP_SPLIT else 1

    def _split_features(self, codes, pad_left: int, pad_right: int):
        """The first layer's features for each of _recur's parts: the codes are split and
        each part's features made on their own (embedding lookup, or lookup, convolution
        and pooling), so that both parts run side by side, as their time loops do, and no
        copy splits the features (or, backward, joins their gradient). A batch too small
        to split: its features, whole."""
        if self._parts(codes.shape[0]) == 1:
            return self._features(codes, pad_left, pad_right)
        return [self._features(c, pad_left, pad_right)
                for c in self.tf.split(codes, self._parts(codes.shape[0]), axis=0)]

    def _recur_part(self, kind: str, cell, scale, weights, feats_p, state_p, start, end,
                    sequences: bool):
        """One of _recur's independent time loops, over the rows of ``feats_p``."""
        tf = self.tf
        kernel, b_in, rk = weights
        if kind == "lstm" and self.native:  # projections are inside the native ops
            return self.runs[("lstm-native", sequences)](feats_p, *state_p, kernel, b_in, rk,
                                                         start, end)
        t_total, rows = feats_p.shape[0], feats_p.shape[1]
        flat = tf.reshape(feats_p, [-1, feats_p.shape[2]])
        xw = tf.reshape(tf.matmul(flat, kernel) + b_in, [t_total, rows, -1])
        if kind == "lstm":
            return self.runs[("lstm", sequences)](xw, *state_p, rk, start, end)
        return self.runs[("gru", sequences)](xw, *state_p, rk, cell.bias[1] * scale, start,
                                             end)

    def _max_pool(self, pad_seq, seq, n_prefix, start):
        """GlobalMaxPooling1D over the padded model's steps: the shared prefix's states
        (pad_seq's first n_prefix steps, one row) and each row's own (seq from ``start``).
        One reduce_max over exactly those steps' values, so ties split the gradient as the
        padded model's reduce_max does."""
        tf = self.tf
        low = tf.constant(-np.inf, tf.float32)
        in_pad = tf.range(tf.shape(pad_seq)[0])[:, None, None] < n_prefix
        in_own = tf.range(tf.shape(seq)[0])[:, None, None] >= start
        pad = tf.broadcast_to(tf.where(in_pad, pad_seq, low),
                              tf.concat([tf.shape(pad_seq)[:1], tf.shape(seq)[1:]], 0))
        return tf.reduce_max(tf.concat([pad, tf.where(in_own, seq, low)], 0), axis=0)

    def logits(self, codes, n_steps, window, training: bool):
        """Logits for the codes of the last ``window`` steps' positions (B, columns), the
        longest row needing ``n_steps`` steps; n_steps is a tensor, window a static int
        (XLA loops: one compile each) or, with the native kernels, a tensor."""
        tf, plan = self.tf, self.plan
        q0, q1 = plan.window_positions(window)
        left = tf.maximum(0, -q0) if tf.is_tensor(q0) else max(0, -q0)
        self.lookups, self.boundary = [], []
        # The shared prefix: an all-padding row, run for steps [0, steps - n_steps).
        n_prefix = plan.steps - n_steps
        pad_feats = self._features(tf.zeros([1, plan.maxlen], tf.int32),
                                   plan.pad_left, plan.pad_right, padding=True)[: plan.steps]
        feats = self._split_features(codes, left, max(0, q1 - plan.maxlen))
        start = window - n_steps
        for li, (kind, layer) in enumerate(plan.recurrent):
            sequences = li + 1 < len(plan.recurrent) or plan.pool is not None
            zeros = [tf.zeros([1, layer.cell.units])] * (2 if kind == "lstm" else 1)
            pad_feats, state = self._recur(kind, layer, pad_feats, zeros, 0, n_prefix,
                                           sequences)
            feats, last = self._recur(kind, layer, feats, self._cut(list(state)), start,
                                      window, sequences)
        h = last[0] if plan.pool is None else self._max_pool(self._cut([pad_feats])[0], feats,
                                                             n_prefix, start)
        for layer in plan.after:
            h = layer(h, training=training)
        head = plan.head
        return (tf.matmul(h, head.kernel) + head.bias)[:, 0]
