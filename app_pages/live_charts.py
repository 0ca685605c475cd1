"""The live view's charts, built once per web server for every watching tab.

Thirty tabs watching one run redraw its charts every second. Each redraw used to bin the
batch rows in the tab's own buffer, build the Vega-Lite specs and let Streamlit convert their
data to Arrow: ~20 ms of a 2-core server per tab per second, taken from the job being
watched. Here each run's charts are rebuilt only when its rows change, by whichever tab
looks first, with their data already serialized to Arrow (Streamlit passes bytes through);
every other tab gets a copy of the finished specs.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
from streamlit import dataframe_util

from app_pages import views
from core.board import Board
from core.config import REPORTED_ACCURACY, preset_of
from core.store import Run

IDLE_S = 600.0  # a run's charts nobody looked at for this long are dropped


@dataclass
class LiveCharts:
    """One run's charts as Vega-Lite specs (None until their rows exist)."""
    batch_loss: dict | None = None
    batch_accuracy: dict | None = None
    epoch_loss: dict | None = None
    epoch_accuracy: dict | None = None
    probes: dict | None = None
    batches_read: int = 0
    bin_width: int = 1

    def copy(self) -> LiveCharts:
        """A copy for one tab: Streamlit takes the datasets out of the spec it is given."""
        return copy.deepcopy(self)  # bytes are shared, not copied


@dataclass
class _RunCharts:
    curves: views.CurveBuffer = field(default_factory=views.CurveBuffer)
    versions: dict[str, Any] = field(default_factory=dict)  # part -> rows it was built from
    charts: LiveCharts = field(default_factory=LiveCharts)
    read: float = 0.0


def arrow_spec(spec: dict) -> dict:
    """``spec`` with each inline dataset (a list of records) serialized to Arrow IPC bytes,
    as Streamlit would do on every call."""
    out = dict(spec)
    out["datasets"] = {name: _arrow(pd.DataFrame(rows))
                       for name, rows in spec.get("datasets", {}).items()}
    return out


def _arrow(data) -> bytes:
    """Arrow IPC bytes, as Streamlit serializes chart data (a DataFrame or an Arrow table)."""
    return dataframe_util.convert_anything_to_arrow_bytes(data)


class ChartCache:
    """Every watched run's charts in one web server; safe across threads."""

    def __init__(self, board: Board):
        self.board = board
        self._lock = threading.Lock()
        self._runs: dict[str, _RunCharts] = {}
        self.builds = 0  # chart rebuilds so far (tests read it)

    def warm_in_background(self) -> threading.Thread:
        """Build the usual chart templates in a thread of their own (see warm_templates)."""
        thread = threading.Thread(target=warm_templates, name="chart-templates", daemon=True)
        thread.start()
        return thread

    def charts(self, run: Run) -> LiveCharts:
        """The run's charts as of the board's latest rows, rebuilt only if they changed."""
        now = time.monotonic()
        with self._lock:
            entry = self._runs.setdefault(run.id, _RunCharts())
            entry.read = now
            for gone in [r for r, e in self._runs.items() if now - e.read > IDLE_S]:
                del self._runs[gone]
            entry.curves.feed(self.board.metrics(run.id, "batch",
                                                 after_id=entry.curves.after_id))
            parts = {"batch": entry.curves.after_id,
                     "epoch": (len(self.board.metrics(run.id, "train")),
                               len(self.board.metrics(run.id, "val"))),
                     "probe": len(self.board.metrics(run.id, "probe")) if run.probes else 0}
            for part, version in parts.items():
                if entry.versions.get(part) != version:
                    _BUILD[part](entry.charts, run, self.board, entry.curves)
                    entry.versions[part] = version
                    self.builds += 1
            return entry.charts.copy()


def _batch(out: LiveCharts, run: Run, board: Board, curves: views.CurveBuffer) -> None:
    """Rebuilt every second while the run trains: the points go straight from the buffer
    to Arrow (no DataFrame), into the spec template."""
    out.batches_read, out.bin_width = curves.rows_read // 2, curves.width
    if curves.points():
        out.batch_loss, out.batch_accuracy = (
            {**views.batch_template(metric), "datasets": {views.POINTS: _arrow(
                pa.table(curves.columns(metric)))}} for metric in ("loss", "accuracy"))


def _epoch(out: LiveCharts, run: Run, board: Board, curves: views.CurveBuffer) -> None:
    """Rebuilt once per epoch: its rows into the template of the run's number of epochs."""
    epochs = views.epoch_frame(board.metrics(run.id, "train") + board.metrics(run.id, "val"))
    if not epochs.empty:
        ref, ref_label = views.tutorial_line(REPORTED_ACCURACY.get(preset_of(run.config)))
        last = int(epochs["epoch"].max())
        out.epoch_loss = _filled(_template("epoch", "loss", last),
                                 epochs[epochs["metric"] == "loss"])
        out.epoch_accuracy = _filled(_template("epoch", "accuracy", last, ref, ref_label),
                                     epochs[epochs["metric"] == "accuracy"])


def _probe(out: LiveCharts, run: Run, board: Board, curves: views.CurveBuffer) -> None:
    probes = views.probe_frame(board.metrics(run.id, "probe"), run.probes)
    if not probes.empty:
        out.probes = _filled(_template("probe", int(probes["epoch"].max())), probes)


_TEMPLATES = {"epoch": views.epoch_template, "probe": views.probe_template}
WARM_EPOCHS = 3  # templates built ahead for runs of up to this many epochs (the presets')


def warm_templates() -> None:
    """Build the usual charts' templates ahead (~1 s of Altair here), so that the first run
    a fresh server shows costs its watchers no more than later ones: the batch charts, and
    the epoch and probe charts of 1..WARM_EPOCHS epochs, with each tutorial reference line."""
    for metric in ("loss", "accuracy"):
        views.batch_template(metric)
    refs = [views.tutorial_line(None)] + [views.tutorial_line(p)
                                          for p in REPORTED_ACCURACY.values()]
    for last in range(WARM_EPOCHS + 1):
        _template("probe", last)
        if last:
            _template("epoch", "loss", last)
            for ref in refs:
                _template("epoch", "accuracy", last, *ref)


@functools.cache
def _template(kind: str, *key) -> dict:
    """A chart's spec without its rows, its own small datasets (a reference line) already
    Arrow: Altair takes 30-100 ms here to build a layered chart, so each is built once."""
    return arrow_spec(_TEMPLATES[kind](*key))


def _filled(template: dict, rows: pd.DataFrame) -> dict:
    """The template (left as it is) with ``rows`` as its dataset POINTS."""
    return {**template, "datasets": {**template["datasets"], views.POINTS: _arrow(rows)}}


_BUILD = {"batch": _batch, "epoch": _epoch, "probe": _probe}
