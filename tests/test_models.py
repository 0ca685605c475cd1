"""Model registry: the seed's exact parameter counts, every architecture builds and runs."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import ARCHITECTURES, load_config, preset
from core.models import build_model, compile_model, summary_text


@pytest.mark.parametrize("name,params", [("seed-lstm", 213_301), ("seed-lstm-dropout", 213_301),
                                         ("seed-cnn-lstm", 216_405)])
def test_seed_models_have_the_tutorials_parameter_counts(name, params):
    model = build_model(preset(name))
    assert model.count_params() == params
    assert f"Total params: {params:,}" in summary_text(model)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_builds_compiles_and_predicts(arch):
    cfg = load_config({"architecture": arch, "top_words": 50, "maxlen": 12, "units": 3,
                       "embedding_dim": 4, "conv_filters": 2})
    model = compile_model(build_model(cfg), cfg)
    x = np.random.default_rng(0).integers(0, 50, size=(5, 12))
    p = np.asarray(model(x, training=False))
    assert p.shape == (5, 1) and np.all((p > 0) & (p < 1))
    assert model.optimizer.learning_rate.numpy() == pytest.approx(cfg.learning_rate)


def test_clipnorm_reaches_the_optimizer():
    cfg = load_config({"clipnorm": 1.0, "optimizer": "rmsprop", "maxlen": 8, "units": 2})
    model = compile_model(build_model(cfg), cfg)
    assert model.optimizer.clipnorm == 1.0
