"""Each architecture's layers, output shapes and parameter counts, in plain Python.

The web server shows a model's size and summary before launch without importing
TensorFlow (Streamlit would then run ``keras.backend.clear_session()`` after every rerun of
every session). These formulas mirror ``core.models``' builders layer by layer; the tests
compare them with Keras's own ``count_params()`` and output shapes over a grid of
hyperparameters for every architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.config import ARCHITECTURES, TrainConfig, input_dim


@dataclass(frozen=True)
class LayerRow:
    name: str  # the Keras layer name given in core.models
    kind: str  # the Keras class name
    shape: tuple  # output shape, batch dimension None
    params: int
    trainable: bool = True


def _lstm(n_in: int, units: int) -> int:
    return 4 * (units * (n_in + units) + units)


def _gru(n_in: int, units: int) -> int:  # Keras 3: reset_after=True, two bias vectors
    return 3 * (units * (n_in + units) + 2 * units)


def _start(cfg: TrainConfig) -> list[LayerRow]:
    return [LayerRow("codes", "InputLayer", (None, cfg.maxlen), 0),
            LayerRow("embedding", "Embedding", (None, cfg.maxlen, cfg.embedding_dim),
                     input_dim(cfg) * cfg.embedding_dim)]


def _dropout(rows: list[LayerRow], name: str) -> None:
    rows.append(LayerRow(name, "Dropout", rows[-1].shape, 0))


def _conv_pool(cfg: TrainConfig, rows: list[LayerRow]) -> None:
    n_in = rows[-1].shape[-1]
    rows.append(LayerRow("conv", "Conv1D", (None, cfg.maxlen, cfg.conv_filters),
                         cfg.conv_filters * (cfg.kernel_size * n_in + 1)))
    pooled = (cfg.maxlen - cfg.pool_size) // cfg.pool_size + 1  # "valid", stride = pool
    rows.append(LayerRow("pool", "MaxPooling1D", (None, pooled, cfg.conv_filters), 0))


def _recurrent(rows: list[LayerRow], name: str, kind: str, units: int,
               sequences: bool = False) -> None:
    shape = rows[-1].shape
    params = (_gru if kind == "GRU" else _lstm)(shape[-1], units)
    out = (None, shape[1], units) if sequences else (None, units)
    rows.append(LayerRow(name, kind, out, params))


def _head(rows: list[LayerRow]) -> list[LayerRow]:
    return [*rows, LayerRow("output", "Dense", (None, 1), rows[-1].shape[-1] + 1)]


def _lstm_dropout(cfg: TrainConfig) -> list[LayerRow]:
    rows = _start(cfg)
    _dropout(rows, "embedding_dropout")
    _recurrent(rows, "lstm", "LSTM", cfg.units)
    _dropout(rows, "lstm_dropout")
    return _head(rows)


def _cnn_lstm(cfg: TrainConfig, dropout: bool) -> list[LayerRow]:
    rows = _start(cfg)
    _conv_pool(cfg, rows)
    if dropout:
        _dropout(rows, "pool_dropout")
    _recurrent(rows, "lstm", "LSTM", cfg.units)
    if dropout:
        _dropout(rows, "lstm_dropout")
    return _head(rows)


def _single(kind: str) -> Callable[[TrainConfig], list[LayerRow]]:
    def rows_of(cfg: TrainConfig) -> list[LayerRow]:
        rows = _start(cfg)
        _recurrent(rows, kind.lower(), kind, cfg.units)
        return _head(rows)
    return rows_of


def _bilstm(cfg: TrainConfig) -> list[LayerRow]:
    rows = _start(cfg)
    n_in = rows[-1].shape[-1]
    rows.append(LayerRow("bilstm", "Bidirectional", (None, 2 * cfg.units),
                         2 * _lstm(n_in, cfg.units)))
    return _head(rows)


def _stacked(cfg: TrainConfig) -> list[LayerRow]:
    rows = _start(cfg)
    _recurrent(rows, "lstm_1", "LSTM", cfg.units, sequences=True)
    _recurrent(rows, "lstm_2", "LSTM", cfg.units)
    return _head(rows)


def _lstm_maxpool(cfg: TrainConfig, dropout: bool = False, conv: bool = False
                  ) -> list[LayerRow]:
    rows = _start(cfg)
    if conv:
        _conv_pool(cfg, rows)
    _recurrent(rows, "lstm", "LSTM", cfg.units, sequences=True)
    rows.append(LayerRow("max_pool", "GlobalMaxPooling1D", (None, cfg.units), 0))
    if dropout:
        _dropout(rows, "pool_dropout")
    return _head(rows)


def _cnn_bilstm_pool(cfg: TrainConfig) -> list[LayerRow]:
    rows = _start(cfg)
    rows.append(LayerRow("embedding_dropout", "SpatialDropout1D", rows[-1].shape, 0))
    _conv_pool(cfg, rows)
    steps, n_in = rows[-1].shape[1], rows[-1].shape[-1]
    rows.append(LayerRow("bilstm", "Bidirectional", (None, steps, 2 * cfg.units),
                         2 * _lstm(n_in, cfg.units)))
    for name, kind in (("mean_pool", "GlobalAveragePooling1D"),
                       ("max_pool", "GlobalMaxPooling1D")):
        rows.append(LayerRow(name, kind, (None, 2 * cfg.units), 0))
    rows.append(LayerRow("mean_max", "Concatenate", (None, 4 * cfg.units), 0))
    _dropout(rows, "pool_dropout")
    return _head(rows)


def _bigram_fasttext(cfg: TrainConfig) -> list[LayerRow]:
    dim = input_dim(cfg)
    rows = [LayerRow("codes", "InputLayer", (None, cfg.maxlen), 0),
            LayerRow("embedding", "Embedding", (None, cfg.maxlen, cfg.embedding_dim),
                     dim * cfg.embedding_dim),
            LayerRow("average", "GlobalAveragePooling1D", (None, cfg.embedding_dim), 0)]
    return _head(rows)


def _nbsvm_bigram(cfg: TrainConfig) -> list[LayerRow]:
    dim = input_dim(cfg)
    return [LayerRow("codes", "InputLayer", (None, cfg.maxlen), 0),
            LayerRow("nb_ratios", "Embedding", (None, cfg.maxlen, 1), dim, trainable=False),
            LayerRow("weights", "Embedding", (None, cfg.maxlen, 1), dim),
            LayerRow("score", "Dot", (None, 1, 1), 0),
            LayerRow("flatten", "Flatten", (None, 1), 0),
            LayerRow("output", "Dense", (None, 1), 2)]


# name -> (Keras model name, layer rows); one entry per builder in core.models.
LAYERS: dict[str, tuple[str, Callable[[TrainConfig], list[LayerRow]]]] = {
    "lstm": ("lstm", _single("LSTM")),
    "lstm-dropout": ("lstm_dropout", _lstm_dropout),
    "cnn-lstm": ("cnn_lstm", lambda cfg: _cnn_lstm(cfg, dropout=False)),
    "cnn-lstm-dropout": ("cnn_lstm_dropout", lambda cfg: _cnn_lstm(cfg, dropout=True)),
    "bilstm": ("bilstm", _bilstm),
    "gru": ("gru", _single("GRU")),
    "stacked-lstm": ("stacked_lstm", _stacked),
    "lstm-maxpool": ("lstm_maxpool", _lstm_maxpool),
    "lstm-maxpool-dropout": ("lstm_maxpool_dropout",
                             lambda cfg: _lstm_maxpool(cfg, dropout=True)),
    "cnn-lstm-maxpool-dropout": ("cnn_lstm_maxpool_dropout",
                                 lambda cfg: _lstm_maxpool(cfg, dropout=True, conv=True)),
    "cnn-bilstm-pool": ("cnn_bilstm_pool", _cnn_bilstm_pool),
    "cnn-lstm-bigrams": ("cnn_lstm_bigrams", lambda cfg: _cnn_lstm(cfg, dropout=False)),
    "bigram-fasttext": ("bigram_fasttext", _bigram_fasttext),
    "nbsvm-bigram": ("nbsvm_bigram", _nbsvm_bigram),
}
assert set(LAYERS) == set(ARCHITECTURES), "every architecture needs its layer table"


def layers_of(cfg: TrainConfig) -> list[LayerRow]:
    return LAYERS[cfg.architecture][1](cfg)


def count_params(cfg: TrainConfig) -> int:
    """Equal to ``build_model(cfg).count_params()``, without building it."""
    return sum(row.params for row in layers_of(cfg))


def summary(cfg: TrainConfig) -> str:
    """Equal to ``core.models.summary_text(build_model(cfg))``, without building it."""
    rows = layers_of(cfg)
    total = sum(row.params for row in rows)
    trainable = sum(row.params for row in rows if row.trainable)
    return format_summary(LAYERS[cfg.architecture][0], rows, total, trainable)


def format_summary(model_name: str, rows: list[LayerRow], total: int, trainable: int) -> str:
    """A plain-text table (layer, type, output shape, parameters): Keras's own summary
    renders through rich at the terminal's width, which cuts columns off in a page."""
    table = [("Layer (type)", "Output shape", "Params")]
    table += [(f"{r.name} ({r.kind})", str(r.shape), f"{r.params:,}") for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    line = "-" * (sum(widths) + 4)
    out = [f'Model: "{model_name}"', line]
    for j, r in enumerate(table):
        out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}")
        if j == 0:
            out.append(line)
    out += [line, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}"]
    return "\n".join(out)
