"""Native LSTM kernels for fast exact training, built on this machine (issue 4).

lstm_kernels.c (beside this file) runs a whole LSTM layer's forward or backward pass in
one call (see its header for why), and the CNN + LSTM's Conv1D + ReLU + MaxPooling1D;
lstm_op.cc wraps them as four TensorFlow ops. They are
compiled here with the system's C/C++ compiler against the installed TensorFlow's headers
and ``-march=native``, once per source/TensorFlow/CPU combination (~15 s), into
``build/native/`` (or ``$LAB_NATIVE_DIR``). Concurrent workers wait on a file lock rather
than building twice.

When they cannot be built or loaded (no compiler, another platform, ``LAB_NATIVE=0``),
:func:`ops` says why and core/fast runs its XLA-compiled loops instead: same results,
slower.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SOURCE_DIR = Path(__file__).resolve().parent  # core/native/: the C sources beside this file
SOURCES = ("lstm_kernels.c", "lstm_op.cc")
DEFAULT_BUILD_DIR = SOURCE_DIR.parent.parent / "build" / "native"
# Set to 0 to use the XLA loops (for comparisons and the fallback's tests).
SWITCH = "LAB_NATIVE"
# Set to 0 to build (and load) a variant without AVX-512: the kernels' plain C loops, which
# CPUs without AVX-512 run; cached under its own name. One process loads one variant (both
# register the same op names), so tests run this one in a subprocess.
AVX512_SWITCH = "LAB_NATIVE_AVX512"
# A compile that takes longer than this is abandoned (the XLA loops are used).
BUILD_TIMEOUT_S = 300
# Tried in order: code for this CPU, then generic code for compilers without -march=native.
# Never -ffast-math: the kernels rely on IEEE inf/NaN (see lstm_kernels.c).
C_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp-simd", "-lm"],
    ["-O3", "-fopenmp-simd", "-lm"],
)


def flag_sets() -> list[list[str]]:
    """C_FLAG_SETS, with AVX-512 code generation switched off where AVX512_SWITCH=0 (so
    lstm_kernels.c's ``__AVX512F__`` paths are compiled out)."""
    if os.environ.get(AVX512_SWITCH, "1") != "0":
        return [list(flags) for flags in C_FLAG_SETS]
    return [[*flags, "-mno-avx512f"] for flags in C_FLAG_SETS]


class NativeError(RuntimeError):
    """Why the native kernels are not available."""


def build_dir() -> Path:
    return Path(os.environ.get("LAB_NATIVE_DIR") or DEFAULT_BUILD_DIR)


def _cpu_flags() -> str:
    """The CPU's feature flags: -march=native code is only valid on matching CPUs."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    return platform.processor()


def _tf_flags() -> tuple[list[str], list[str], str]:
    import tensorflow as tf

    return tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags(), tf.__version__


def library_path() -> Path:
    """Where this machine's build lives: named by a hash of everything that shapes it."""
    cflags, lflags, version = _tf_flags()
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((SOURCE_DIR / name).read_bytes())
    for part in (version, " ".join(cflags), " ".join(lflags), repr(flag_sets()),
                 platform.machine(), _cpu_flags()):
        h.update(part.encode())
    return build_dir() / f"lab_lstm_{h.hexdigest()[:16]}.so"


def _compile(out: Path, work: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cc or not cxx:
        raise NativeError("no C/C++ compiler found (gcc and g++, or $CC and $CXX)")
    cflags, lflags, _ = _tf_flags()
    errors = []
    for flags in flag_sets():
        compile_flags = [f for f in flags if not f.startswith("-l")]
        libs = [f for f in flags if f.startswith("-l")]
        obj = work / "lstm_kernels.o"
        steps = [
            [cc, *compile_flags, "-fPIC", "-c", str(SOURCE_DIR / "lstm_kernels.c"), "-o", str(obj)],
            [cxx, "-O2", "-fPIC", "-shared", "-Wno-deprecated-declarations",
             str(SOURCE_DIR / "lstm_op.cc"), str(obj), "-o", str(out), *cflags, *lflags, *libs],
        ]
        try:
            for cmd in steps:
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=BUILD_TIMEOUT_S)
                if done.returncode != 0:
                    raise NativeError(" ".join(cmd[:2]) + ": "
                                      + (done.stderr.strip().splitlines() or ["failed"])[-1])
            return
        except (NativeError, subprocess.TimeoutExpired, OSError) as e:
            errors.append(str(e))
    raise NativeError("could not compile the native kernels: " + " | ".join(errors))


def build() -> Path:
    """The compiled library for this machine, building it first if needed."""
    out = library_path()
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if out.exists():
            return out
        with tempfile.TemporaryDirectory(dir=out.parent) as work:
            tmp = Path(work) / out.name
            _compile(tmp, Path(work))
            os.replace(tmp, out)  # atomic: readers see the whole file or none
    return out


def _switched_off() -> bool:
    return os.environ.get(SWITCH, "1") == "0"


def enabled() -> bool:
    """Whether new training engines use the native kernels (read per engine, so tests and
    benchmarks can switch with the environment variable; switched off, nothing is built)."""
    return not _switched_off() and ops()[0] is not None


def status() -> str:
    """One line for the CLI and the benchmarks: which loops fast mode uses, and why."""
    return f"{SWITCH}=0: XLA-compiled loops" if _switched_off() else ops()[1]


@functools.cache
def ops() -> tuple[Any, str]:
    """(the loaded TensorFlow ops module or None, a one-line reason); builds on first use."""
    try:
        path = build()
    except (NativeError, OSError) as e:
        return None, f"{e}; using the XLA-compiled loops"
    import tensorflow as tf

    try:
        variant = "" if flag_sets() == [list(f) for f in C_FLAG_SETS] else ", no AVX-512"
        return tf.load_op_library(str(path)), f"native LSTM kernels ({path.name}{variant})"
    except Exception as e:  # noqa: BLE001 - any load failure means: use the fallback
        return None, f"could not load {path}: {e}; using the XLA-compiled loops"
