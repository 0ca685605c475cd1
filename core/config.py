"""One training configuration, its validation and the seed tutorial's presets.

Every hyperparameter entered anywhere (CLI ``--set``, the Train page, a JSON file) goes
through :func:`config_from_dict` and :func:`validate`, so the same value gets the same
message everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from core.fields import FIELDS

# Architecture names -> the hyperparameters each one reads (besides the common ones).
# Kept here rather than in models.py so validation needs no TensorFlow import.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "lstm": {
        "label": "LSTM",
        "help": "Embedding → LSTM → sigmoid: the tutorial's first model.",
        "uses": ("embedding_dim", "units"),
    },
    "lstm-dropout": {
        "label": "LSTM + Dropout",
        "help": "Dropout on the embeddings and on the LSTM output, against overfitting.",
        "uses": ("embedding_dim", "units", "dropout"),
    },
    "cnn-lstm": {
        "label": "CNN + LSTM",
        "help": "A 1-D convolution finds word n-gram features, pooling halves the sequence, "
        "then the LSTM reads it.",
        "uses": ("embedding_dim", "units", "conv_filters", "kernel_size", "pool_size"),
    },
    "cnn-lstm-dropout": {
        "label": "CNN + LSTM + Dropout",
        "help": "The CNN + LSTM with dropout after pooling and after the LSTM "
        "(the tutorial's own suggestion).",
        "uses": ("embedding_dim", "units", "dropout", "conv_filters", "kernel_size", "pool_size"),
    },
    "bilstm": {
        "label": "Bidirectional LSTM",
        "help": "Two LSTMs, one reading forwards and one backwards; their final states "
        "are joined.",
        "uses": ("embedding_dim", "units"),
    },
    "gru": {
        "label": "GRU",
        "help": "A gated recurrent unit: like an LSTM with fewer gates and parameters.",
        "uses": ("embedding_dim", "units"),
    },
    "stacked-lstm": {
        "label": "Stacked LSTM",
        "help": "Two LSTM layers, the second reading the first's output sequence.",
        "uses": ("embedding_dim", "units"),
    },
    "lstm-maxpool": {
        "label": "LSTM + max pooling",
        "help": "The LSTM's state after every word, max-pooled over the review (each unit's "
        "strongest signal wherever it occurs) → sigmoid, instead of the last state alone.",
        "uses": ("embedding_dim", "units"),
    },
    "lstm-maxpool-dropout": {
        "label": "LSTM + max pooling + Dropout",
        "help": "The max-pooled LSTM with dropout on the pooled states, against overfitting "
        "(after the recurrence, so fast mode stays exact at any rate).",
        "uses": ("embedding_dim", "units", "dropout"),
    },
    "cnn-lstm-maxpool-dropout": {
        "label": "CNN + LSTM + max pooling + Dropout",
        "help": "The CNN + LSTM with the LSTM's states max-pooled over the review and dropout "
        "on the pooled states (after the recurrence: fast mode stays exact).",
        "uses": ("embedding_dim", "units", "dropout", "conv_filters", "kernel_size",
                 "pool_size"),
    },
    "cnn-bilstm-pool": {
        "label": "CNN + bidirectional LSTM + mean/max pooling",
        "help": "Dropout of whole embedding channels, the CNN front end, then an LSTM "
        "reading forwards and one reading backwards; their states after every step are "
        "averaged and max-pooled over the review, then dropout (the same rate). No exact "
        "fast mode (the backward LSTM reads the padding last).",
        "uses": ("embedding_dim", "units", "dropout", "conv_filters", "kernel_size",
                 "pool_size"),
    },
    # Beyond the tutorial: bag-of-n-grams baselines. Their bigrams are extra vocabulary ids
    # (core.text, learned from the training reviews and saved with the run's encoder).
    "bigram-fasttext": {
        "label": "fastText (uni + bigrams)",
        "help": "Averaged embeddings of the review's distinct words and most frequent "
        "bigrams → sigmoid (Keras's imdb_fasttext example, each n-gram counted once per "
        "review): no recurrence, word order only through bigrams.",
        "uses": ("embedding_dim", "bigrams"),
        # Distinct ids (a binary bag, as NBSVM reads): 3-seed validation mean 91.75 % against
        # 91.03 % for Keras's rows of every occurrence ("append"; README, validation notes).
        "ngrams": "set",
    },
    "cnn-lstm-bigrams": {
        "label": "CNN + LSTM over words and bigrams",
        "help": "The CNN + LSTM reading the review's words with each of its most frequent "
        "bigrams right after the bigram's second word (reading order): a recurrent model "
        "whose vocabulary includes word pairs.",
        "uses": ("embedding_dim", "units", "conv_filters", "kernel_size", "pool_size",
                 "bigrams"),
        "ngrams": "inline",
    },
    "nbsvm-bigram": {
        "label": "NBSVM (uni + bigrams)",
        "help": "Binary word and bigram features scaled by their naive-Bayes log-count "
        "ratios (from the training reviews) → one sigmoid unit (Wang & Manning's NBSVM, "
        "trained as logistic regression).",
        "uses": ("bigrams",),
        "ngrams": "set",
    },
}


def input_dim(cfg: TrainConfig) -> int:
    """Distinct input ids the embedding reads: the word codes below top_words, then one per
    kept bigram for an architecture that reads n-grams (core.text)."""
    reads_ngrams = ARCHITECTURES.get(cfg.architecture, {}).get("ngrams")
    return cfg.top_words + (cfg.bigrams if reads_ngrams else 0)


# Architectures whose recurrence runs twice per step, forwards and backwards (the backward
# LSTM reads a review's padding last: no exact fast mode; twice the recurrent cost).
BIDIRECTIONAL = ("bilstm", "cnn-bilstm-pool")

OPTIMIZERS = ("adam", "lazy-adam", "rmsprop", "sgd", "adagrad", "nadam")

# Hyperparameters every architecture uses.
COMMON_FIELDS = (
    "top_words", "maxlen", "optimizer", "learning_rate", "clipnorm", "batch_size", "epochs",
    "validation_split", "train_size", "test_size", "seed", "fast",
)

NAME_MAX_CHARS = 80


@dataclass(frozen=True)
class Limits:
    """The instructor's limits for students (core/classroom.py keeps them): the
    architectures allowed and the largest value of capped integer fields."""

    architectures: tuple[str, ...] = ()  # empty = all
    caps: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved with the run as JSON."""

    architecture: str = "lstm"
    top_words: int = 5000
    maxlen: int = 500
    embedding_dim: int = 32
    units: int = 100
    dropout: float = 0.2
    conv_filters: int = 32
    kernel_size: int = 3
    pool_size: int = 2
    bigrams: int = 0  # n-gram architectures: most frequent training bigrams kept as ids
    optimizer: str = "adam"
    learning_rate: float = 0.001
    clipnorm: float = 0.0  # 0 = no gradient clipping
    batch_size: int = 64
    epochs: int = 2
    validation_split: float = 0.0
    train_size: int = 0  # 0 = the whole training set
    test_size: int = 0  # 0 = the whole test set
    seed: int = 7
    name: str = ""
    fast: bool = True  # exact padding-skipping training where the architecture allows it
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return load_config(json.loads(text))

    def display_name(self) -> str:
        return self.name or f"{self.architecture} e{self.epochs} b{self.batch_size}"

    def uses(self) -> tuple[str, ...]:
        arch = ARCHITECTURES.get(self.architecture)
        return COMMON_FIELDS + (arch["uses"] if arch else ())


FIELD_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "str": str, "bool": bool}.get(str(f.type), str)
    for f in dataclasses.fields(TrainConfig)
    if f.name != "extra"
}
assert set(FIELDS) == set(FIELD_TYPES), "every setting needs its row in core/fields.py"
# Integer bounds, inclusive: (low, high), from the one field table.
INT_RANGES: dict[str, tuple[int, int]] = {
    name: (int(f.low), int(f.high)) for name, f in FIELDS.items()
    if FIELD_TYPES[name] is int and f.low is not None}


class ConfigError(ValueError):
    """Raised with every problem found, one line each."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def _coerce(name: str, value: Any) -> Any:
    """Turn CLI/form text into the field's type; leave it as is when it does not parse,
    so that validate() reports it with the field's name."""
    kind = FIELD_TYPES[name]
    if isinstance(value, str):
        text = value.strip()
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            return value
        if kind is int:
            try:
                return int(text)
            except ValueError:
                try:
                    as_float = float(text)
                except ValueError:
                    return value
                return int(as_float) if as_float.is_integer() else as_float
        if kind is float:
            try:
                return float(text)
            except ValueError:
                return value
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def load_config(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Build a config from loose values (strings allowed). Unknown keys are kept in
    ``extra`` so validate() can name them instead of silently dropping them."""
    cfg = dataclasses.replace(base) if base else TrainConfig()
    cfg.extra = dict(cfg.extra)
    for key, value in values.items():
        if key in FIELD_TYPES:
            setattr(cfg, key, _coerce(key, value))
        else:
            cfg.extra[key] = value
    return cfg


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["units=50", "dropout=0.3"]`` -> dict; a pair without ``=`` is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError([f"--set expects key=value, got {pair!r}"])
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def validate(cfg: TrainConfig, n_train: int | None = None, n_test: int | None = None,
             limits: Limits | None = None) -> list[str]:
    """Every problem with ``cfg``, each naming the field, the value and the allowed range.

    ``n_train``/``n_test`` are the sizes of the data in use; when given, subsets and the
    batch size are checked against them. ``limits`` are the class's caps for a student.
    """
    errors: list[str] = []
    for key in cfg.extra:
        errors.append(f"{key}: unknown setting (known: {', '.join(FIELD_TYPES)})")

    if cfg.architecture not in ARCHITECTURES:
        errors.append(
            f"architecture: unknown value {cfg.architecture!r} "
            f"(allowed: {', '.join(ARCHITECTURES)})"
        )
    if cfg.optimizer not in OPTIMIZERS:
        errors.append(f"optimizer: unknown value {cfg.optimizer!r} (allowed: {', '.join(OPTIMIZERS)})")

    for name, (low, high) in INT_RANGES.items():
        value = getattr(cfg, name)
        if not _is_int(value):
            errors.append(f"{name}: must be a whole number from {low} to {high}, got {value!r}")
        elif not low <= value <= high:
            errors.append(f"{name}: {value} is out of range (allowed {low} to {high})")

    def check_float(name: str, low: float, high: float, low_open: bool, high_open: bool) -> None:
        value = getattr(cfg, name)
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        allowed = f"allowed {lo}{low:g}, {high:g}{hi}"
        if not _is_number(value):
            errors.append(f"{name}: must be a finite number, {allowed}; got {value!r}")
            return
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            errors.append(f"{name}: {value:g} is out of range ({allowed})")

    for name, f in FIELDS.items():
        if FIELD_TYPES[name] is float and f.low is not None:
            check_float(name, f.low, f.high, f.open_low, f.open_high)

    if not isinstance(cfg.fast, bool):
        errors.append(f"fast: must be true or false, got {cfg.fast!r}")
    if not isinstance(cfg.name, str):
        errors.append(f"name: must be text, got {cfg.name!r}")
    elif len(cfg.name) > NAME_MAX_CHARS:
        errors.append(f"name: {len(cfg.name)} characters is too long (allowed up to {NAME_MAX_CHARS})")
    elif any(not ch.isprintable() for ch in cfg.name):
        errors.append("name: must not contain control characters")

    if errors:
        return errors

    # Cross-field checks, only once every field has the right type.
    if cfg.architecture.startswith("cnn"):
        if cfg.kernel_size > cfg.maxlen:
            errors.append(f"kernel_size: {cfg.kernel_size} is longer than maxlen {cfg.maxlen} "
                          f"(allowed 1 to {cfg.maxlen})")
        if cfg.pool_size > cfg.maxlen:
            errors.append(f"pool_size: {cfg.pool_size} is longer than maxlen {cfg.maxlen} "
                          f"(allowed 1 to {cfg.maxlen})")
    if n_train is not None:
        if cfg.train_size > n_train:
            errors.append(f"train_size: {cfg.train_size} is more than the {n_train} training "
                          f"reviews available (allowed 0 = all, or 1 to {n_train})")
        else:
            usable = cfg.train_size or n_train
            n_fit = usable - int(round(usable * cfg.validation_split))
            if cfg.validation_split > 0 and int(round(usable * cfg.validation_split)) < 1:
                errors.append(f"validation_split: {cfg.validation_split:g} of {usable} reviews "
                              "leaves no validation review (use 0 or a larger subset)")
            if cfg.batch_size > n_fit:
                errors.append(f"batch_size: {cfg.batch_size} is larger than the {n_fit} reviews "
                              f"left for training (allowed 1 to {n_fit})")
    if n_test is not None and cfg.test_size > n_test:
        errors.append(f"test_size: {cfg.test_size} is more than the {n_test} test reviews "
                      f"available (allowed 0 = all, or 1 to {n_test})")
    if limits is not None:
        errors += _limit_errors(cfg, n_train, limits)
    return errors


def _limit_errors(cfg: TrainConfig, n_train: int | None, limits: Limits) -> list[str]:
    errors = []
    if limits.architectures and cfg.architecture not in limits.architectures:
        errors.append(f"architecture: {cfg.architecture} is not allowed in this class "
                      f"(the instructor allows: {', '.join(limits.architectures)})")
    for name, cap in limits.caps.items():
        value = getattr(cfg, name)
        if name == "train_size" and value == 0:
            if n_train is None or n_train > cap:
                errors.append(f"train_size: 0 (all {n_train or 'the'} training reviews) is over "
                              f"the class cap of {cap} set by the instructor (allowed 1 to {cap})")
        elif value > cap:
            errors.append(f"{name}: {value} is over the class cap of {cap} set by the "
                          f"instructor (allowed up to {cap})")
    return errors


GROUP_SEEDS = (2, 10)  # runs in one seed group ("Reproduce over N seeds"), inclusive


def validate_seeds(first_seed: Any, n: Any) -> list[str]:
    """Problems with a seed group of ``n`` runs, seeds ``first_seed`` .. ``first_seed + n - 1``
    (``validate`` checks the rest of the configuration, the first seed included)."""
    low, high = GROUP_SEEDS
    if not _is_int(n):
        return [f"seeds: the number of seeds must be a whole number from {low} to {high}, "
                f"got {n!r}"]
    if not low <= n <= high:
        return [f"seeds: {n} is out of range (allowed {low} to {high} seeds per group)"]
    top = INT_RANGES["seed"][1]
    if _is_int(first_seed) and first_seed + n - 1 > top:
        return [f"seeds: {n} seeds from seed {first_seed} pass the largest seed {top} "
                f"(start at {top - n + 1} or lower)"]
    return []


def check(cfg: TrainConfig, n_train: int | None = None, n_test: int | None = None,
          limits: Limits | None = None) -> TrainConfig:
    """validate() that raises: for callers that cannot go on with a bad config."""
    errors = validate(cfg, n_train, n_test, limits)
    if errors:
        raise ConfigError(errors)
    return cfg


# The seed tutorial's three models, with its exact settings (Adam, batch 64, top 5,000
# words, reviews cut/padded to 500 at the front, all 25,000 reviews for training).
PRESETS: dict[str, dict[str, Any]] = {
    "seed-lstm": {"architecture": "lstm", "epochs": 2, "name": "seed LSTM"},
    "seed-lstm-dropout": {"architecture": "lstm-dropout", "dropout": 0.2, "epochs": 2,
                          "name": "seed LSTM + Dropout"},
    "seed-cnn-lstm": {"architecture": "cnn-lstm", "epochs": 3, "name": "seed CNN + LSTM"},
}

# Beyond the tutorial: the best recurrent model found and n-gram baselines, their
# hyperparameters chosen on a validation split of the training reviews (the last 20 %, or
# for lstm-best each label's highest 20 % of file ids; bench/ngram_presets.py), never on
# the test set; 3-seed test results in BENCHMARKS.md
# (bench/preset_seeds.py) and README. Not among PRESETS, which are the tutorial's
# (reproduce, reference accuracies).
BEYOND_PRESETS: dict[str, dict[str, Any]] = {
    "lstm-best": {"architecture": "cnn-lstm-bigrams", "top_words": 5000, "bigrams": 40000,
                  "maxlen": 1000, "embedding_dim": 64, "learning_rate": 0.0003, "epochs": 2,
                  "name": "best recurrent (CNN + LSTM, words and bigrams)"},
    "bigram-fasttext": {"architecture": "bigram-fasttext", "top_words": 20000, "maxlen": 1000,
                        "embedding_dim": 20, "bigrams": 200000, "learning_rate": 0.003,
                        "batch_size": 32, "epochs": 3, "name": "fastText uni+bigrams"},
    "nbsvm-bigram": {"architecture": "nbsvm-bigram", "top_words": 20000, "maxlen": 1000,
                     "bigrams": 400000, "batch_size": 32, "epochs": 3,
                     "name": "NBSVM uni+bigrams"},
}
ALL_PRESETS: dict[str, dict[str, Any]] = {**PRESETS, **BEYOND_PRESETS}

# Test accuracy the tutorial reported for each preset, in percent.
REPORTED_ACCURACY: dict[str, float] = {
    "seed-lstm": 87.48,
    "seed-lstm-dropout": 87.56,
    "seed-cnn-lstm": 88.72,
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A preset's config; unknown names raise ConfigError listing the known ones."""
    if name not in ALL_PRESETS:
        raise ConfigError([f"preset: unknown value {name!r} (allowed: {', '.join(ALL_PRESETS)})"])
    return load_config({**ALL_PRESETS[name], **overrides})


def preset_of(cfg: TrainConfig) -> str | None:
    """The preset a config equals (ignoring name and seed), for reference lines."""
    mine = cfg.to_dict()
    for pname in PRESETS:
        ref = preset(pname).to_dict()
        keys = [k for k in ref if k not in ("name", "seed", "fast")]
        if all(mine[k] == ref[k] for k in keys):
            return pname
    return None
