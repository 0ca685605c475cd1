"""Exact fast training and prediction that skip the shared padding prefix (issue 4).

Placeholder until the exact implementation lands: every configuration trains the plain way.
"""

from __future__ import annotations

from core.config import TrainConfig


def applies(cfg: TrainConfig) -> tuple[bool, str]:
    """(fast mode used, reason shown to the user)."""
    if not cfg.fast:
        return False, "fast=false: plain Keras fit on padded arrays"
    return False, "exact fast mode is not available yet: plain Keras fit on padded arrays"


def fit(model, cfg, x_train, y_train, len_train, val, callbacks):  # pragma: no cover
    raise NotImplementedError("exact fast mode is not available yet")


class FastPredictor:
    @classmethod
    def try_build(cls, model, cfg):
        return None
