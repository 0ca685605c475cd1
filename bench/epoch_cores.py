"""Where a fast epoch's wall time goes: both cores busy, or one (issue 15, target 3).

Section 1's fraction of the fp32 peak divides the epoch's work by its wall time, so it is
bounded by how much of that time both cores work. A batch's two halves run side by side,
but some of each batch runs on one thread while the other core waits: the padding prefix
(one row, its forward before the halves and its backward after them), Adam's step, and
the Python and TensorFlow dispatch between steps. This samples one epoch with
``perf record -e cpu-clock`` (every thread of the process, ``--freq`` samples per second),
cuts the epoch into ``--bin-ms`` slices and counts the slices in which two, one or none of
the process's threads were sampled, and, in the one-thread slices, which library the lone
thread was in. Epochs before the sampled one warm up (tracing).

    IMDB_DATA=../shared/data/aclImdb_v1_labeled.tar.gz nice -n -20 .venv/bin/python bench/epoch_cores.py
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import common
import numpy as np

# Library (shared object's file name) -> the column it is counted in.
KINDS = ("native LSTM ops", "native Adam ops", "Python", "numpy", "TensorFlow", "libc", "OS")


def kind(symbol: str, library: str) -> str:
    if library.startswith("lab_lstm"):
        return KINDS[1] if "adam" in symbol.lower() or "segment" in symbol else KINDS[0]
    for name, out in (("libpython", 2), ("multiarray", 3), ("numpy", 3), ("tensorflow", 4),
                      ("_pywrap", 4), ("libc.", 5), ("kernel", 6)):
        if name in library:
            return KINDS[out]
    return "other"


def samples(perf_data: Path) -> list[tuple[int, float, str]]:
    """(thread id, time s, kind) per sample of ``perf script``."""
    out = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "tid,time,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        library = parts[-1].strip("()").rsplit("/", 1)[-1] if parts[-1].startswith("(") else ""
        rows.append((int(parts[0]), float(parts[1].rstrip(":")),
                     kind(" ".join(parts[3:-1]), library)))
    return rows


def busy_shares(rows, bin_s: float) -> tuple[dict[int, float], dict[str, float]]:
    """Shares of the sampled span's slices with 0, 1, 2+ threads sampled, and the kinds
    sampled in the one-thread slices (shares of those samples)."""
    slices: dict[int, list] = collections.defaultdict(list)
    for tid, t, k in rows:
        slices[int(t / bin_s)].append((tid, k))
    first, last = min(slices), max(slices)
    count: collections.Counter = collections.Counter()
    alone: collections.Counter = collections.Counter()
    for s in range(first, last + 1):
        got = slices.get(s, [])
        threads = min(len({tid for tid, _ in got}), 2)
        count[threads] += 1
        if threads == 1:
            alone.update(k for _, k in got)
    n, m = sum(count.values()), max(sum(alone.values()), 1)
    return {k: count[k] / n for k in (0, 1, 2)}, {k: alone[k] / m for k in alone}


def profile(name: str, args) -> list:
    """One preset's epochs; the last one sampled. Returns its table row."""
    import keras

    from core import fast
    from core.config import preset
    from core.data import load_dataset
    from core.fast import engine as engine_mod
    from core.models import build_model, compile_model

    cfg = preset(name, train_size=args.train_size, epochs=args.epochs)
    x, y = load_dataset().arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size)
    keras.utils.set_random_seed(cfg.seed)
    model = compile_model(build_model(cfg), cfg)
    plan = fast.make_plan(model, cfg.maxlen)
    key = plan.bucket_steps(x)
    windows = [max(int(key[rows].max()), 1) for rows in engine_mod._batches(
        key, cfg.batch_size, np.random.default_rng(0))]
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "perf.data"
        for epoch in range(cfg.epochs):
            perf = None
            if epoch == cfg.epochs - 1:
                perf = subprocess.Popen(
                    ["perf", "record", "-e", "cpu-clock", "-F", str(args.freq), "-p",
                     str(os.getpid()), "-o", str(data)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(1.0)  # perf attached
            w0, c0 = time.perf_counter(), time.process_time()
            fast.fit(model, dataclasses.replace(cfg, epochs=epoch + 1), x, y, None, None, [],
                     initial_epoch=epoch)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                _, err = perf.communicate()
                if not data.exists():  # not allowed (perf_event_paranoid), say
                    raise SystemExit(f"perf record sampled nothing: {err.decode().strip()}")
        shares, alone = busy_shares(samples(data), args.bin_ms / 1e3)
    print(name, f"wall {wall:.2f} cpu {cpu:.2f}", shares, alone, flush=True)
    return [name, cfg.epochs, f"{wall:.2f}", f"{cpu:.2f}", f"{cpu / wall:.2f}",
            f"{100 * shares[2]:.1f} %", f"{100 * shares[1]:.1f} %", f"{100 * shares[0]:.1f} %",
            f"{plan.steps - np.mean(windows):.0f} / {np.mean(windows):.0f}",
            ", ".join(f"{k} {100 * v:.0f} %" for k, v in sorted(alone.items(),
                                                                 key=lambda kv: -kv[1]))]


def main() -> None:
    args = common.flags(__doc__, train_size=25000, epochs=2, freq=4000, bin_ms=0.5,
                        presets="seed-lstm,seed-cnn-lstm")
    if shutil.which("perf") is None:
        raise SystemExit("epoch_cores.py needs perf (Debian: apt-get install linux-perf)")
    from core import worker
    from core.config import preset

    worker.preload()
    worker.set_threads(preset(args.presets.split(",")[0]))
    rows = [profile(name, args) for name in args.presets.split(",")]
    header = ["preset", "epoch", "wall s", "CPU s", "cores busy (CPU / wall)",
              "two threads on a CPU", "one", "none", "prefix / own steps per batch (mean)",
              "while one runs alone (its samples)"]
    body = (f"Epoch {args.epochs} of fast-mode training on the first {args.train_size} "
            f"training reviews, sampled by perf (cpu-clock, {args.freq} Hz per thread) and cut "
            f"into {args.bin_ms} ms slices: the share of slices with two of the process's "
            "threads sampled, one, or none, and in the one-thread slices which library the "
            "lone thread was in. Native LSTM ops alone are the padding prefix (one row: its "
            "forward before a batch's halves, its backward after them; a batch runs its "
            "prefix and its own steps, the prefix column) and any half that ends before "
            "the other. TensorFlow threads as core.worker.set_threads sizes them. "
            f"Native kernels: {common.kernels()}.\n\n" + common.table(header, rows))
    common.write_section("epoch_cores", "1f. Where a fast epoch's wall time goes: both cores "
                         "or one", body)


if __name__ == "__main__":
    main()
