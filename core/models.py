"""Model builders: ``TrainConfig -> keras.Model`` (uncompiled), one per architecture.

The seed tutorial's three models have exactly 213,301 / 213,301 / 216,405 parameters at
its settings (top_words 5000, embedding 32, LSTM 100, Conv1D 32x3, pool 2).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from core.config import ARCHITECTURES, TrainConfig, input_dim
from core.shapes import LayerRow, format_summary

# Sigmoid output: probability that the review is positive.
OUTPUT_ACTIVATION = "sigmoid"
# Dropout in cnn-lstm-dropout sits after pooling and after the LSTM.
CONV_ACTIVATION = "relu"


def _inputs(cfg: TrainConfig) -> keras.KerasTensor:
    return keras.Input(shape=(cfg.maxlen,), dtype="int32", name="codes")


def _embed(cfg: TrainConfig, x):
    return layers.Embedding(input_dim(cfg), cfg.embedding_dim, name="embedding")(x)


def _head(x):
    return layers.Dense(1, activation=OUTPUT_ACTIVATION, name="output")(x)


def build_lstm(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = _embed(cfg, inputs)
    x = layers.LSTM(cfg.units, name="lstm")(x)
    return keras.Model(inputs, _head(x), name="lstm")


def build_lstm_dropout(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = _embed(cfg, inputs)
    x = layers.Dropout(cfg.dropout, name="embedding_dropout")(x)
    x = layers.LSTM(cfg.units, name="lstm")(x)
    x = layers.Dropout(cfg.dropout, name="lstm_dropout")(x)
    return keras.Model(inputs, _head(x), name="lstm_dropout")


def _conv_pool(cfg: TrainConfig, x):
    x = layers.Conv1D(cfg.conv_filters, cfg.kernel_size, padding="same",
                      activation=CONV_ACTIVATION, name="conv")(x)
    return layers.MaxPooling1D(pool_size=cfg.pool_size, name="pool")(x)


def build_cnn_lstm(cfg: TrainConfig) -> keras.Model:
    """The tutorial's CNN + LSTM; also cnn-lstm-bigrams, whose codes hold bigram ids too
    (core.text's "inline" rows)."""
    inputs = _inputs(cfg)
    x = _conv_pool(cfg, _embed(cfg, inputs))
    x = layers.LSTM(cfg.units, name="lstm")(x)
    return keras.Model(inputs, _head(x), name=cfg.architecture.replace("-", "_"))


def build_cnn_lstm_dropout(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = _conv_pool(cfg, _embed(cfg, inputs))
    x = layers.Dropout(cfg.dropout, name="pool_dropout")(x)
    x = layers.LSTM(cfg.units, name="lstm")(x)
    x = layers.Dropout(cfg.dropout, name="lstm_dropout")(x)
    return keras.Model(inputs, _head(x), name="cnn_lstm_dropout")


def build_bilstm(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = layers.Bidirectional(layers.LSTM(cfg.units), name="bilstm")(_embed(cfg, inputs))
    return keras.Model(inputs, _head(x), name="bilstm")


def build_gru(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = layers.GRU(cfg.units, name="gru")(_embed(cfg, inputs))
    return keras.Model(inputs, _head(x), name="gru")


def build_stacked_lstm(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = layers.LSTM(cfg.units, return_sequences=True, name="lstm_1")(_embed(cfg, inputs))
    x = layers.LSTM(cfg.units, name="lstm_2")(x)
    return keras.Model(inputs, _head(x), name="stacked_lstm")


def _max_pooled_lstm(cfg: TrainConfig, x):
    """The LSTM's states after every step, max-pooled (over every step, padding included)."""
    x = layers.LSTM(cfg.units, return_sequences=True, name="lstm")(x)
    return layers.GlobalMaxPooling1D(name="max_pool")(x)


def build_lstm_maxpool(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    return keras.Model(inputs, _head(_max_pooled_lstm(cfg, _embed(cfg, inputs))),
                       name="lstm_maxpool")


def _maxpool_dropout(cfg: TrainConfig, x):
    """The max-pooled LSTM states, then dropout (after the recurrence)."""
    return layers.Dropout(cfg.dropout, name="pool_dropout")(_max_pooled_lstm(cfg, x))


def build_lstm_maxpool_dropout(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = _maxpool_dropout(cfg, _embed(cfg, inputs))
    return keras.Model(inputs, _head(x), name="lstm_maxpool_dropout")


def build_cnn_lstm_maxpool_dropout(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = _maxpool_dropout(cfg, _conv_pool(cfg, _embed(cfg, inputs)))
    return keras.Model(inputs, _head(x), name="cnn_lstm_maxpool_dropout")


def build_cnn_bilstm_pool(cfg: TrainConfig) -> keras.Model:
    """Dropout of whole embedding channels, the CNN front end, then a bidirectional LSTM
    whose states after every step (of both directions) are mean- and max-pooled over the
    review, then dropout."""
    inputs = _inputs(cfg)
    x = layers.SpatialDropout1D(cfg.dropout, name="embedding_dropout")(_embed(cfg, inputs))
    x = _conv_pool(cfg, x)
    x = layers.Bidirectional(layers.LSTM(cfg.units, return_sequences=True), name="bilstm")(x)
    x = layers.Concatenate(name="mean_max")([layers.GlobalAveragePooling1D(name="mean_pool")(x),
                                             layers.GlobalMaxPooling1D(name="max_pool")(x)])
    x = layers.Dropout(cfg.dropout, name="pool_dropout")(x)
    return keras.Model(inputs, _head(x), name="cnn_bilstm_pool")


def build_bigram_fasttext(cfg: TrainConfig) -> keras.Model:
    inputs = _inputs(cfg)
    x = layers.Embedding(input_dim(cfg), cfg.embedding_dim, mask_zero=True,
                         name="embedding")(inputs)  # the average skips the padding
    x = layers.GlobalAveragePooling1D(name="average")(x)
    return keras.Model(inputs, _head(x), name="bigram_fasttext")


def build_nbsvm_bigram(cfg: TrainConfig) -> keras.Model:
    """w . (r * x) + b through a sigmoid, x the review's binary features (distinct ids,
    padding 0 has r = 0): r, the naive-Bayes ratios, are fixed by :func:`prepare_model`."""
    inputs = _inputs(cfg)
    dim = input_dim(cfg)
    ratios = layers.Embedding(dim, 1, embeddings_initializer="zeros", trainable=False,
                              name="nb_ratios")(inputs)
    weights = layers.Embedding(dim, 1, embeddings_initializer="zeros", name="weights")(inputs)
    x = layers.Dot(axes=1, name="score")([ratios, weights])
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(1, activation=OUTPUT_ACTIVATION, kernel_initializer="ones",
                       name="output")(x)
    return keras.Model(inputs, out, name="nbsvm_bigram")


NB_ALPHA = 1.0  # NBSVM's smoothing count


def nb_ratios(x, y, dim: int, alpha: float = NB_ALPHA):
    """Log-count ratios r = log((p / |p|1) / (q / |q|1)), p = alpha + feature counts over the
    positive reviews, q over the negative ones (binary rows of distinct ids; 0 = padding)."""
    import numpy as np

    x, y = np.asarray(x), np.asarray(y).ravel() > 0.5
    p = alpha + np.bincount(x[y].ravel(), minlength=dim)[:dim].astype(np.float64)
    q = alpha + np.bincount(x[~y].ravel(), minlength=dim)[:dim].astype(np.float64)
    r = np.log((p / p.sum()) / (q / q.sum()))
    r[0] = 0.0
    return r.astype(np.float32)


def prepare_model(model: keras.Model, cfg: TrainConfig, x_train, y_train) -> None:
    """What a model takes from its training data before fit: NBSVM's ratios."""
    if cfg.architecture == "nbsvm-bigram":
        model.get_layer("nb_ratios").set_weights(
            [nb_ratios(x_train, y_train, input_dim(cfg))[:, None]])


BUILDERS: dict[str, Callable[[TrainConfig], keras.Model]] = {
    "lstm": build_lstm,
    "lstm-dropout": build_lstm_dropout,
    "cnn-lstm": build_cnn_lstm,
    "cnn-lstm-dropout": build_cnn_lstm_dropout,
    "bilstm": build_bilstm,
    "gru": build_gru,
    "stacked-lstm": build_stacked_lstm,
    "lstm-maxpool": build_lstm_maxpool,
    "lstm-maxpool-dropout": build_lstm_maxpool_dropout,
    "cnn-lstm-maxpool-dropout": build_cnn_lstm_maxpool_dropout,
    "cnn-bilstm-pool": build_cnn_bilstm_pool,
    "cnn-lstm-bigrams": build_cnn_lstm,
    "bigram-fasttext": build_bigram_fasttext,
    "nbsvm-bigram": build_nbsvm_bigram,
}
assert set(BUILDERS) == set(ARCHITECTURES), "every architecture needs a builder"


def build_model(cfg: TrainConfig) -> keras.Model:
    """The uncompiled model for ``cfg``."""
    return BUILDERS[cfg.architecture](cfg)


class LazyAdam(keras.optimizers.Adam):
    """Adam that moves only the embedding rows its batch looked up (TF Addons' LazyAdam,
    PyTorch's SparseAdam). An embedding's gradient is a tf.IndexedSlices (one slice per
    looked-up position); Keras's Adam makes it dense and updates every row's moments and
    weights at every step, so a 220,000 x 20 table costs as much per step as all its rows.
    Here the slices are summed per row and only those rows' moments and weights take Adam's
    step; the other rows keep their moments (their momentum does not move them on), so
    training differs from Adam's. Dense gradients (every other weight): Keras's Adam.
    TensorFlow backend."""

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        rows, slot = tf.unique(gradient.indices)
        g = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), slot,
                                         tf.shape(rows)[0])
        step = tf.cast(self.iterations + 1, dtype)
        alpha = (tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, dtype), step))
                 / (1 - tf.pow(tf.cast(self.beta_1, dtype), step)))
        i = self._get_variable_index(variable)
        m, v = self._momentums[i], self._velocities[i]
        m_rows = self.beta_1 * tf.gather(m.value, rows) + (1 - self.beta_1) * g
        v_rows = self.beta_2 * tf.gather(v.value, rows) + (1 - self.beta_2) * tf.square(g)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(
            alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    kwargs = {"learning_rate": cfg.learning_rate}
    if cfg.clipnorm:
        kwargs["clipnorm"] = cfg.clipnorm
    return {
        "adam": keras.optimizers.Adam,
        "lazy-adam": LazyAdam,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
        "adagrad": keras.optimizers.Adagrad,
        "nadam": keras.optimizers.Nadam,
    }[cfg.optimizer](**kwargs)


def compile_model(model: keras.Model, cfg: TrainConfig) -> keras.Model:
    """Adam + binary cross-entropy + accuracy, as in the tutorial."""
    model.compile(optimizer=make_optimizer(cfg), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def summary_text(model: keras.Model) -> str:
    """A plain-text ``model.summary()`` in the lab's one table format (core.shapes)."""
    rows = []
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            shape = "?"
        rows.append(LayerRow(layer.name, type(layer).__name__, shape, layer.count_params()))
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    return format_summary(model.name, rows, model.count_params(), trainable)
