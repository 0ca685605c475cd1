"""The one table of a training run's settings: each field's bounds, label, help and form
section. ``core.config`` validates against it, the Train form draws it (app_pages/views.py)
and the instructor's caps are checked within its ranges (core/classroom.py), so a field's
facts live here once. Types come from ``TrainConfig`` itself."""

from __future__ import annotations

from dataclasses import dataclass

MODEL, DATA, TRAINING = "Model", "Data", "Training"  # the Train form's sections


@dataclass(frozen=True)
class Field:
    name: str
    section: str  # MODEL / DATA / TRAINING, or "" (drawn on its own: architecture, name)
    label: str
    help: str
    low: float | None = None  # bounds, inclusive unless open
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    step: float | None = None  # float inputs: the form's step and display format
    fmt: str | None = None


_TABLE = (
    Field("architecture", "", "Architecture", "Which network to train."),
    Field("embedding_dim", MODEL, "Embedding size",
          "Length of the vector learned for each word.", 1, 1_024),
    Field("units", MODEL, "Recurrent units",
          "Size of the LSTM/GRU state: more units, more capacity and more time.", 1, 1_024),
    Field("dropout", MODEL, "Dropout rate",
          "Fraction of values zeroed during training, against overfitting (0 to <1).",
          0.0, 1.0, open_high=True, step=0.05, fmt="%.2f"),
    Field("conv_filters", MODEL, "Conv filters",
          "Number of n-gram detectors in the 1-D convolution.", 1, 1_024),
    Field("kernel_size", MODEL, "Kernel size", "Words each convolution filter looks at.", 1, 64),
    Field("pool_size", MODEL, "Pool size",
          "Max-pooling window: the sequence gets this many times shorter.", 1, 64),
    Field("bigrams", MODEL, "Bigrams kept",
          "The most frequent word pairs of the training reviews (seen twice or more) get "
          "their own index after the top words; others are ignored.", 0, 5_000_000),
    Field("top_words", DATA, "Vocabulary (top words)",
          "Only the most frequent words keep their own index; the rest become 2 (OOV).",
          4, 200_000),
    Field("maxlen", DATA, "Max review length (maxlen)",
          "Reviews are cut (at the front) or padded with 0 to this many tokens, "
          "the start token included.", 1, 5_000),
    Field("train_size", DATA, "Training reviews (0 = all)",
          "Train on the first N training reviews; 0 uses them all.", 0, 10_000_000),
    Field("test_size", DATA, "Test reviews (0 = all)",
          "Evaluate on the first N test reviews; 0 uses them all.", 0, 10_000_000),
    Field("validation_split", DATA, "Validation split",
          "Fraction of the training reviews held out to validate after each epoch "
          "(0 = no validation curve).", 0.0, 0.5, open_high=True, step=0.05, fmt="%.2f"),
    Field("optimizer", TRAINING, "Optimizer", "The update rule; the tutorial uses Adam."),
    Field("learning_rate", TRAINING, "Learning rate",
          "Step size of the optimizer (Adam's default is 0.001).", 0.0, 1000.0,
          open_low=True, step=0.0001, fmt="%.4f"),
    Field("clipnorm", TRAINING, "Gradient clip norm (0 = off)",
          "Rescale gradients whose norm exceeds this; 0 disables clipping.", 0.0, 1000.0,
          step=0.1, fmt="%.2f"),
    Field("batch_size", TRAINING, "Batch size", "Reviews per gradient step.", 1, 8_192),
    Field("epochs", TRAINING, "Epochs", "Passes over the training reviews.", 1, 200),
    Field("seed", TRAINING, "Random seed",
          "Fixes weight initialisation and shuffling, for repeatable runs.", 0, 2**31 - 1),
    Field("fast", TRAINING, "Fast mode",
          "Skip the shared padding exactly where the architecture allows it; "
          "otherwise Keras trains on padded arrays."),
    Field("name", "", "Run name",
          "Shown in tables and charts; defaults to architecture, epochs and batch size."),
)
FIELDS: dict[str, Field] = {f.name: f for f in _TABLE}


def in_section(section: str) -> tuple[str, ...]:
    """The section's fields in the form's order."""
    return tuple(f.name for f in _TABLE if f.section == section)


def allowed(f: Field) -> str:
    """The field's range as the form's help shows it, e.g. "Allowed: 1 to 1,024."."""
    if f.low is None:
        return ""
    lo = "(" if f.open_low else "["
    hi = ")" if f.open_high else "]"
    if f.step is None:  # a whole number
        return f"Allowed: {int(f.low):,} to {int(f.high):,}."
    return f"Allowed: {lo}{f.low:g}, {f.high:g}{hi}."
