"""Exact fast training and prediction that skip the shared padding prefix (issue 4).

With 'pre' padding every row is ``k`` pad codes followed by the review's own codes, and a
recurrent layer's state after ``k`` pad codes is the same for every review. So instead of
running all ``maxlen`` steps for every review:

- the shared prefix is computed once per batch, at batch size 1, from the model's own
  weights (with the gradient flowing through it into embedding row 0, the convolution and
  the recurrent weights);
- reviews are bucketed by length, and a batch whose longest review needs ``S`` steps starts
  the recurrence from the prefix state at step ``steps - S`` and runs only ``S`` steps.

This is the same function as the padded model: same outputs and the same gradients, up to
float32 rounding (tests/test_fast.py checks 1e-5). The saved model is the ordinary Keras
model; nothing here is stored in it.

What differs from ``model.fit`` is the batch composition (reviews of similar length train
together; batch order is shuffled per epoch) and, with Keras 3's sparse Adam/RMSprop,
the update of embedding row 0: those optimizers square each IndexedSlices slice on its
own, and plain fit has one slice per review and pad position where this has one per
shared prefix position.

Training runs as a TensorFlow graph with hand-written LSTM/GRU gradients. LSTM layers use
the native kernels of core/native where they build (one op per layer and direction:
input projection, time loop and weight gradients); otherwise, and for GRU, the time loops
are XLA-compiled and the input projection ``x @ W`` and weight gradients ``h^T dz`` are
single large TensorFlow matmuls around them. Both compute the same function (the tests
run both).

Prediction (:class:`FastPredictor`) precomputes the pad states for every prefix length
once, in numpy, and runs only each row's own tokens.

The package: ``plan`` (whether fast mode applies; a model read as a Plan), ``recurrences``
(the XLA time loops and the layers' custom gradients, native ones included), ``forward``
(the TensorFlow forward pass), ``engine`` (the compiled steps; fit, predict,
batch_gradients), ``update`` (a train step's gradients and Adam step), ``cells`` and
``predictor`` (FastPredictor, numpy). Importing it does not
import TensorFlow.
"""

from __future__ import annotations

from typing import Any

from core.fast.cells import LSTM_ORDER, _Layer, _one_blas_thread, _predictor_weights
from core.fast.engine import (
    _ENGINES,
    SHUFFLE_SALT,
    _batches,
    _Engine,
    _engine_for,
    _evaluate,
    _length_batches,
    batch_gradients,
    fit,
    loops,
    predict,
    predicts,
    trains_native,
)
from core.fast.forward import LOOP_SPLIT, _candidate_scale
from core.fast.plan import (
    DROPOUT_BEFORE_RECURRENCE,
    EXACT,
    STEP_GRID,
    WINDOW_COUNT,
    WINDOW_MIN,
    Plan,
    applies,
    make_plan,
)
from core.fast.predictor import PROJECT_ALL_BYTES, FastPredictor


def _recurrences(with_native: bool = False) -> dict[Any, Any]:
    """core.fast.recurrences.recurrences (imported here on first use: it imports
    TensorFlow)."""
    from core.fast.recurrences import recurrences

    return recurrences(with_native)


__all__ = [
    "DROPOUT_BEFORE_RECURRENCE", "EXACT", "LOOP_SPLIT", "LSTM_ORDER", "PROJECT_ALL_BYTES",
    "SHUFFLE_SALT", "STEP_GRID", "WINDOW_COUNT", "WINDOW_MIN", "FastPredictor", "Plan",
    "applies", "batch_gradients", "fit", "loops", "make_plan", "predict", "predicts",
    "trains_native",
    "_ENGINES", "_Engine", "_Layer", "_batches", "_candidate_scale", "_engine_for",
    "_evaluate", "_length_batches", "_one_blas_thread", "_predictor_weights", "_recurrences",
]
