"""Whether fast mode applies to a configuration, and a model's structure read as a Plan.

Plain Python and numpy (no TensorFlow): the web server asks :func:`applies` for the Train
form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config import BIDIRECTIONAL, TrainConfig

# Bucket lengths (recurrent steps a batch runs) are rounded up to a multiple of this,
# so reviews of nearly the same length share batches across epochs' shuffles.
STEP_GRID = 16
# A batch runs its own steps inside a compiled window (the last W recurrent steps); one
# XLA compile per window size. The model's steps are cut into about this many windows:
# projections, buffers and the convolution scale with the window, not the batch's steps.
WINDOW_COUNT = 4
# ... each at least this many steps (fewer compiles for short models).
WINDOW_MIN = 64

# Architectures where the padding prefix is shared and fast mode is exact.
# (The maxpool-dropout ones: their dropout is after the pooling, a fresh mask per review and
# unit.)
EXACT = ("lstm", "gru", "stacked-lstm", "cnn-lstm", "lstm-maxpool", "lstm-maxpool-dropout",
         "cnn-lstm-maxpool-dropout", "cnn-lstm-bigrams")
# Architectures whose recurrent layers have no native kernel (core/native runs LSTMs only):
# fast mode runs their XLA-compiled loops.
XLA_ONLY = ("gru",)
# Architectures with dropout before the recurrence: exact only with dropout == 0.
DROPOUT_BEFORE_RECURRENCE = {
    "lstm-dropout": "Dropout on the embeddings",
    "cnn-lstm-dropout": "Dropout after the pooling",
}


def applies(cfg: TrainConfig) -> tuple[bool, str]:
    """(fast mode used, reason shown to the user)."""
    plain = "plain Keras fit on padded arrays"
    if not cfg.fast:
        return False, f"fast=false: {plain}"
    if cfg.clipnorm > 0:
        return False, (f"clipnorm={cfg.clipnorm:g}: Keras clips the embedding's gradient by "
                       "the norm of its slices (one per review and position, each squared on "
                       "its own); fast mode has one padding slice per shared prefix position, "
                       f"so the clipped steps would differ; {plain}")
    arch = cfg.architecture
    if arch in EXACT:
        return True, ("exact fast mode: each batch runs only its reviews' own steps from a "
                      "padding state computed once per batch (same outputs and gradients as "
                      f"the {cfg.maxlen}-step model)")
    if arch in DROPOUT_BEFORE_RECURRENCE:
        if cfg.dropout == 0:
            return True, (f"exact fast mode ({arch} with dropout 0: its dropout layers are "
                          "identities)")
        return False, (f"{arch}: {DROPOUT_BEFORE_RECURRENCE[arch]} draws a different mask at "
                       "every padding position of every review, so the padding prefix is not "
                       f"shared and skipping it would change training; {plain}")
    if arch in BIDIRECTIONAL:
        return False, (f"{arch}: the backward LSTM reads the padding last, after each review's "
                       "own words, so its state there differs per review and cannot be "
                       f"shared; {plain}")
    return False, f"{arch}: no exact fast mode for this architecture; {plain}"


# -- the model's structure -------------------------------------------------------------------


@dataclass
class Plan:
    """A registry model read as: embedding -> [conv -> pool] -> recurrent layers -> head."""

    maxlen: int
    steps: int  # recurrent steps over a full padded row: maxlen, or maxlen // pool_size
    embedding: Any
    conv: Any = None
    pool_size: int = 1
    pad_left: int = 0  # Conv1D 'same' zero padding before position 0
    pad_right: int = 0  # ... and after position maxlen - 1
    recurrent: list = field(default_factory=list)  # [("lstm" | "gru", keras layer)]
    # "max": the top layer's states are max-pooled over all steps (GlobalMaxPooling1D),
    # the shared prefix's states included; None: its last state feeds the head.
    pool: str | None = None
    after: list = field(default_factory=list)  # layers between recurrence and head
    head: Any = None

    def window_positions(self, window: int) -> tuple[int, int]:
        """Code positions [q0, q1) the last ``window`` recurrent steps read (may stick out
        of [0, maxlen) by the convolution's zero padding)."""
        p = self.pool_size
        return (self.steps - window) * p - self.pad_left, self.steps * p + self.pad_right

    def code_span(self, window, maximum=max, minimum=min) -> tuple:
        """The columns [lo, hi) of a padded row (maxlen codes) that window_positions'
        positions cover: with tf.maximum and tf.minimum, for a window given as a tensor."""
        q0, q1 = self.window_positions(window)
        return maximum(q0, 0), minimum(q1, self.maxlen)

    def steps_needed(self, x: np.ndarray) -> np.ndarray:
        """Per row, the recurrent steps that read anything but the shared padding prefix."""
        x = np.asarray(x)
        nonpad = x != 0
        lead = np.where(nonpad.any(axis=1), nonpad.argmax(axis=1), x.shape[1])
        # Step j is shared iff every code its pooled conv window reads is padding (or the
        # conv's zero padding, which every row has too).
        shared = np.maximum(lead - self.pad_right, 0) // self.pool_size
        shared = np.where(lead == x.shape[1], self.steps, np.minimum(shared, self.steps))
        return (self.steps - shared).astype(np.int64)

    def bucket_steps(self, x: np.ndarray) -> np.ndarray:
        """Per row, the steps its batch runs: steps_needed rounded up to STEP_GRID (rows
        of nearly equal length share buckets), at most the model's steps."""
        return np.minimum(_round_up(self.steps_needed(x), STEP_GRID), self.steps)

    def windows(self) -> list[int]:
        """The compiled window sizes, smallest first: 128, 256, 384, 500 for 500 steps,
        64, 128, 192, 250 for the CNN's 250."""
        quantum = max(WINDOW_MIN, _round_up(-(-self.steps // WINDOW_COUNT), STEP_GRID))
        return list(range(quantum, self.steps, quantum)) + [self.steps]

    def window_for(self, n_steps: int) -> int:
        return next(w for w in self.windows() if w >= n_steps)


def _act_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def make_plan(model, maxlen: int | None = None, training: bool = True) -> Plan:
    """Read a registry model's structure; ValueError says what is not supported.

    ``training``: dropout before the recurrence is only an identity at inference, so it
    is refused for training unless its rate is 0.
    """
    from keras import layers

    maxlen = maxlen or int(model.inputs[0].shape[1])
    chain = [ly for ly in model.layers if not isinstance(ly, layers.InputLayer)]
    plan = Plan(maxlen=maxlen, steps=maxlen, embedding=_take_embedding(chain))
    _skip_dropout(chain, training)
    if chain and isinstance(chain[0], layers.Conv1D):
        _take_conv(chain, plan)
        _skip_dropout(chain, training)
    _take_recurrent(chain, plan)
    if chain and isinstance(chain[0], layers.GlobalMaxPooling1D):
        pool = chain.pop(0)
        if pool.data_format != "channels_last" or pool.keepdims:
            raise ValueError("only GlobalMaxPooling1D(channels_last, keepdims=False)")
        plan.pool = "max"
    while chain and isinstance(chain[0], layers.Dropout):
        plan.after.append(chain.pop(0))  # dropout after the recurrence: any rate is exact
    plan.head = _take_head(chain)
    return plan


def _take_embedding(chain: list):
    """The first layer, which must be a plain Embedding (popped off ``chain``)."""
    from keras import layers

    if not chain or not isinstance(chain[0], layers.Embedding):
        raise ValueError("the model does not start with an Embedding")
    emb = chain.pop(0)
    if getattr(emb, "mask_zero", False):
        raise ValueError("Embedding(mask_zero=True) is not supported")
    return emb


def inference_plan(model, maxlen: int | None = None) -> Plan | None:
    """The model read for inference (dropout the identity), or None when its structure has
    no shared padding prefix."""
    try:
        return make_plan(model, maxlen, training=False)
    except (ValueError, AttributeError, TypeError):
        return None


def _skip_dropout(chain: list, training: bool) -> None:
    """Pop the Dropout layers before the recurrence: identities at inference, and for
    training only at rate 0."""
    from keras import layers

    while chain and isinstance(chain[0], layers.Dropout):
        if training and chain[0].rate > 0:
            raise ValueError("Dropout before the recurrence draws a different mask per "
                             "padding position, so the prefix is not shared")
        chain.pop(0)


def _take_conv(chain: list, plan: Plan) -> None:
    """Pop Conv1D + MaxPooling1D into ``plan`` (its padding and the pooled steps)."""
    from keras import layers

    conv = chain.pop(0)
    if (conv.padding != "same" or tuple(conv.strides) != (1,)
            or tuple(conv.dilation_rate) != (1,) or conv.groups != 1
            or conv.data_format != "channels_last" or not conv.use_bias):
        raise ValueError("only Conv1D(padding='same', strides=1) is supported")
    if not chain or not isinstance(chain[0], layers.MaxPooling1D):
        raise ValueError("Conv1D must be followed by MaxPooling1D")
    pool = chain.pop(0)
    p = int(pool.pool_size[0])
    if int(pool.strides[0]) != p or pool.padding != "valid":
        raise ValueError("only MaxPooling1D(strides=pool_size, padding='valid')")
    k = int(conv.kernel_size[0])
    plan.conv, plan.pool_size = conv, p
    plan.pad_left = (k - 1) // 2  # TensorFlow's 'SAME': the extra pad goes at the end
    plan.pad_right = k - 1 - plan.pad_left
    plan.steps = plan.maxlen // p
    if plan.steps < 1:
        raise ValueError("pool_size is longer than maxlen")


def _supported_cell(kind: str, rnn) -> bool:
    """Forward, stateless, dropout-free, tanh/sigmoid, with bias (GRU: reset_after)."""
    cell = rnn.cell
    return not (rnn.go_backwards or rnn.stateful or cell.dropout or cell.recurrent_dropout
                or not cell.use_bias or _act_name(cell.activation) != "tanh"
                or _act_name(cell.recurrent_activation) != "sigmoid"
                or (kind == "gru" and not cell.reset_after))


def _take_recurrent(chain: list, plan: Plan) -> None:
    """Pop the LSTM/GRU layers into ``plan.recurrent`` (at least one)."""
    from keras import layers

    while chain and isinstance(chain[0], (layers.LSTM, layers.GRU)):
        rnn = chain.pop(0)
        kind = "lstm" if isinstance(rnn, layers.LSTM) else "gru"
        if not _supported_cell(kind, rnn):
            raise ValueError(f"{rnn.name}: only forward, dropout-free, tanh/sigmoid "
                             "LSTM/GRU layers (GRU with reset_after) are supported")
        plan.recurrent.append((kind, rnn))
        feeds = (layers.LSTM, layers.GRU, layers.GlobalMaxPooling1D)
        if bool(chain) and isinstance(chain[0], feeds) != rnn.return_sequences:
            raise ValueError(f"{rnn.name}: return_sequences must be set exactly on layers "
                             "that feed another recurrent layer or a GlobalMaxPooling1D")
    if not plan.recurrent:
        raise ValueError("no LSTM/GRU layer where expected (Bidirectional is not supported)")


def _take_head(chain: list):
    """The rest of ``chain``, which must be exactly Dense(1, activation='sigmoid')."""
    from keras import layers

    if (len(chain) != 1 or not isinstance(chain[0], layers.Dense) or chain[0].units != 1
            or not chain[0].use_bias or _act_name(chain[0].activation) != "sigmoid"):
        raise ValueError("the model must end in Dense(1, activation='sigmoid')")
    return chain[0]


def _round_up(n: np.ndarray | int, step: int):
    return -(-n // step) * step
