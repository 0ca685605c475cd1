"""One fast training step, op by op: which parts run on one thread (issue 15, target 3).

Section 1f samples whole epochs; this follows each step of one epoch through TensorFlow's
profiler (tf.profiler.experimental: every op's start and end on the executor's threads,
and the Python call around them) and cuts it at the LSTM ops. A step runs the padding
prefix's forward (one row), the batch's two halves side by side, the head and loss, the
halves' backward, the prefix's backward and Adam's steps, and around them the Python and
TensorFlow work of calling the step. Means over the epoch's steps; the halves' rows also
give how much sooner one half ends than the other. Epochs before the profiled one warm up.

    IMDB_DATA=../shared/data/aclImdb_v1_labeled.tar.gz nice -n -20 .venv/bin/python bench/step_timeline.py
"""

from __future__ import annotations

import dataclasses
import glob
import tempfile
import time

import common
import numpy as np

# The traced step fast.fit calls (core/fast/engine.py, _Engine._train_rows).
STEP = "_train_rows"
SEGMENTS = (
    ("call", "Python and TensorFlow, from the call to its first op"),
    ("to prefix", "first ops, up to the padding prefix's forward"),
    ("prefix fwd", "padding prefix, forward (one row)"),
    ("to halves", "the prefix's state to the halves"),
    ("halves fwd", "the halves' forward, side by side"),
    ("head", "head, loss and their gradients"),
    ("halves bwd", "the halves' backward, side by side"),
    ("to prefix bwd", "up to the prefix's backward"),
    ("prefix bwd", "padding prefix, backward (one row)"),
    ("after", "after it: Adam's steps left, assignments"),
    ("return", "from the last op back to Python"),
    ("between", "between steps (fast.fit's loop, callbacks)"),
)
HALVES = ("halves fwd", "halves bwd")


def events(logdir: str) -> dict[str, list[tuple[str, float, float]]]:
    """(name, start ms, end ms) per event, per line (thread) of the host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    path = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    names = plane.event_metadata
    lines = {}
    for line in plane.lines:
        base = line.timestamp_ns * 1e-6
        lines[f"{line.name}/{line.id}"] = [
            (names[e.metadata_id].name, base + e.offset_ps * 1e-9,
             base + (e.offset_ps + e.duration_ps) * 1e-9) for e in line.events]
    return lines


def segments(lines) -> tuple[dict[str, float], dict[str, float], int]:
    """Mean ms per step of each segment, of the halves' uneven end, and the steps used."""
    calls = [(s, e) for k, evs in lines.items() if k.startswith("python")
             for name, s, e in evs if name == STEP]
    ops = sorted(((name.split(":")[-1], s, e) for k, evs in lines.items()
                  if k.startswith("tf_Compute") for name, s, e in evs
                  if name not in ("ExecutorState::Process", "ExecutorDoneCallback")
                  and not name.startswith(("Threadpool", "Memory"))), key=lambda o: o[1])
    starts = np.array([o[1] for o in ops])
    got = {key: [] for key, _ in SEGMENTS}
    uneven = {key: [] for key in HALVES}
    calls.sort()
    for (s0, e0), (s_next, _) in zip(calls[1:], calls[2:] + [(None, None)]):
        inside = ops[np.searchsorted(starts, s0): np.searchsorted(starts, e0)]
        fwd = [o for o in inside if o[0] == "LabLstmForward"]
        bwd = [o for o in inside if o[0] == "LabLstmBackward"]
        if len(fwd) != 3 or len(bwd) != 3 or not inside:
            continue  # not a one-layer model's step
        pf, hf, hb, pb = fwd[0], fwd[1:], bwd[:2], bwd[2]
        first, last = inside[0][1], max(o[2] for o in inside)
        cuts = [s0, first, pf[1], pf[2], min(o[1] for o in hf), max(o[2] for o in hf),
                min(o[1] for o in hb), max(o[2] for o in hb), pb[1], pb[2], last, e0]
        for (key, _), a, b in zip(SEGMENTS, cuts, cuts[1:]):
            got[key].append(b - a)
        if s_next is not None:
            got["between"].append(s_next - e0)
        for key, pair in zip(HALVES, (hf, hb)):
            uneven[key].append(abs(pair[0][2] - pair[1][2]))
    return ({k: float(np.mean(v)) for k, v in got.items()},
            {k: float(np.mean(v)) for k, v in uneven.items()}, len(got["call"]))


def profile(name: str, args) -> dict:
    """One preset's epochs, the last one profiled."""
    import keras
    import tensorflow as tf

    from core import fast
    from core.config import preset
    from core.data import load_dataset
    from core.models import build_model, compile_model

    cfg = preset(name, train_size=args.train_size, epochs=args.epochs)
    x, y = load_dataset().arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
    keras.utils.set_random_seed(cfg.seed)
    model = compile_model(build_model(cfg), cfg)
    with tempfile.TemporaryDirectory() as logdir:
        for epoch in range(cfg.epochs):
            last = epoch == cfg.epochs - 1
            if last:
                tf.profiler.experimental.start(logdir)
            w0 = time.perf_counter()
            fast.fit(model, dataclasses.replace(cfg, epochs=epoch + 1), x, y, None, None, [],
                     initial_epoch=epoch)
            wall = time.perf_counter() - w0
            if last:
                tf.profiler.experimental.stop()
        means, uneven, steps = segments(events(logdir))
    print(name, f"wall {wall:.2f}", steps, means, flush=True)
    return {"wall": wall, "means": means, "uneven": uneven, "steps": steps}


def main() -> None:
    args = common.flags(__doc__, train_size=25000, epochs=2,
                        presets="seed-lstm,seed-cnn-lstm")
    from core import worker
    from core.config import preset

    worker.preload()
    worker.set_threads(preset(args.presets.split(",")[0]))
    names = args.presets.split(",")
    runs = [profile(name, args) for name in names]
    totals = [sum(r["means"].values()) for r in runs]
    rows = [[label] + [f"{r['means'][key]:.3f} ({100 * r['means'][key] / t:.1f} %)"
                       for r, t in zip(runs, totals)] for key, label in SEGMENTS]
    alone = [t - sum(r["means"][k] for k in HALVES) for t, r in zip(totals, runs)]
    rows.append(["step, call to call"] + [f"{t:.3f}" for t in totals])
    rows.append(["of it outside the halves (one thread or none)"]
                + [f"{a:.3f} ({100 * a / t:.1f} %)" for a, t in zip(alone, totals)])
    rows.append(["one half ending sooner than the other: forward / backward"]
                + [f"{r['uneven']['halves fwd']:.3f} / {r['uneven']['halves bwd']:.3f}"
                   for r in runs])
    rows.append(["epoch wall s (profiled), steps"] + [f"{r['wall']:.2f}, {r['steps']}"
                                                      for r in runs])
    body = (f"Epoch {args.epochs} of fast-mode training on the first {args.train_size} "
            "training reviews under TensorFlow's profiler: every step cut at its LSTM ops "
            "(the padding prefix's forward, the halves' two forwards, their two backwards, "
            "the prefix's backward), ms per step, mean over the epoch's steps (share of the "
            "step). Only the halves run on both cores; everything else in a step runs on "
            "one thread, or on none while Python works. TensorFlow threads as "
            f"core.worker.set_threads sizes them. Native kernels: {common.kernels()}.\n\n"
            + common.table(["part of a step, ms"] + names, rows))
    common.write_section("step_timeline", "1g. One fast training step, op by op", body)


if __name__ == "__main__":
    main()
