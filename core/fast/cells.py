"""The predictor's recurrent layers in numpy: weights laid out for one tanh per step, the
per-step update in place, and single-threaded BLAS while they run."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

# Predictor weight layout: LSTM gate columns reordered to [i, f, o, g] (GRU stays [z, r, h])
# and the sigmoid-gate columns scaled by 1/2 (exact), so one tanh serves every gate:
# sigmoid(x) = 0.5 * tanh(x / 2) + 0.5.
LSTM_ORDER = (0, 1, 3, 2)


@functools.cache
def _openblas_threads() -> tuple[Any, Any] | None:
    """(get, set) for the thread count of numpy's bundled OpenBLAS, or None."""
    import ctypes
    import glob
    import os

    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")
    for path in glob.glob(libs):
        try:
            lib = ctypes.CDLL(path)  # the copy numpy already loaded
        except OSError:
            continue
        for name in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads64_",
                     "openblas_{}_num_threads"):
            get = getattr(lib, name.format("get"), None)
            put = getattr(lib, name.format("set"), None)
            if get is not None and put is not None:
                return get, put
    return None


@contextlib.contextmanager
def _one_blas_thread():
    """Single-threaded BLAS for the per-step matmuls: next to TensorFlow's thread pools
    OpenBLAS's spinning worker threads make a small matmul 50x slower on few cores."""
    blas = _openblas_threads()
    if blas is None:
        yield
        return
    get, put = blas
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)


def _predictor_weights(kind: str, w) -> np.ndarray:
    """Reorder/scale the last axis of a Keras LSTM/GRU kernel or bias for _Layer."""
    w = np.asarray(w, np.float32)
    blocks = np.split(w, 4 if kind == "lstm" else 3, axis=-1)
    if kind == "lstm":
        blocks = [blocks[j] for j in LSTM_ORDER]
    n_sigmoid = 3 if kind == "lstm" else 2
    return np.concatenate([b * 0.5 if j < n_sigmoid else b for j, b in enumerate(blocks)], -1)


@dataclass
class _Layer:
    """One recurrent layer's numpy weights (see _predictor_weights) and pad states."""

    kind: str
    units: int
    kernel: np.ndarray
    bias: np.ndarray  # input-side bias (LSTM: the bias; GRU: input bias)
    rk: np.ndarray
    brec: np.ndarray | None  # GRU recurrent bias
    pad_h: np.ndarray = None  # (steps + 1, units): state after k pad steps
    pad_c: np.ndarray = None
    table: np.ndarray | None = None  # first layer without conv: embedding @ kernel + bias

    @classmethod
    def of(cls, kind: str, layer) -> _Layer:
        """A Keras LSTM/GRU layer's weights in the predictor's layout."""
        cell = layer.cell
        bias = np.asarray(cell.bias, np.float32)
        b_in, b_rec = (bias, None) if kind == "lstm" else (bias[0], bias[1])
        return cls(kind, cell.units, _predictor_weights(kind, cell.kernel),
                   _predictor_weights(kind, b_in), _predictor_weights(kind, cell.recurrent_kernel),
                   None if b_rec is None else _predictor_weights(kind, b_rec))

    def stepper(self, h: np.ndarray, c: np.ndarray | None, z: np.ndarray, m: np.ndarray):
        """A function ``step(xw)`` advancing rows h (and c) in place by one step; its
        views of the scratch rows z, m are made once (Python overhead dominates at n=1)."""
        if self.kind == "lstm":
            return self._lstm_stepper(h, c, z)
        return self._gru_stepper(h, z, m)

    def _lstm_stepper(self, h: np.ndarray, c: np.ndarray, z: np.ndarray):
        u, rk = self.units, self.rk
        add, mul, tanh = np.add, np.multiply, np.tanh
        gates = z[:, : 3 * u]
        i, f, o, g = (z[:, j * u: (j + 1) * u] for j in range(4))

        def step(xw: np.ndarray) -> None:
            np.matmul(h, rk, out=z)
            add(z, xw, out=z)
            tanh(z, out=z)
            mul(gates, 0.5, out=gates)  # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5
            add(gates, 0.5, out=gates)
            mul(c, f, out=c)  # c = f * c + i * g
            mul(i, g, out=i)
            add(c, i, out=c)
            tanh(c, out=h)  # h = o * tanh(c)
            mul(h, o, out=h)

        return step

    def _gru_stepper(self, h: np.ndarray, z: np.ndarray, m: np.ndarray):
        u, rk = self.units, self.rk
        add, mul, tanh = np.add, np.multiply, np.tanh
        brec, zr, hh = self.brec, z[:, : 2 * u], z[:, 2 * u: 3 * u]
        upd, r, m_zr, m_h = z[:, :u], z[:, u: 2 * u], m[:, : 2 * u], m[:, 2 * u:]

        def step(xw: np.ndarray) -> None:
            np.matmul(h, rk, out=m)
            add(m, brec, out=m)
            add(xw[:, : 2 * u], m_zr, out=zr)
            tanh(zr, out=zr)
            mul(zr, 0.5, out=zr)
            add(zr, 0.5, out=zr)
            mul(r, m_h, out=hh)  # hh = tanh(x_h + r * (h @ U_h + b_h))
            add(hh, xw[:, 2 * u:], out=hh)
            tanh(hh, out=hh)
            np.subtract(h, hh, out=h)  # h = z * h + (1 - z) * hh = hh + z * (h - hh)
            mul(h, upd, out=h)
            add(h, hh, out=h)

        return step
