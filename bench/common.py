"""Shared helpers for the benchmark scripts: machine facts, timing, BENCHMARKS.md sections.

Every script runs its compared variants side by side in one process, prints a table with
ratios and rewrites its own section of BENCHMARKS.md (between marker comments), so
re-running a script updates its numbers and leaves the other sections alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
# The real reviews, used unless IMDB_DATA says otherwise.
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
# Peak fp32 FLOPs per cycle per core with AVX-512: 2 FMA units x 16 lanes x 2 (mul + add).
AVX512_FLOPS_PER_CYCLE = 64
AVX2_FLOPS_PER_CYCLE = 32  # 2 FMA units x 8 lanes x 2

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def use_real_data() -> str:
    """Point IMDB_DATA at the shared archive when nothing else is set; returns it."""
    if not os.environ.get("IMDB_DATA") and DEFAULT_ARCHIVE.exists():
        os.environ["IMDB_DATA"] = str(DEFAULT_ARCHIVE)
    os.environ.setdefault("LAB_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return os.environ.get("IMDB_DATA", "")


def flags(doc: str, **defaults: object) -> argparse.Namespace:
    """The script's flags, one --name per default (typed like it), parsed; then the real
    data is selected (see use_real_data), its path in ``.source``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, value in defaults.items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = ap.parse_args()
    args.source = use_real_data()
    return args


def test_accuracy(model, x, y, maxlen: int) -> float:
    """Test accuracy of a trained model as the engine reports it (core.evaluate)."""
    from core.evaluate import evaluate

    p = model.predict(x, batch_size=512, verbose=0).ravel()
    return evaluate(y, p, (x != 0).sum(axis=1), maxlen)["test_accuracy"]


def train_rows(ds, cfg, n_fit: int | None = None) -> tuple:
    """cfg's first train_size training reviews (0: all) as a run trains on them: (encoder,
    rows, labels). An n-gram model's rows carry the bigrams counted on the first ``n_fit``
    of them (default: all; core.training.ngram_arrays); any other model's are the padded
    word codes, and its encoder None."""
    from core.config import ARCHITECTURES
    from core.training import ngram_arrays

    if not ARCHITECTURES[cfg.architecture].get("ngrams"):
        return (None, *ds.arrays("train", cfg.top_words, cfg.maxlen, cfg.train_size))
    y = ds.train.head(cfg.train_size).labels.astype("float32")
    encoder, x = ngram_arrays(ds, cfg, len(y) if n_fit is None else n_fit)
    return encoder, x, y


@functools.cache
def lscpu() -> dict[str, str]:
    """lscpu's fields (run once per process)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def cpu_ghz() -> float:
    """Nominal clock: lscpu's max MHz, else /proc/cpuinfo's current MHz."""
    info = lscpu()
    for key in ("CPU max MHz", "CPU MHz"):
        if info.get(key):
            return float(info[key]) / 1000
    try:
        text = Path("/proc/cpuinfo").read_text()
        return float(re.search(r"cpu MHz\s*:\s*([\d.]+)", text).group(1)) / 1000
    except (OSError, AttributeError):
        return float("nan")


def machine() -> dict[str, object]:
    info = lscpu()
    flags = info.get("Flags", "")
    per_cycle = AVX512_FLOPS_PER_CYCLE if "avx512f" in flags else AVX2_FLOPS_PER_CYCLE
    cores = os.cpu_count() or 1
    ghz = cpu_ghz()
    return {"model": info.get("Model name", "?"), "cores": cores, "ghz": ghz,
            "flops_per_cycle": per_cycle, "peak_gflops": cores * ghz * per_cycle,
            "simd": "AVX-512" if "avx512f" in flags else "AVX2"}


def machine_line() -> str:
    m = machine()
    return (f"{m['model']}, {m['cores']} cores @ {m['ghz']:.2f} GHz ({m['simd']}); fp32 peak "
            f"{m['cores']} x {m['ghz']:.2f} GHz x {m['flops_per_cycle']} FLOP/cycle = "
            f"{m['peak_gflops']:.0f} GFLOP/s")


def load_line() -> str:
    """The 1-minute load average: the CPU is shared, so timings carry this caveat."""
    try:
        line = f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return ""
    if os.nice(0) < 0:  # other work on the machine yielded to this benchmark
        line += f" (this benchmark ran at nice {os.nice(0)}{_autogroup()})"
    return line


def _autogroup() -> str:
    """Under the kernel's autogroup scheduling a nice value only ranks processes within
    their own session: say whether it was on."""
    try:
        on = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return ""
    return ", kernel autogroup on: nice ranks only within its session" if on else \
        ", kernel autogroup off"


def project_relative(value: str) -> str:
    """A path beside or inside the project (the shared data folder, say) as a path relative
    to the project root, which is where the commands run: ``../shared/data/...``; any other
    value as it is."""
    path = Path(value)
    if not path.is_absolute():
        return value
    try:
        path.resolve().relative_to(ROOT.parent)
    except ValueError:
        return value
    return os.path.relpath(path.resolve(), ROOT)


def command_line() -> str:
    env = " ".join(f"{k}={shlex.quote(project_relative(os.environ[k]))}"
                   for k in ("IMDB_DATA", "LAB_HOME") if os.environ.get(k))
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    nice = os.nice(0)
    return f"{env} {f'nice -n {nice} ' if nice else ''}{cmd}".strip()


def kernels() -> str:
    """Which loops fast mode uses (core.native.status), the kernels named by the commit of
    their source (core/native) rather than by the build's file name: builds are cached by a
    hash of source and flags, so a file name stops existing when the kernels change."""
    from core import native

    line = native.status()
    found = re.fullmatch(r"native LSTM kernels \(lab_lstm_\w+\.so(.*)\)", line)
    if not found:
        return line  # the XLA loops, and why
    variant = found.group(1)  # ", no AVX-512" or nothing
    line = "native LSTM kernels"
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h", "--", "core/native",
                                 "core/native.py"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "core/native",
                                "core/native.py"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return line
    return (f"{line} (core/native at commit {commit}{variant}"
            f"{', with uncommitted changes' if dirty else ''})")


def now() -> str:
    return dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [fmt(r) for r in cells[1:]])


def write_section(key: str, title: str, body: str) -> None:
    """Replace (or append) the section ``key`` of BENCHMARKS.md and print it."""
    start, end = f"<!-- bench:{key} start -->", f"<!-- bench:{key} end -->"
    section = (f"{start}\n## {title}\n\n{body.strip()}\n\n"
               f"Machine: {machine_line()}; {load_line()}.  \n"
               f"Command: `{command_line()}`  \nDate: {now()}\n{end}")
    print("\n" + section)
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else (
        "# Benchmarks\n\nEach section is written by the script it names (bench/); re-running a "
        "script replaces its section. The CPU is shared with other work, so compare the "
        "ratios measured side by side in one run rather than absolute times across runs.\n")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + section + "\n")
    BENCHMARKS_MD.write_text(text)
