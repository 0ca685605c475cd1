"""The inference process: predictions, attributions and the tokenization inspector, served
to the web server by one long-lived process per lab home.

TensorFlow never enters the web server: once ``keras`` is imported there, Streamlit runs
``keras.backend.clear_session()`` (a full garbage collection) after every script and
fragment rerun of every session. So the pages ask this process instead, over a local
socket (``multiprocessing.connection``, authenticated with a random key that only the
lab home's owner can read). It is started on demand like the workers, keeps up to
``LRU_MODELS`` models loaded (safe mode, from the store only, as ``Predictor.load``), exits
after ``IDLE_EXIT_S`` without a request, and is started again, with a notice the page
shows, when it has died.

    python -m core.inference          # started by InferenceClient; LAB_HOME as the lab's
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import psutil

from core import paths
from core.predict import PredictError, Predictor, WordAttribution
from core.store import COMPLETED, RunNotFound, RunStore

SERVICE_FILE = "inference.json"  # {"pid", "port", "key"} of the running process, mode 0600
LOG_FILE = "inference.log"
LRU_MODELS = 8  # loaded models kept; the least recently used is dropped beyond this
IDLE_EXIT_S = 1800.0  # the process exits after this long without a request
START_TIMEOUT_S = 180.0  # TensorFlow's import on a busy 2-core machine
OPS = ("predict", "attribution", "inspect", "integrated_gradients", "inside", "ping")


class InferenceError(PredictError):
    """The inference process could not answer (it failed to start, or died twice)."""


# -- the process -----------------------------------------------------------------------------
class _Models:
    """The loaded runs, least recently used first; one call at a time (Keras models and
    the fast predictor's buffers are not shared between threads)."""

    def __init__(self, store: RunStore):
        self.store, self.lock = store, threading.Lock()
        self.loaded: OrderedDict[str, Predictor] = OrderedDict()

    def get(self, run_id: str) -> Predictor:
        run = self.store.get(run_id, reap=False)  # RunNotFound once deleted
        if run.status != COMPLETED:
            self.loaded.pop(run_id, None)
            raise PredictError(f"run {run_id} is {run.status}; only completed runs have a model")
        if run_id not in self.loaded:
            self.loaded[run_id] = Predictor.load(self.store, run_id)
            while len(self.loaded) > LRU_MODELS:
                self.loaded.popitem(last=False)
        self.loaded.move_to_end(run_id)
        return self.loaded[run_id]

    def call(self, op: str, run_id: str, arg: Any) -> Any:
        with self.lock:
            predictor = self.get(run_id)
            if op == "predict":
                return [p.as_dict() for p in predictor.predict(list(arg))]
            if op == "attribution":
                return predictor.attribution(arg)
            if op == "integrated_gradients":
                return predictor.integrated_gradients(arg)
            if op == "inside":
                return predictor.inside(arg)
            return predictor.inspect(arg)


def _answer(models: _Models, message: Any) -> tuple:
    """("ok", value) or ("error", kind, text): errors travel as text, never as objects."""
    try:
        op, run_id, arg = message
        if op not in OPS:
            raise PredictError(f"unknown request {op!r}")
        return ("ok", None if op == "ping" else models.call(op, run_id, arg))
    except RunNotFound as exc:
        return ("error", "not-found", exc.run_id)
    except PredictError as exc:
        return ("error", "predict", str(exc))
    except Exception as exc:  # noqa: BLE001 - the page shows it; the process goes on
        return ("error", "predict", f"{type(exc).__name__}: {exc}")


class _Service:
    def __init__(self, home: Path):
        self.models = _Models(RunStore(home))
        self.last_request = time.monotonic()

    def handle(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    return
                self.last_request = time.monotonic()
                conn.send(_answer(self.models, message))
                self.last_request = time.monotonic()

    def watch_idle(self, service_file: Path) -> None:
        while time.monotonic() - self.last_request < IDLE_EXIT_S:
            time.sleep(min(30.0, IDLE_EXIT_S / 10))
        _remove_if_ours(service_file)
        os._exit(0)


def _remove_if_ours(service_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(service_file.read_text())["pid"] == os.getpid():
            service_file.unlink()


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def serve(home: Path) -> None:
    """Listen on a loopback port, announce it in the service file, answer until idle."""
    import keras  # noqa: F401 - imported before announcing: the first request is then quick

    key = secrets.token_bytes(32)
    listener = Listener(("127.0.0.1", 0), authkey=key)
    service = _Service(home)
    service_file = home / SERVICE_FILE
    _write_private(service_file, json.dumps(
        {"pid": os.getpid(), "port": listener.address[1], "key": key.hex()}))
    threading.Thread(target=service.watch_idle, args=(service_file,), daemon=True).start()
    while True:
        try:
            conn = listener.accept()
        except (OSError, EOFError):  # a client that failed authentication, or went away
            continue
        threading.Thread(target=service.handle, args=(conn,), daemon=True).start()


# -- the client ------------------------------------------------------------------------------
class InferenceClient:
    """The web server's handle on the inference process (one per lab home, shared by every
    session; calls are serialized, each one round trip of well under a millisecond)."""

    def __init__(self, home: Path | str):
        self.home = Path(home)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self.restarted_at: float | None = None  # when a dead process was last replaced

    def predict(self, run_id: str, texts: list[str]) -> list[dict]:
        return self._call("predict", run_id, list(texts))

    def attribution(self, run_id: str, text: str) -> tuple[float, list[WordAttribution]]:
        return self._call("attribution", run_id, text)

    def inspect(self, run_id: str, text: str) -> dict:
        return self._call("inspect", run_id, text)

    def integrated_gradients(self, run_id: str, text: str) -> dict:
        return self._call("integrated_gradients", run_id, text)

    def inside(self, run_id: str, text: str) -> dict:
        return self._call("inside", run_id, text)

    def ping(self) -> None:
        self._call("ping", "", None)

    def pid(self) -> int | None:
        info = _read_service(self.home)
        return info["pid"] if info else None

    def _call(self, op: str, run_id: str, arg: Any) -> Any:
        with self._lock:
            for attempt in range(2):
                connected = self._conn is not None
                try:
                    conn = self._conn or self._connect()
                    conn.send((op, run_id, arg))
                    reply = conn.recv()
                    break
                except (EOFError, OSError) as exc:
                    self._drop()
                    if connected:  # it died under us: the next attempt starts another
                        self.restarted_at = time.time()
                    if attempt:
                        raise InferenceError(f"the inference process stopped twice while "
                                             f"answering ({exc or type(exc).__name__})") from exc
        return _unpack(reply)

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
        self._conn = None

    def _connect(self) -> Connection:
        info = _read_service(self.home)
        if info is not None and _alive(info["pid"]):
            with contextlib.suppress(OSError, EOFError):
                return self._open(info)
        if info is not None:  # announced, but dead or not answering
            self.restarted_at = time.time()
        return self._open(start(self.home, stale=info))

    def _open(self, info: dict) -> Connection:
        self._conn = Client(("127.0.0.1", info["port"]), authkey=bytes.fromhex(info["key"]))
        return self._conn


def _unpack(reply: tuple) -> Any:
    if reply[0] == "ok":
        return reply[1]
    _, kind, text = reply
    if kind == "not-found":
        raise RunNotFound(text)
    raise PredictError(text)


def _read_service(home: Path) -> dict | None:
    try:
        return json.loads((home / SERVICE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def start(home: Path, stale: dict | None = None) -> dict:
    """Start the process unless one is already running; returns its service info. ``stale``:
    the info of a process that did not answer, killed here unless another caller has
    replaced it meanwhile. A file lock keeps two sessions (or web servers) from starting two."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "inference.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = _read_service(home)
        if info is not None and info != stale and _alive(info["pid"]):
            return info
        if info is not None:
            with contextlib.suppress(OSError):
                os.kill(info["pid"], signal.SIGKILL)
        (home / SERVICE_FILE).unlink(missing_ok=True)
        proc = _spawn(home)
        return _wait_ready(home, proc)


def _spawn(home: Path) -> subprocess.Popen:
    log = open(home / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ, LAB_HOME=str(home), PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.Popen([sys.executable, "-m", "core.inference"], cwd=paths.PROJECT_ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def _wait_ready(home: Path, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        info = _read_service(home)
        if info is not None and info["pid"] == proc.pid:
            return info
        if proc.poll() is not None:
            raise InferenceError(f"the inference process exited at start (code "
                                 f"{proc.returncode}): {_log_tail(home)}")
        time.sleep(0.05)
    proc.kill()
    raise InferenceError(f"the inference process did not start within {START_TIMEOUT_S:.0f} s")


def _log_tail(home: Path, n: int = 600) -> str:
    try:
        return (home / LOG_FILE).read_text(errors="replace")[-n:].strip()
    except OSError:
        return "(no log)"


def stop(home: Path) -> None:
    """Ask the running process, if any, to exit (tests, and archiving a lab home)."""
    info = _read_service(home)
    if info is not None and _alive(info["pid"]):
        with contextlib.suppress(OSError):
            os.kill(info["pid"], signal.SIGTERM)
    (home / SERVICE_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    serve(paths.lab_home())
