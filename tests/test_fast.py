"""Exact fast mode (core/fast/): same outputs and gradients as the padded model.

The small models, hostile weights and batches are core/fast_check.py's (bench/exactness.py
reports the same differences); test_padding_prefix_matters_in_these_checks guards them.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from conftest import tiny_config  # noqa: E402
from core import fast, native  # noqa: E402
from core.config import ARCHITECTURES, BIDIRECTIONAL  # noqa: E402
from core.fast_check import (  # noqa: E402
    ATOL,
    EXACT_CASES,
    MIXED_LENGTHS,
    SHORT_LENGTHS,
    case_id,
    max_diff,
    random_model,
    reference,
    reviews,
    small_config,
)
from core.models import build_model, compile_model  # noqa: E402
from core.text import pad_pre  # noqa: E402

# -- applies() ----------------------------------------------------------------------------


def test_applies_on_and_off_with_reasons():
    on = {"lstm", "gru", "stacked-lstm", "cnn-lstm", "lstm-maxpool", "lstm-maxpool-dropout",
          "cnn-lstm-maxpool-dropout", "cnn-lstm-bigrams"}
    for arch in ARCHITECTURES:
        used, reason = fast.applies(small_config(arch, dropout=0.2))
        assert used == (arch in on), (arch, reason)
        assert reason and isinstance(reason, str)
    for arch in ("lstm-dropout", "cnn-lstm-dropout"):
        used, reason = fast.applies(small_config(arch, dropout=0.2))
        assert not used and "dropout" in reason.lower() and "mask" in reason
        assert fast.applies(small_config(arch, dropout=0.0))[0]
    used, reason = fast.applies(small_config("bilstm"))
    assert not used and "backward" in reason
    used, reason = fast.applies(small_config("lstm", fast=False))
    assert not used and reason.startswith("fast=false")


def test_clipnorm_turns_fast_mode_off():
    """tf.clip_by_norm on the embedding's IndexedSlices squares each slice on its own, and
    fast mode slices the padding row's gradient differently (per prefix position, not per
    review and position): measured, one clipped SGD step on SHORT_LENGTHS moved embedding
    row 0 by ~1 % of the step differently. So clipnorm > 0 trains with plain fit."""
    for arch in ("lstm", "cnn-lstm"):
        used, reason = fast.applies(small_config(arch, clipnorm=1.0))
        assert not used and reason.startswith("clipnorm=1:") and "plain Keras fit" in reason
        assert fast.applies(small_config(arch, clipnorm=0.0))[0]


def test_make_plan_refuses_what_is_not_exact():
    with pytest.raises(ValueError, match="Bidirectional"):
        fast.make_plan(random_model(small_config("bilstm")))
    with pytest.raises(ValueError, match="Dropout before"):
        fast.make_plan(random_model(small_config("lstm-dropout", dropout=0.3)))
    # At inference dropout is the identity, so prediction may still use the model.
    assert fast.make_plan(random_model(small_config("lstm-dropout", dropout=0.3)),
                          training=False).recurrent


# -- exactness of the compiled training path -------------------------------------------------


@pytest.fixture(params=["native", "xla"])
def backend(request, monkeypatch) -> str:
    """Run a test on both recurrence back ends: core/native's LSTM kernels and the
    XLA-compiled loops (the fallback, and what GRU layers always use)."""
    if request.param == "xla":
        monkeypatch.setenv(native.SWITCH, "0")
    elif not native.enabled():
        pytest.skip(f"native kernels unavailable here: {native.status()}")
    return request.param


def uses_native(model, plan) -> bool:
    return fast._engine_for(model, plan).native


@pytest.mark.parametrize(("arch", "overrides"), EXACT_CASES,
                         ids=[case_id(a, o) for a, o in EXACT_CASES])
def test_outputs_and_gradients_match_padded_model(backend, arch, overrides):
    cfg = small_config(arch, **overrides)
    assert fast.applies(cfg)[0]
    model = random_model(cfg)
    plan = fast.make_plan(model, cfg.maxlen)
    assert uses_native(model, plan) == (backend == "native" and arch != "gru")
    for lengths in (MIXED_LENGTHS, SHORT_LENGTHS):
        x, y = reviews(cfg, lengths)
        p_ref, loss_ref, g_ref = reference(model, x, y)
        need = int(plan.steps_needed(x).max())
        # The fewest steps the batch allows, and more: the prefix may end anywhere before.
        for n_steps in sorted({max(need, 1), min(need + 3, plan.steps), plan.steps}):
            p, loss, grads = fast.batch_gradients(model, cfg, x, y, n_steps)
            assert np.abs(p - p_ref).max() < ATOL, (lengths, n_steps)
            assert abs(loss - loss_ref) < ATOL
            assert len(grads) == len(g_ref)
            assert max_diff(grads, g_ref) < ATOL, (lengths, n_steps)


WINDOW_CASES = [("lstm", {}), ("stacked-lstm", {}), ("gru", {}),
                ("cnn-lstm", {"kernel_size": 5, "pool_size": 2, "maxlen": 45})]


@pytest.mark.parametrize(("arch", "overrides"), WINDOW_CASES,
                         ids=[a + ("-halo" if o else "") for a, o in WINDOW_CASES])
def test_gradients_match_when_the_batch_runs_in_a_smaller_window(monkeypatch, backend, arch,
                                                                overrides):
    """Full-size models cut every row into windows (the native kernels: exactly the
    batch's steps; the XLA loops: e.g. the last 128 of 500 steps); here windows of 16 steps
    make a short batch run in a window shorter than the row, so the cut (and the
    convolution's halo at the window's left edge) is checked."""
    monkeypatch.setattr(fast.plan, "WINDOW_MIN", 8)  # read by Plan.windows
    cfg = small_config(arch, **overrides)
    model = random_model(cfg)
    plan = fast.make_plan(model, cfg.maxlen)
    x, y = reviews(cfg, SHORT_LENGTHS)
    need = int(plan.steps_needed(x).max())
    assert len(plan.windows()) > 1 and plan.window_for(need) < plan.steps
    p_ref, loss_ref, g_ref = reference(model, x, y)
    for n_steps in sorted({need, plan.window_for(need)}):
        p, loss, grads = fast.batch_gradients(model, cfg, x, y, n_steps)
        assert np.abs(p - p_ref).max() < ATOL, n_steps
        assert abs(loss - loss_ref) < ATOL
        assert max_diff(grads, g_ref) < ATOL, n_steps


@pytest.mark.parametrize("arch", ["lstm", "gru", "stacked-lstm", "cnn-lstm", "lstm-maxpool",
                                  "cnn-lstm-maxpool-dropout"])
def test_padding_prefix_matters_in_these_checks(arch):
    """Guard for the tests above: with these weights one padding step more or less changes
    the outputs by far more than ATOL, and the gradient reaches embedding row 0, so a fast
    path that skipped the prefix or started it one step off would fail them."""
    cfg = small_config(arch)
    model = random_model(cfg)
    x, y = reviews(cfg, SHORT_LENGTHS)
    p_ref, _, g_ref = reference(model, x, y)
    cut = 2 if arch.startswith("cnn") else 1  # one pooled step less of padding
    shorter = small_config(arch, maxlen=cfg.maxlen - cut)
    model_short = random_model(shorter)
    model_short.set_weights(model.get_weights())
    p_short = np.asarray(model_short(x[:, cut:], training=False))[:, 0]
    assert np.abs(p_short - p_ref).max() > 20 * ATOL
    assert np.abs(g_ref[0][0]).max() > 20 * ATOL  # d loss / d embedding row 0 (the pad)


def test_steps_needed_counts_pool_and_kernel_halo():
    cfg = small_config("cnn-lstm", kernel_size=5, pool_size=2, maxlen=45)  # halo 2 each side
    plan = fast.make_plan(random_model(cfg), cfg.maxlen)
    assert (plan.steps, plan.pad_left, plan.pad_right) == (22, 2, 2)
    x, _ = reviews(cfg, [0, 1, 2, 3, 4, 45])
    # 45 codes, 22 pooled steps read positions 0..43 (+2 halo): a lone last code at 44
    # reaches step 21 only through the halo; longer reviews need more steps.
    assert plan.steps_needed(x).tolist() == [0, 1, 2, 2, 3, 22]


# -- training end to end ---------------------------------------------------------------------


def toy_data(cfg, n: int, seed: int):
    """Learnable toy reviews: label 1 iff code 3 appears more often than code 4."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for _ in range(n):
        length = int(rng.integers(1, cfg.maxlen + 12))
        seq = rng.integers(5, cfg.top_words, length)
        label = int(rng.integers(0, 2))
        marks = rng.choice(length, size=max(1, length // 6), replace=False)
        seq[marks] = 3 if label else 4
        seqs.append(list(seq))
        labels.append(label)
    x = pad_pre(seqs, cfg.maxlen)
    lengths = np.array([len(s) for s in seqs])
    return x, np.array(labels, np.float32), lengths


class Recorder(keras.callbacks.Callback):
    """Records the calls Keras's fit makes, and can stop training at a given batch."""

    def __init__(self, stop_at: tuple[int, int] | None = None):
        super().__init__()
        self.calls: list[tuple] = []
        self.stop_at = stop_at

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs)))
        if self.stop_at == (len([c for c in self.calls if c[0] == "epoch_begin"]) - 1, batch):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_fit_trains_through_callbacks_with_running_means():
    cfg = small_config("lstm", epochs=6, batch_size=16, learning_rate=0.02)
    x, y, lengths = toy_data(cfg, 200, seed=0)
    xv, yv, _ = toy_data(cfg, 64, seed=1)
    keras.utils.set_random_seed(cfg.seed)
    model = compile_model(build_model(cfg), cfg)
    rec = Recorder()
    fast.fit(model, cfg, x, y, lengths, (xv, yv), [rec])

    kinds = [c[0] for c in rec.calls]
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end"
    assert kinds.count("epoch_begin") == kinds.count("epoch_end") == cfg.epochs
    steps = -(-len(x) // cfg.batch_size)
    epochs = [c[2] for c in rec.calls if c[0] == "epoch_end"]
    batches = [c for c in rec.calls if c[0] == "batch_end"]
    assert len(batches) == steps * cfg.epochs
    for e, logs in enumerate(epochs):
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        mine = batches[e * steps:(e + 1) * steps]
        assert [b[1] for b in mine] == list(range(steps))
        # Running means weighted by reviews: the last one is the epoch's, and every
        # batch's own accuracy recovered from consecutive means counts whole reviews.
        assert mine[-1][2]["loss"] == pytest.approx(logs["loss"])
        assert mine[-1][2]["accuracy"] == pytest.approx(logs["accuracy"])
        prev = 0.0
        for _, i, blog in mine:
            seen = min((i + 1) * cfg.batch_size, len(x))
            size = seen - i * cfg.batch_size
            hits = blog["accuracy"] * seen - prev * (seen - size)
            assert hits == pytest.approx(round(hits), abs=1e-6) and 0 <= round(hits) <= size
            prev = blog["accuracy"]
    assert epochs[-1]["loss"] < 0.7 * epochs[0]["loss"]
    assert epochs[-1]["val_accuracy"] >= 0.85
    # The validation numbers are the plain model's on the same rows.
    p = np.asarray(model.predict(xv, verbose=0))[:, 0]
    assert epochs[-1]["val_accuracy"] == pytest.approx(float(np.mean((p > 0.5) == yv)))
    plain_loss = float(np.mean(keras.losses.binary_crossentropy(yv[:, None], p[:, None])))
    assert epochs[-1]["val_loss"] == pytest.approx(plain_loss, abs=1e-4)


def test_fit_draws_dropout_after_the_pooling():
    """lstm-maxpool-dropout: fast fit runs its dropout after the pooling in training mode
    (a fresh mask per review and unit; exact at any rate), and the model still learns."""
    cfg = small_config("lstm-maxpool-dropout", epochs=4, batch_size=16, learning_rate=0.02)
    x, y, lengths = toy_data(cfg, 160, seed=3)
    xv, yv, _ = toy_data(cfg, 64, seed=4)
    start, ends = None, {}
    for rate in (0.0, 0.5):
        cfg.dropout = rate
        keras.utils.set_random_seed(cfg.seed)
        model = compile_model(build_model(cfg), cfg)
        start = start or model.get_weights()
        model.set_weights(start)
        fast.fit(model, cfg, x, y, lengths, (xv, yv), [])
        ends[rate] = model.get_weights(), model.history.history["val_accuracy"][-1]
    assert max_diff(ends[0.0][0], ends[0.5][0]) > 1e-3  # the masks changed the steps
    assert ends[0.5][1] >= 0.8, ends


def test_fit_honours_stop_training_after_a_batch():
    cfg = small_config("gru", epochs=3, batch_size=16)
    x, y, lengths = toy_data(cfg, 100, seed=2)
    model = compile_model(build_model(cfg), cfg)
    rec = Recorder(stop_at=(1, 2))  # epoch 1, batch 2
    fast.fit(model, cfg, x, y, lengths, None, [rec])
    kinds = [c[0] for c in rec.calls]
    steps = -(-len(x) // cfg.batch_size)
    assert kinds.count("batch_end") == steps + 3
    assert kinds.count("epoch_end") == 2 and kinds[-1] == "train_end"
    assert "val_loss" not in rec.calls[-2][2]


@pytest.mark.parametrize("arch", ["cnn-lstm", "stacked-lstm", "lstm-maxpool"])
def test_one_optimizer_step_matches_plain_fit(arch):
    """Same initial weights, one identical batch: plain Keras fit and fast fit end with
    the same weights (the step's gradient in its two passes, the padding prefix's after
    the batch's own: one layer, two, and the prefix's states max-pooled too; a batch of
    short reviews, most of each row the prefix, and one whose longest review leaves none).

    With SGD every weight matches. With Adam every weight matches except embedding row 0
    (the padding code): Keras 3's sparse Adam squares each IndexedSlices slice separately
    (v += sum of g_k^2, not (sum g_k)^2), and plain fit has one slice per review per pad
    position where fast mode has one per shared prefix position. The gradients themselves
    are equal (test_outputs_and_gradients_match_padded_model).
    """
    # Adam only for the CNN + LSTM: in the deeper models' small configurations a sixth
    # of the gradients are within float32 noise of zero, which Adam's first step magnifies.
    steps = [("sgd", 1e-6, SHORT_LENGTHS), ("sgd", 1e-6, MIXED_LENGTHS)]
    steps += [("adam", 1e-5, MIXED_LENGTHS)] if arch == "cnn-lstm" else []
    for optimizer, atol, lengths in steps:
        cfg = small_config(arch, epochs=1, batch_size=14, optimizer=optimizer,
                           learning_rate=0.05)
        x, y = reviews(cfg, lengths, seed=5)
        start = random_model(cfg).get_weights()
        plain = compile_model(build_model(cfg), cfg)
        plain.set_weights(start)
        plain.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
        quick = compile_model(build_model(cfg), cfg)
        quick.set_weights(start)
        fast.fit(quick, cfg, x, y, None, None, [])
        got, want = quick.get_weights(), plain.get_weights()
        assert max_diff(want, start) > 1e-3  # the step did change the weights
        assert np.abs(got[0][0] - start[0][0]).min() > 0  # ... and the padding row
        if optimizer == "adam":
            # Adam's first step is lr * g / (|g| + 1e-7): for a gradient within float32
            # noise of zero it magnifies the last bits of g (plain and fast sum in
            # different orders), so those few entries are left out.
            probe = compile_model(build_model(cfg), cfg)
            probe.set_weights(start)
            grads = fast.batch_gradients(probe, cfg, x, y)[2]
            tiny = [(np.abs(g) > 0) & (np.abs(g) < 1e-5) for g in grads]
            assert sum(t.sum() for t in tiny) < 0.02 * sum(t.size for t in tiny)
            got, want = ([np.where(t, 0, w) for t, w in zip(tiny, ws)] for ws in (got, want))
            got[0], want[0] = got[0][1:], want[0][1:]
        assert max_diff(got, want) < atol, optimizer


def test_the_engine_adam_step_is_keras_own_bit_for_bit(monkeypatch):
    """With the native kernels the engine takes Adam's step in native ops, one per
    variable (core/fast/engine.py): after a few batches every weight and every optimizer
    variable (slots, step count) equals Keras's own step exactly, for the LSTM and the
    CNN + LSTM."""
    if not native.enabled():
        pytest.skip(f"native kernels unavailable here: {native.status()}")
    for arch in ("lstm", "cnn-lstm"):
        cfg = small_config(arch, epochs=2, batch_size=4, learning_rate=0.05)
        x, y = reviews(cfg, MIXED_LENGTHS, seed=5)
        start = random_model(cfg).get_weights()
        got = {}
        for own_step in (True, False):
            if not own_step:
                monkeypatch.setattr(fast.engine, "plain_adam", lambda optimizer: False)
            model = compile_model(build_model(cfg), cfg)
            model.set_weights(start)
            fast.fit(model, cfg, x, y, None, None, [])
            engine = fast._engine_for(model, fast.make_plan(model, cfg.maxlen))
            assert (engine.adam is not None) == own_step
            got[own_step] = [np.asarray(w) for w in model.get_weights()
                             + model.optimizer.variables]
        monkeypatch.undo()
        assert max_diff(got[True], start) > 1e-3
        for mine, keras_own in zip(got[True], got[False]):
            np.testing.assert_array_equal(mine, keras_own)


def test_a_batch_gathered_in_the_graph_is_the_hosts_batch(backend):
    """fit's step gathers each batch from the epoch's tensors (engine.train_rows); a short
    batch is filled up with weight-0 rows as batch_args fills it on the host, so the loss
    and hits it returns (before its update) are eval_step's on batch_args' arrays."""
    cfg = small_config("cnn-lstm", batch_size=8)
    x, y = reviews(cfg, MIXED_LENGTHS, seed=7)
    model = compile_model(build_model(cfg), cfg)
    engine = fast._engine_for(model, fast.make_plan(model, cfg.maxlen, training=True))
    model.optimizer.build(model.trainable_variables)
    rows = np.array([5, 0, 3], np.int64)
    n_steps = int(engine.plan.bucket_steps(x)[rows].max())
    loss_sum, hits = engine.eval_step(*engine.batch_args(x, y, rows, n_steps, 8))
    data = tf.constant(x.astype(np.int32)), tf.constant(y.astype(np.float32))
    order = engine.epoch_order([np.arange(8), rows], 8)
    loss, got_hits = engine.train_rows(*engine.epoch_args(data, order, 1, len(rows), n_steps))
    assert float(loss) == pytest.approx(float(loss_sum) / len(rows), rel=1e-6)
    assert float(got_hits) == float(hits)


def test_the_native_step_is_keras_adam_only():
    """Any other optimizer, or Adam with anything around its step, keeps Keras's own."""
    assert fast.engine.plain_adam(keras.optimizers.Adam(0.01))
    for other in (keras.optimizers.Adam(0.01, amsgrad=True), keras.optimizers.Adam(clipnorm=1),
                  keras.optimizers.Adam(weight_decay=0.1), keras.optimizers.RMSprop(),
                  keras.optimizers.SGD(), compile_model(build_model(
                      small_config("lstm", optimizer="lazy-adam")),
                      small_config("lstm", optimizer="lazy-adam")).optimizer):
        assert not fast.engine.plain_adam(other), other


# -- prediction ------------------------------------------------------------------------------


# Every recurrent architecture but the bidirectional ones (the n-gram models have no steps).
RECURRENT = [a for a in ARCHITECTURES
             if a not in BIDIRECTIONAL and "bigrams" not in ARCHITECTURES[a]["uses"]]


@pytest.mark.parametrize("arch", RECURRENT)
def test_predictor_matches_model_predict(arch):
    cfg = small_config(arch, dropout=0.3)  # dropout is the identity at inference
    model = random_model(cfg)
    predictor = fast.FastPredictor.try_build(model, cfg)
    assert predictor is not None
    x, _ = reviews(cfg, MIXED_LENGTHS + SHORT_LENGTHS + [4] * 5)
    expected = np.asarray(model.predict(x, verbose=0))[:, 0]
    got = predictor.predict_padded(x)
    assert got.shape == (len(x),)
    assert np.abs(got - expected).max() < ATOL
    # One row at a time gives the same numbers as the batch.
    singles = np.array([predictor.predict_padded(x[i:i + 1])[0] for i in range(len(x))])
    assert np.abs(singles - got).max() < ATOL


@pytest.mark.parametrize(("arch", "overrides"), EXACT_CASES,
                         ids=[case_id(a, o) for a, o in EXACT_CASES])
def test_engine_predict_matches_model_predict(backend, arch, overrides):
    """fast.predict (a fast run's test-set evaluation): the training engine's forward pass
    in length-sorted batches gives model.predict's probabilities, in the rows' own order,
    for empty, very short and longer-than-maxlen reviews, whatever the batch size."""
    cfg = small_config(arch, **overrides)
    model = random_model(cfg)
    lengths = MIXED_LENGTHS + SHORT_LENGTHS + [3 * cfg.maxlen, cfg.maxlen - 1, 0, 2, 25]
    x, _ = reviews(cfg, list(np.random.default_rng(5).permutation(lengths)), seed=4)
    expected = np.asarray(model.predict(x, verbose=0))[:, 0]
    for batch in (None, 64, 7):  # several batches, the partial one first; one partial
        got = fast.predict(model, cfg, x, batch=batch)
        assert got.shape == (len(x),)
        assert np.abs(got - expected).max() <= ATOL, batch
    assert fast.predict(model, cfg, x[:0]).shape == (0,)


@pytest.mark.parametrize("arch", ["lstm-dropout", "cnn-lstm-dropout"])
def test_engine_predict_is_exact_for_dropout_models(backend, arch):
    """Dropout before the recurrence rules fast mode out for training, not for inference
    (the identity there): such a run's test set also goes through fast.predict."""
    cfg = small_config(arch, dropout=0.3)
    model = random_model(cfg)
    assert not fast.applies(cfg)[0] and fast.predicts(model, cfg)
    x, _ = reviews(cfg, MIXED_LENGTHS + SHORT_LENGTHS + [3 * cfg.maxlen, 0], seed=6)
    expected = np.asarray(model.predict(x, verbose=0))[:, 0]
    assert np.abs(fast.predict(model, cfg, x) - expected).max() <= ATOL
    assert not fast.predicts(random_model(small_config("bilstm")), small_config("bilstm"))


@pytest.mark.parametrize("arch", ["lstm", "gru", "stacked-lstm", "cnn-lstm", "lstm-maxpool",
                                  "lstm-maxpool-dropout", "cnn-lstm-maxpool-dropout"])
def test_predictor_occlusion_batches_match(arch):
    """Attribution's batch: a review and copies with one code replaced each. The copies
    start from the review's own state where they part from it; still exact."""
    cfg = small_config(arch, kernel_size=4, pool_size=3, maxlen=47) if arch.startswith("cnn") \
        else small_config(arch)
    model = random_model(cfg)
    predictor = fast.FastPredictor.try_build(model, cfg)
    for length in (30, cfg.maxlen + 7):  # padded, and truncated at the front
        base, _ = reviews(cfg, [length], seed=length)
        x = np.repeat(base, cfg.maxlen + 1, axis=0)
        for j in range(cfg.maxlen):  # row j + 1 occludes column j (padding columns too)
            x[j + 1, j] = 2
        x = np.vstack([x, reviews(cfg, [3, 12], seed=9)[0]])  # and unrelated rows
        expected = np.asarray(model.predict(x, verbose=0))[:, 0]
        assert np.abs(predictor.predict_padded(x) - expected).max() < ATOL


def test_predictor_is_none_for_bilstm_and_checks_shapes():
    cfg = small_config("bilstm")
    assert fast.FastPredictor.try_build(random_model(cfg), cfg) is None
    cfg = small_config("lstm")
    predictor = fast.FastPredictor.try_build(random_model(cfg), cfg)
    assert predictor.predict_padded(np.zeros((0, cfg.maxlen), np.int32)).shape == (0,)
    with pytest.raises(ValueError, match="48 codes"):
        predictor.predict_padded(np.zeros((2, 10), np.int32))


def test_engine_trains_in_fast_mode_through_the_store(lab):
    """core.training.run_training with fast=true: recorded as fast, metrics streamed."""
    from core.store import COMPLETED, RUNNING
    from core.training import Progress, run_training

    cfg = tiny_config(epochs=2, fast=True)
    run_id = lab.create_run(cfg, probes=["a wonderful film"], status=RUNNING)
    assert run_training(lab, run_id, Progress()) == COMPLETED
    run = lab.get(run_id, reap=False)
    assert run.results["fast"] is True and run.results["epochs_done"] == cfg.epochs
    # The record says which loops trained it (tiny_config is an LSTM).
    assert run.results["fast_reason"].endswith(native.status())
    names = {(r["phase"], r["name"]) for r in lab.metrics(run_id)}
    assert {("batch", "loss"), ("train", "accuracy"), ("val", "loss"), ("probe", "probe0")} <= names
    phases = run.results["phases"]  # in-process: no worker start
    assert set(phases) == {"imports", "data", "encoder", "model", "kernels", "first batch",
                           "training", "evaluation", "saving"}
    assert all(s >= 0 for s in phases.values())
    # The test set went through the fast engine: the same results as the saved model's
    # predict on the padded rows.
    from core.data import load_dataset
    from core.evaluate import evaluate

    x, y = load_dataset().arrays("test", cfg.top_words, cfg.maxlen, cfg.test_size)
    p = keras.saving.load_model(lab.model_path(run_id)).predict(x, verbose=0).ravel()
    want = evaluate(y, p, np.zeros(len(y)), cfg.maxlen)
    assert abs(run.results["test_loss"] - want["test_loss"]) < ATOL
    assert abs(run.results["test_accuracy"] - want["test_accuracy"]) <= 1 / len(y)


def test_plain_run_evaluates_with_model_predict(lab, monkeypatch):
    """fast=false: the test set goes through model.predict as before, no kernels phase."""
    from core import training
    from core.store import COMPLETED, RUNNING

    calls = []
    monkeypatch.setattr(fast, "predict", lambda *a, **k: calls.append(a))
    cfg = tiny_config(fast=False)
    run_id = lab.create_run(cfg, status=RUNNING)
    assert training.run_training(lab, run_id, training.Progress()) == COMPLETED
    r = lab.get(run_id, reap=False).results
    assert not calls and r["fast"] is False and r["test_reviews"] == cfg.test_size
    assert r["test_predict"] == "model.predict on the padded rows"
    assert "kernels" not in r["phases"] and {"first batch", "evaluation"} <= set(r["phases"])


def test_a_dropout_run_trains_plain_and_evaluates_through_the_fast_forward_pass(lab):
    """LSTM + Dropout (fast asked for, not exact for training): plain fit, then the test
    set through fast.predict, with the results the saved model's predict gives."""
    from core.data import load_dataset
    from core.evaluate import evaluate
    from core.store import COMPLETED, RUNNING
    from core.training import Progress, run_training

    cfg = tiny_config(architecture="lstm-dropout", dropout=0.3, fast=True)
    run_id = lab.create_run(cfg, status=RUNNING)
    assert run_training(lab, run_id, Progress()) == COMPLETED
    r = lab.get(run_id, reap=False).results
    assert r["fast"] is False and r["test_predict"] == "fast exact forward pass"
    x, y = load_dataset().arrays("test", cfg.top_words, cfg.maxlen, cfg.test_size)
    p = keras.saving.load_model(lab.model_path(run_id)).predict(x, verbose=0).ravel()
    want = evaluate(y, p, np.zeros(len(y)), cfg.maxlen)
    assert abs(r["test_loss"] - want["test_loss"]) < ATOL
    assert abs(r["test_accuracy"] - want["test_accuracy"]) <= 1 / len(y)
