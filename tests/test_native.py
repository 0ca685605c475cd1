"""core/native/: the LSTM kernels build here, match the XLA loops at awkward sizes, and
a machine without a compiler gets a reason instead of an error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core import fast, native

HAS_COMPILER = bool(shutil.which("gcc") and shutil.which("g++"))


@pytest.fixture
def kernels():
    if not HAS_COMPILER:
        pytest.skip("no gcc/g++ on this machine: fast mode uses its XLA loops")
    ops, reason = native.ops()
    assert ops is not None, reason
    return ops


def test_kernels_build_and_load_where_a_compiler_exists(kernels):
    assert native.enabled()
    assert native.status().startswith("native LSTM kernels")
    assert native.library_path().exists()


def test_switch_turns_them_off(monkeypatch):
    monkeypatch.setenv(native.SWITCH, "0")
    assert not native.enabled()
    assert native.status().startswith(f"{native.SWITCH}=0")


def test_without_a_compiler_the_build_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_NATIVE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-cxx"))
    with pytest.raises(native.NativeError, match="could not compile"):
        native.build()
    assert not list(tmp_path.glob("*.so"))


# Odd sizes on purpose: 4U = 84 columns (5 full vectors and a 4-wide tail), a batch of 5
# (one block of 4 rows and one single row), F = 7 inputs, steps [2, 8) of 11.
T, B, F, U, START, END = 11, 5, 7, 21, 2, 8


def _case(seed: int = 0, batch: int = B, units: int = U):
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def r(*shape, s=0.5):
        return tf.constant((rng.standard_normal(shape) * s).astype(np.float32))

    return (r(T, batch, F), r(batch, units), r(batch, units), r(F, 4 * units), r(4 * units),
            r(units, 4 * units, s=0.3), r(T, batch, units, s=0.1), r(batch, units),
            r(batch, units))


# The AVX-512 kernels keep the units in groups of 16 and the rest (U % 16) in a tail: one
# vector for up to 4, else 4 vectors; their row blocks are 6, 4, 2 and 1 rows forward, 8
# and 1 backward. U = 21: a group and a 5-unit tail; 20: a 4-unit tail (the seed models'
# 100 units end so); 32: no tail; 3 and 9: a tail alone. A batch of 130 rows (over 128:
# the backward's weight gradients run every step, as for the seed's batch of 256) with 36
# units (a row block's units in two parts: the first part's dz must not overwrite the
# next step's, which the second part still reads).
@pytest.mark.parametrize(("batch", "units"),
                         [(B, U), (13, 20), (16, 32), (3, 3), (9, 9), (130, 36)])
def test_forward_and_backward_match_the_xla_loops(kernels, batch, units):
    """The native op pair against the XLA custom-gradient LSTM it replaces, on the same
    inputs (the XLA one gets the projection precomputed): every output, and the gradient
    of one scalar of all outputs with respect to every input."""
    import tensorflow as tf

    feats, h0, c0, kernel, bias, rk, wseq, wh, wc = _case(0, batch, units)
    # The loss weighs each row as in a batch of B, so that the weight gradients (sums over
    # the rows) keep the scale the tolerances below were set for.
    wseq, wh, wc = (w * min(1.0, B / batch) for w in (wseq, wh, wc))
    start, end = tf.constant(START), tf.constant(END)
    runs = fast._recurrences(with_native=True)

    def loss(outs):
        seq, h, c = outs
        return tf.reduce_sum(seq * wseq) + tf.reduce_sum(h * wh) + tf.reduce_sum(c * wc)

    def run(name):
        @tf.function  # as the engine runs them: inside a graph
        def both(feats, h0, c0, kernel, bias, rk):
            with tf.GradientTape() as tape:
                tape.watch([feats, h0, c0, kernel, bias, rk])
                if name == "lstm":
                    xw = tf.einsum("tbf,fg->tbg", feats, kernel) + bias
                    outs = runs[("lstm", True)](xw, h0, c0, rk, start, end)
                else:
                    outs = runs[(name, True)](feats, h0, c0, kernel, bias, rk, start, end)
                value = loss(outs)
            return outs, tape.gradient(value, [feats, h0, c0, kernel, bias, rk])

        outs, grads = both(feats, h0, c0, kernel, bias, rk)
        return [np.asarray(o) for o in outs], [np.asarray(g) for g in grads]

    results = [run("lstm-native"), run("lstm")]
    (outs_n, grads_n), (outs_x, grads_x) = results
    for a, b in zip(outs_n, outs_x):
        np.testing.assert_allclose(a, b, atol=2e-6)
    assert np.abs(outs_n[0][:START]).max() == 0 and np.abs(outs_n[0][END:]).max() == 0
    for name, a, b in zip(["feats", "h0", "c0", "kernel", "bias", "rk"], grads_n, grads_x):
        np.testing.assert_allclose(a, b, atol=5e-6, err_msg=name)
    assert np.abs(grads_n[0][:START]).max() == 0 and np.abs(grads_n[0][END:]).max() == 0


def test_an_empty_range_passes_the_state_through(kernels):
    import tensorflow as tf

    feats, h0, c0, kernel, bias, rk, *_ = _case(1)
    acts, hprev, cprev, h, c = kernels.lab_lstm_forward(
        feats, h0, c0, kernel, bias, rk, tf.constant(4), tf.constant(4))
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(c, c0)
    assert not np.asarray(acts).any() and not np.asarray(hprev).any()
    dfeats, dh0, dc0, dk, db, drk = kernels.lab_lstm_backward(
        feats, acts, hprev, cprev, tf.zeros([0]), h0, c0, kernel, rk, tf.constant(4),
        tf.constant(4))
    np.testing.assert_array_equal(dh0, h0)
    assert not any(np.asarray(g).any() for g in (dfeats, dk, db, drk))


def test_cli_reports_which_loops(monkeypatch, capsys):
    from core import cli

    monkeypatch.setenv(native.SWITCH, "0")
    assert cli.main(["native"]) == 0
    assert capsys.readouterr().out.startswith(f"{native.SWITCH}=0: XLA-compiled loops")


def test_saturated_gates_stay_finite_and_nan_stays_nan(kernels):
    """Pre-activations far beyond +-88 (where exp overflows) must saturate the gates to
    0 / 1 as the XLA loops do, not turn into NaN (a -ffast-math build did, and full-data
    training 'diverged' at batch 277); and a NaN must still come out as NaN, or diverging
    training would go unnoticed."""
    import tensorflow as tf

    feats, h0, c0, kernel, bias, rk, *_ = _case(2)
    big = kernel * 1000.0
    start, end = tf.constant(START), tf.constant(END)
    native_out = kernels.lab_lstm_forward(feats, h0, c0, big, bias, rk, start, end)
    xw = tf.einsum("tbf,fg->tbg", feats, big) + bias
    xla_out = fast._recurrences()[("lstm", False)](xw, h0, c0, rk, start, end)
    for a, b in zip(native_out[3:], xla_out[1:]):  # final h, c
        assert np.isfinite(np.asarray(a)).all()
        np.testing.assert_allclose(a, b, atol=1e-5)
    acts = np.asarray(native_out[0])[START:END]
    assert (acts == 0).any() and (acts == 1).any()  # really saturated
    poisoned = tf.tensor_scatter_nd_update(feats, [[START, 0, 0]], [np.nan])
    h = np.asarray(kernels.lab_lstm_forward(poisoned, h0, c0, kernel, bias, rk, start, end)[3])
    assert np.isnan(h[0]).all() and np.isfinite(h[1:]).all()


# -- every input is validated (issue 14) ------------------------------------------------------


def _good_calls():
    """Valid arguments for both ops, by input name (the ops' input order)."""
    import tensorflow as tf

    feats, h0, c0, kernel, bias, rk, *_ = _case(3)
    start, end = tf.constant(START), tf.constant(END)
    fwd = dict(feats=feats, h0=h0, c0=c0, kernel=kernel, bias=bias, rk=rk, start=start,
               end=end)
    acts, hprev, cprev, *_ = native.ops()[0].lab_lstm_forward(*fwd.values())
    bwd = dict(feats=feats, acts=acts, hprev=hprev, cprev=cprev, dseq=hprev, dh=h0, dc=c0,
               kernel=kernel, rk=rk, start=start, end=end)
    return {"lab_lstm_forward": fwd, "lab_lstm_backward": bwd}


def _bad_values(name: str, x):
    """(what is wrong, value) for one input: rank, size, dtype; range for start/end."""
    import tensorflow as tf

    if name in ("start", "end"):
        return [("rank", x[None]), ("dtype", tf.cast(x, tf.float32)),
                ("range", tf.constant(-1 if name == "start" else T + 1)),
                ("order", tf.constant(END + 1 if name == "start" else START - 1))]
    bad = [("rank-", x[0]), ("rank+", x[None]), ("size", x[..., :-1]),
           ("dtype", tf.cast(x, tf.float64))]
    return bad + ([("batch", x[:, :-1])] if x.shape.rank == 3 else [])


def bad_input_battery() -> int:
    """Calls both ops with each input made wrong in each way, eagerly (the kernels' checks)
    and in a tf.function (the shape functions first): each must raise a Python exception
    naming the problem. Prints one line per call; returns the number of calls that did not
    raise as they should. Run in a subprocess by the test: a crash fails it, not pytest."""
    import tensorflow as tf

    kernels, failures, calls = native.ops()[0], 0, 0
    for op_name, good in _good_calls().items():
        op = getattr(kernels, op_name)
        for name, value in good.items():
            for what, bad in _bad_values(name, value):
                args = {**good, name: bad}
                for mode, fn in (("eager", op), ("graph", tf.function(op, autograph=False))):
                    calls += 1
                    try:
                        fn(**args)
                        failures += 1
                        print(f"FAIL {op_name} {name} {what} {mode}: no error")
                    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
                        text = str(e).splitlines()[0][:160]
                        print(f"ok {op_name} {name} {what} {mode}: {type(e).__name__}: {text}")
    print(f"{calls} bad calls, {failures} did not raise")
    return failures


def test_every_input_is_validated(kernels):
    """Wrong shapes, ranks, dtypes and step ranges raise InvalidArgumentError (the kernels),
    ValueError (shape functions, at graph construction) or TypeError (dtype conversion):
    never an out-of-bounds read or write or an abort. In a subprocess, so a crash fails
    this test instead of killing pytest."""
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]; "
            "import test_native; sys.exit(min(test_native.bad_input_battery(), 1))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=here.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1].endswith(" 0 did not raise") and int(lines[-1].split()[0]) >= 100
    # Shape errors name the input (feats, h0 and dh set the sizes the others are held to).
    for line in lines[:-1]:
        op, name, what, mode, *_ = line.split()
        if what != "dtype" and name not in ("feats", "h0", "dh") and mode == "eager:":
            assert "InvalidArgumentError" in line and name in line.split(":", 1)[1], line


# -- Conv1D + ReLU + MaxPooling1D (issue 15) --------------------------------------------------


def _conv_reference(e, kernel, bias, pad_left, pad_right, pool):
    """What the op replaces: TensorFlow's conv, ReLU and Keras's pool op, time-major."""
    import tensorflow as tf

    y = tf.nn.conv1d(tf.pad(e, [[0, 0], [pad_left, pad_right], [0, 0]]), kernel, 1, "VALID")
    y = tf.nn.max_pool1d(tf.nn.relu(y + bias), pool, pool, "VALID")
    return tf.transpose(y, [1, 0, 2])


@pytest.mark.parametrize(("batch", "length", "taps", "filters", "pool", "ties"), [
    (5, 37, 3, 32, 2, False),  # the seed's conv: 32 filters, 3 taps, pool 2
    (1, 50, 3, 32, 2, False),  # the padding row
    (3, 40, 4, 5, 3, False),   # 'same' with the extra pad at the end; a 5-wide tail
    (4, 30, 5, 7, 4, True),    # small integers: many equal values in a pool window
    (2, 41, 2, 3, 5, True),
])
def test_conv_pool_matches_tensorflow(kernels, batch, length, taps, filters, pool, ties):
    """Outputs and the gradients of e, kernel and bias against TensorFlow's ops, with ties
    in the pool windows routed to the first (as MaxPoolGrad does)."""
    import tensorflow as tf

    rng = np.random.default_rng(length)
    dims = 6 if ties else 8

    def r(*shape):
        if ties:
            return tf.constant(rng.integers(-1, 2, shape).astype(np.float32))
        return tf.constant(rng.standard_normal(shape).astype(np.float32) * 0.5)

    e, kernel, bias = r(batch, length, dims), r(taps, dims, filters), r(filters)
    pad_left, pad_right = (taps - 1) // 2, taps - 1 - (taps - 1) // 2
    want = _conv_reference(e, kernel, bias, pad_left, pad_right, pool)
    run = fast._recurrences(with_native=True)["conv-pool-native"]
    weights = r(*want.shape)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([e, kernel, bias])
        got = run(e, kernel, bias, tf.constant(pad_left), tf.constant(pad_right),
                  tf.constant(pool))
        want = _conv_reference(e, kernel, bias, pad_left, pad_right, pool)
        losses = [tf.reduce_sum(got * weights), tf.reduce_sum(want * weights)]
    np.testing.assert_allclose(got, want, atol=2e-6)
    if ties:  # some pool window holds its positive maximum twice
        y = tf.nn.conv1d(tf.pad(e, [[0, 0], [pad_left, pad_right], [0, 0]]), kernel, 1,
                         "VALID") + bias
        windows = np.asarray(y)[:, : want.shape[0] * pool].reshape(batch, -1, pool, filters)
        top = windows.max(axis=2, keepdims=True)
        assert (((windows == top) & (top > 0)).sum(axis=2) > 1).any()
    g_got, g_want = (tape.gradient(loss, [e, kernel, bias]) for loss in losses)
    for name, a, b in zip(["e", "kernel", "bias"], g_got, g_want):
        np.testing.assert_allclose(a, b, atol=5e-6, err_msg=name)


def test_conv_pool_keeps_nan_and_checks_inputs(kernels):
    """A NaN in the embeddings comes out NaN (diverging training stays visible), and wrong
    sizes raise instead of reading out of bounds."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    e = rng.standard_normal((2, 12, 4)).astype(np.float32)
    kernel = rng.standard_normal((3, 4, 16)).astype(np.float32)
    bias = np.zeros(16, np.float32)
    e[0, 5, :] = np.nan
    out, which = kernels.lab_conv_pool(e, kernel, bias, 1, 1, 2)
    assert np.isnan(np.asarray(out)[:, 0]).any() and np.isfinite(np.asarray(out)[:, 1]).all()
    bad = [dict(kernel=kernel[:, :3]), dict(bias=bias[:5]), dict(e=e[0]),
           dict(pool=0), dict(pad_left=-1)]
    good = dict(e=e, kernel=kernel, bias=bias, pad_left=1, pad_right=1, pool=2)
    for change in bad:
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
            kernels.lab_conv_pool(**{**good, **change})
    grad = dict(e=e, kernel=kernel, out=out, which=which, dout=out, pad_left=1, pad_right=1,
                pool=2)
    for change in (dict(dout=out[:-1]), dict(which=which[:, :1]), dict(pool=3)):
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
            kernels.lab_conv_pool_grad(**{**grad, **change})


THREADS = """
import dataclasses, json
from core import worker
from core.config import preset
worker.preload()
got = {}
for name, arch in [("seed-lstm", None), ("seed-cnn-lstm", None), ("seed-lstm", "gru"),
                   ("seed-lstm-dropout", None), ("bigram-fasttext", None)]:
    cfg = preset(name) if arch is None else dataclasses.replace(preset(name), architecture=arch)
    worker.set_threads(cfg)
    import tensorflow as tf
    got[f"{name}/{arch}"] = [tf.config.threading.get_intra_op_parallelism_threads(),
                             tf.config.threading.get_inter_op_parallelism_threads()]
print(json.dumps(got))
"""


def test_runs_on_the_kernels_get_one_thread_within_an_op(kernels):
    """A job's threads run its ops side by side; only runs on the native kernels keep each
    op on one thread (their halves already fill the cores: bench/thread_split.py). Sized
    in a fresh process, as a worker does before its first op."""
    env = {**os.environ, "LAB_JOB_THREADS": "2", "LAB_MAX_JOBS": "1"}
    out = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True,
                         env=env, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "seed-lstm/None": [1, 2], "seed-cnn-lstm/None": [1, 2], "seed-lstm/gru": [2, 2],
        "seed-lstm-dropout/None": [2, 2], "bigram-fasttext/None": [2, 2]}


def test_embedding_adam_equals_kerass_ops_and_checks_indices(kernels):
    """Adam's step for an embedding table from its slices, bit for bit as Keras's own ops
    make it: the slices and their squares summed per row by UnsortedSegmentSum (repeated
    rows, untouched rows, a width that is no multiple of 16), then m, v and the table; the
    slices may come in several arrays (summed in their order) and the step be taken for a
    range of rows, the rest passing through; a bad index or range is refused."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    values = rng.standard_normal((300, 20)).astype(np.float32)
    idx = rng.integers(0, 10, 300).astype(np.int32)
    m, v, var = (rng.standard_normal((12, 20)).astype(np.float32) for _ in range(3))
    v = np.abs(v)
    alpha, c1, c2, eps = (np.float32(a) for a in (0.003, 1 - 0.9, 1 - 0.999, 1e-7))
    total = tf.math.unsorted_segment_sum(values, idx, 12)
    squares = tf.math.unsorted_segment_sum(tf.square(values), idx, 12)
    m_want = m + (total - m) * c1
    v_want = v + (squares - v) * c2
    want = (m_want, v_want, var - (m_want * alpha) / (tf.sqrt(v_want) + eps))
    assert not np.asarray(total)[10:].any()  # rows no slice touched still move
    got = kernels.lab_embedding_adam([values], [idx], m, v, var, alpha, c1, c2, eps)
    for mine, keras_own in zip(got, want):
        np.testing.assert_array_equal(mine, keras_own)
    # In three arrays, and in two steps as the engine takes them: rows 1 on, then row 0.
    parts = [values[:100], values[100:250], values[250:]]
    codes = [idx[:100], idx[100:250], idx[250:]]
    later = kernels.lab_embedding_adam(parts, codes, m, v, var, alpha, c1, c2, eps, begin=1)
    for mine, old in zip(later, (m, v, var)):
        np.testing.assert_array_equal(np.asarray(mine)[0], old[0])  # row 0 not yet
    got = kernels.lab_embedding_adam(parts, codes, *later, alpha, c1, c2, eps, begin=0, end=1)
    for mine, keras_own in zip(got, want):
        np.testing.assert_array_equal(mine, keras_own)
    for bad in (12, -1):
        with pytest.raises(tf.errors.InvalidArgumentError, match="is not in"):
            kernels.lab_embedding_adam([values], [np.where(idx == 3, bad, idx).astype(np.int32)],
                                       m, v, var, alpha, c1, c2, eps)
    with pytest.raises(tf.errors.InvalidArgumentError, match="begin <= end <= rows"):
        kernels.lab_embedding_adam([values], [idx], m, v, var, alpha, c1, c2, eps, begin=13)


def test_adam_equals_kerass_ops_for_a_dense_gradient(kernels):
    """Adam's step from a dense gradient (any shape), bit for bit as Keras's ops make it."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    grad, m, v, var = (rng.standard_normal((7, 37)).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    alpha, c1, c2, eps = (np.float32(a) for a in (0.003, 1 - 0.9, 1 - 0.999, 1e-7))
    got = kernels.lab_adam(grad, m, v, var, alpha, c1, c2, eps)
    m_want = m + (grad - m) * c1
    v_want = v + (tf.square(grad) - v) * c2
    var_want = var - (m_want * alpha) / (tf.sqrt(v_want) + eps)
    for mine, want in zip(got, (m_want, v_want, var_want)):
        np.testing.assert_array_equal(mine, want)
    with pytest.raises(tf.errors.InvalidArgumentError, match="grad must have shape"):
        kernels.lab_adam(grad[:, :5], m, v, var, alpha, c1, c2, eps)
