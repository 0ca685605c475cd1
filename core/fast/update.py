"""A fast train step's gradients and its Adam update (core/fast/engine.py's _Engine runs
them in its compiled step): the gradient in two passes around the padding prefix, and
Keras's Adam step in core/native's ops, bit for bit.

TensorFlow and Keras are imported by the engine that calls these, not with this module.
"""

from __future__ import annotations


def plain_adam(optimizer) -> bool:
    """Whether ``optimizer`` is Keras's Adam with nothing around its step (no AMSGrad,
    weight decay, clipping, moving average, accumulation or loss scale): the step
    adam_step repeats."""
    import keras

    return type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad and not any(
        getattr(optimizer, name, None) for name in (
            "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
            "gradient_accumulation_steps", "loss_scale_factor"))


def gradients(engine, tape, loss, variables) -> tuple[list, list | None]:
    """The gradients of ``loss`` for ``variables`` in ``engine``'s train step, and the
    embedding table's per lookup (engine.lookups): parts (values, indices, padding), one
    per lookup in the order made. The table's entry in the list is those parts as one
    IndexedSlices, concatenated in that order, which is what the tape itself would make
    of them up to the order of the slices (so a code's sum may differ in its last bit).

    Where the table trains on the native kernels, the forward pass cut the padding
    prefix's results off (_Forward._cut) and the gradient comes in two passes of the
    (persistent) tape: the batch's own part, down to its lookups and the cut tensors,
    then the prefix's, from the cut tensors' gradients, which wait for the own
    lookups' gradients. So the one-row prefix backward runs after the halves' last ops
    (a CNN + LSTM's two pooling and convolution gradients, side by side, rather than
    one beside the prefix and one after it), and beside the Adam step of the rows the
    own codes touch (adam_step), which needs nothing from the prefix. Each weight's
    gradient is its two parts' sum. parts is None where the table is not trained."""
    tf = engine.tf
    table = engine.plan.embedding.embeddings
    if not engine.boundary:
        return tape.gradient(loss, variables), None
    others = [v for v in variables if v is not table]
    own = [e for _, e, padding in engine.lookups if not padding]
    pad = [e for _, e, padding in engine.lookups if padding]
    n = len(others)
    got = tape.gradient(loss, others + own + [s for _, s in engine.boundary])
    with tf.control_dependencies([d for d in got[n: n + len(own)] if d is not None]):
        d_cut = [tf.zeros_like(s) if d is None else tf.identity(d)
                 for (_, s), d in zip(engine.boundary, got[n + len(own):])]
    more = tape.gradient([t for t, _ in engine.boundary], others + pad, output_gradients=d_cut)
    mine = iter([a if b is None else b if a is None else a + b
                 for a, b in zip(got[:n], more[:n])])
    of = dict(zip(map(id, own + pad), [*got[n: n + len(own)], *more[n:]]))
    width = table.shape[-1]
    parts = [(tf.reshape(of[id(e)], [-1, width]), tf.reshape(codes, [-1]), padding)
             for codes, e, padding in engine.lookups if of[id(e)] is not None]
    slices = tf.IndexedSlices(tf.concat([p[0] for p in parts], 0),
                              tf.concat([p[1] for p in parts], 0), tf.shape(table))
    return [slices if v is table else next(mine) for v in variables], parts


def adam_step(engine, grads, variables, parts=None) -> None:
    """Keras's Adam step (keras/src/optimizers/adam.py, update_step; plain_adam says
    nothing else is around it) in native ops, one per variable: alpha from the same ops,
    then m, v and the variable updated in one pass with every rounding of Keras's
    eleven elementwise ops. The embedding table's gradient comes as slices: its op
    first sums them per row and, apart, their squares, as Keras densifies both (with
    TensorFlow's UnsortedSegmentSum, row by row). With the table's gradient per lookup
    (``parts``, gradients) that takes two ops: rows 1 on from the batch's own lookups,
    as soon as the halves' backward passes end, and then row 0, the padding code, which
    the shared prefix also reads, from every lookup in order. Variables whose gradient
    is neither (or None) are left to Keras's own step, which then counts the step.
    Keras's m and v slots are read from its private lists, so tests/test_fast.py
    compares the weights and every optimizer variable with Keras's own step, bit for
    bit."""
    tf, opt = engine.tf, engine.model.optimizer
    lr = tf.cast(opt.learning_rate, tf.float32)
    local_step = tf.cast(opt.iterations + 1, tf.float32)
    beta_1_power = tf.pow(tf.cast(opt.beta_1, tf.float32), local_step)
    beta_2_power = tf.pow(tf.cast(opt.beta_2, tf.float32), local_step)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    scalars = [alpha] + [tf.constant(c, tf.float32) for c in (
        1 - opt.beta_1, 1 - opt.beta_2, opt.epsilon)]
    table = engine.plan.embedding.embeddings
    rest = []
    for grad, var in zip(grads, variables):
        slices = isinstance(grad, tf.IndexedSlices)
        if var.dtype != "float32" or grad is None or (
                slices and grad.indices.dtype != tf.int32):
            rest.append((grad, var))
            continue
        m = opt._momentums[opt._get_variable_index(var)]
        v = opt._velocities[opt._get_variable_index(var)]
        if var is table and parts:
            own = [p for p in parts if not p[2]]
            new = engine.embedding_adam([p[0] for p in own], [p[1] for p in own], m, v, var,
                                        *scalars, begin=1)
            new = engine.embedding_adam([p[0] for p in parts], [p[1] for p in parts],
                                        *new, *scalars, begin=0, end=1)
        elif slices:
            new = engine.embedding_adam([grad.values], [grad.indices], m, v, var, *scalars)
        else:
            new = engine.adam(grad, m, v, var, *scalars)
        for slot, value in zip((m, v, var), new):
            slot.assign(value)
    if rest:
        opt.apply(*map(list, zip(*rest)))  # counts the step
    else:
        opt.iterations.assign_add(1)
