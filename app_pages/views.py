"""What the dashboard shows, shaped for display: tables, chart data, Altair charts and the
small pieces of HTML the pages render. Plain python/numpy/pandas/altair, no streamlit, so
every function here can be tested (and reused) without a running app.

Chart data is bounded: batch curves keep at most :data:`MAX_POINTS` bins per line however
long a run is (:class:`CurveBuffer`), ROC curves are thinned by the engine, histograms have
at most :data:`MAX_BINS` bars.
"""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from core import fields, fmt
from core.config import ARCHITECTURES, COMMON_FIELDS, FIELD_TYPES, TrainConfig
from core.predict import ZIP_MAGIC, refuse_model_file
from core.store import COMPLETED, QUEUED, RUNNING
from core.text import (
    MAX_TEXT_CHARS,
    OOV,
    PAD,
    START,
    Encoder,
    check_probes,
    tokenize_spans,
)

MAX_POINTS = 300  # points per batch-level line, whatever the run's length
MAX_BINS = 60  # bars in the review-length histogram
EMA_ALPHA = 0.1  # batch-curve smoothing: weight of the newest batch
POSITIVE_RGB = (22, 150, 80)
NEGATIVE_RGB = (210, 45, 45)

# -- formatting ------------------------------------------------------------------------------


# (core/fmt.py, under the names the pages use)
fmt_seconds = fmt.seconds
fmt_pct = fmt.pct
fmt_date = fmt.date


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$&])")


def md_escape(text: str) -> str:
    """Text shown inside Streamlit markdown as typed: no emphasis, links, colour
    directives, icons or HTML from names users chose."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def safe_filename(text: str, n: int = 80) -> str:
    """A download file name from a run name: letters, digits, '.', '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:n] or "run"


def short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# -- the Train page's form --------------------------------------------------------------------

# The form's sections, labels, help and float steps: core/fields.py, the one field table.
MODEL_FIELDS = fields.in_section(fields.MODEL)
DATA_FIELDS = fields.in_section(fields.DATA)
TRAINING_FIELDS = fields.in_section(fields.TRAINING)
# What changes the model's weights and shapes (the model-summary cache key).
MODEL_SHAPE_FIELDS = ("architecture", "top_words", "maxlen") + MODEL_FIELDS
FIELD_LABELS = {name: f.label for name, f in fields.FIELDS.items() if name != "architecture"}
FIELD_HELP = {name: f"{f.help} {fields.allowed(f)}".strip()
              for name, f in fields.FIELDS.items() if name != "architecture"}
FLOAT_INPUTS = {name: (f.step, f.fmt) for name, f in fields.FIELDS.items() if f.step}
assert set(DATA_FIELDS + TRAINING_FIELDS) == set(COMMON_FIELDS), "form must show every field"
assert {f for a in ARCHITECTURES.values() for f in a["uses"]} <= set(MODEL_FIELDS)


def form_sections(architecture: str) -> list[tuple[str, list[str]]]:
    """The form's field groups for one architecture: only the hyperparameters it uses."""
    uses = set(ARCHITECTURES.get(architecture, {}).get("uses", ()))
    return [("Model", [f for f in MODEL_FIELDS if f in uses]),
            ("Data", list(DATA_FIELDS)),
            ("Training", list(TRAINING_FIELDS))]


def field_kind(name: str) -> type:
    return FIELD_TYPES[name]


def model_key(cfg: TrainConfig) -> str:
    """The part of a config that determines the model's layers and weights, as JSON."""
    d = cfg.to_dict()
    uses = set(ARCHITECTURES.get(cfg.architecture, {}).get("uses", ()))
    return json.dumps({k: d[k] for k in MODEL_SHAPE_FIELDS
                       if k in ("architecture", "top_words", "maxlen") or k in uses},
                      sort_keys=True)


def parse_probes(text: str) -> tuple[list[str], list[str]]:
    """Probe sentences from a text area (one per line, blank lines skipped) and what
    core.text.check_probes says of them: (probes, errors)."""
    probes = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return probes, check_probes(probes)


# -- live training curves -------------------------------------------------------------------


class CurveBuffer:
    """Batch-level metrics of one run, read incrementally (``after_id``) and kept bounded.

    Each metric is a list of bins covering ``width`` consecutive steps; a bin holds the mean
    of its raw values and the exponential moving average (bias-corrected, as TensorBoard's
    smoothing) at its last step. When a metric has more than ``max_points`` bins every bin
    width doubles, so memory and chart size stay bounded for any run length while the EMA
    is exact over every batch.
    """

    def __init__(self, max_points: int = MAX_POINTS, alpha: float = EMA_ALPHA):
        self.max_points = max(2, int(max_points))
        self.alpha = alpha
        self.after_id = 0
        self.width = 1
        self.rows_read = 0
        # name -> {"n": batches seen, "ema": raw EMA, "bins": [[index, sum, count, ema, step]]}
        self.series: dict[str, dict[str, Any]] = {}

    def feed(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add metric rows (``RunStore.metrics(phase='batch', after_id=...)``); returns how
        many were new."""
        new = 0
        for r in rows:
            if r["id"] <= self.after_id:
                continue
            self.after_id = r["id"]
            new += 1
            value = r["value"]
            if value is None or not math.isfinite(value):
                continue  # a diverged batch: the run's status says so
            s = self.series.setdefault(r["name"], {"n": 0, "ema": 0.0, "bins": []})
            s["n"] += 1
            s["ema"] = (1 - self.alpha) * s["ema"] + self.alpha * value
            smoothed = s["ema"] / (1 - (1 - self.alpha) ** s["n"])
            index = (int(r["step"]) - 1) // self.width
            bins = s["bins"]
            if bins and bins[-1][0] == index:
                b = bins[-1]
                b[1] += value
                b[2] += 1
                b[3], b[4] = smoothed, int(r["step"])
            else:
                bins.append([index, value, 1, smoothed, int(r["step"])])
            while len(s["bins"]) > self.max_points:
                self._coarsen()  # replaces every series' bin list
        self.rows_read += new
        return new

    def _coarsen(self) -> None:
        self.width *= 2
        for s in self.series.values():
            merged: list[list] = []
            for index, total, count, ema, step in s["bins"]:
                if merged and merged[-1][0] == index // 2:
                    m = merged[-1]
                    m[1] += total
                    m[2] += count
                    m[3], m[4] = ema, step
                else:
                    merged.append([index // 2, total, count, ema, step])
            s["bins"] = merged

    def columns(self, name: str) -> dict[str, list]:
        """One metric's points as columns: metric, step (last step of the bin), value (bin
        mean), smoothed (EMA)."""
        bins = self.series.get(name, {}).get("bins", [])
        return {"metric": [name] * len(bins), "step": [b[4] for b in bins],
                "value": [b[1] / b[2] for b in bins], "smoothed": [b[3] for b in bins]}

    def frame(self) -> pd.DataFrame:
        """Every metric's points (``columns``), one row each."""
        parts = [pd.DataFrame(self.columns(name)) for name in self.series]
        return (pd.concat(parts, ignore_index=True) if parts
                else pd.DataFrame(columns=["metric", "step", "value", "smoothed"]))

    def points(self) -> int:
        return max((len(s["bins"]) for s in self.series.values()), default=0)


def epoch_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Epoch-level metrics (phases 'train' and 'val') -> epoch (1-based), phase, metric, value."""
    out = [{"epoch": int(r["epoch"]) + 1,
            "phase": "validation" if r["phase"] == "val" else "train",
            "metric": r["name"], "value": r["value"]}
           for r in rows
           if r["phase"] in ("train", "val") and r["name"] in ("loss", "accuracy")
           and r["value"] is not None and math.isfinite(r["value"])]
    return pd.DataFrame(out, columns=["epoch", "phase", "metric", "value"])


def probe_frame(rows: Iterable[Mapping[str, Any]], probes: Sequence[str]) -> pd.DataFrame:
    """Probe predictions -> epoch (0 = before training), sentence, probability."""
    out = []
    for r in rows:
        if r["phase"] != "probe" or not str(r["name"]).startswith("probe"):
            continue
        try:
            i = int(str(r["name"])[5:])
        except ValueError:
            continue
        text = probes[i] if i < len(probes) else r["name"]
        out.append({"epoch": int(r["epoch"]) + 1, "sentence": f"{i + 1}. {short(text, 48)}",
                    "probability": r["value"]})
    return pd.DataFrame(out, columns=["epoch", "sentence", "probability"])


LIVE_POLL_S = 1.0  # a run's live view redraws once a second while it trains or is next
QUEUED_POLL_S = 5.0  # ... and every 5 s while it waits further back (only its place changes)


def live_poll_s(status: str, queue_position: int | None) -> float | None:
    """How often a run's live view redraws: a run next in the queue is polled as often as a
    training one, so that its start shows at once without a full redraw; never once ended."""
    if status == RUNNING or (status == QUEUED and queue_position == 1):
        return LIVE_POLL_S
    return QUEUED_POLL_S if status == QUEUED else None


def progress_view(run: Any, queue_position: int | None = None,
                  wait_s: float | None = None) -> tuple[float, str]:
    """(fraction 0..1, one line of text) for a run's progress bar."""
    p = run.progress or {}
    stage = p.get("stage") or run.status
    if run.status == QUEUED:
        wait = f", starts in about {fmt_seconds(wait_s)}" if wait_s is not None else ""
        where = f" (position {queue_position} in the queue{wait})" if queue_position else ""
        return 0.0, f"Queued{where}: it starts when a training slot is free."
    total = p.get("total") or 0
    done = p.get("done") or 0
    frac = min(1.0, done / total) if total else 0.0
    if run.status != RUNNING:
        return (1.0 if run.status == COMPLETED else frac), f"{run.status.capitalize()}."
    if stage == "training" and total:
        eta = p.get("eta_s")
        return frac, (f"Epoch {int(p.get('epoch', 0)) + 1}/{p.get('epochs', '?')} · batch "
                      f"{p.get('batch', 0)}/{p.get('steps_per_epoch', '?')} · "
                      f"{fmt_seconds(p.get('elapsed_s'))} elapsed · ETA "
                      f"{fmt_seconds(eta) if eta is not None else '—'}")
    if stage in ("evaluating", "saving model", "done"):
        return 1.0, f"Training done: {stage}…"
    return frac, f"{str(stage).capitalize()}…"


# -- charts ----------------------------------------------------------------------------------

def _fit(chart, height: int):
    """Plot area ``height`` px tall, width fitted to the container. (Without an explicit
    autosize, Streamlit makes the spec's height the *total* height, axes and legend
    included, which squashes plots with rotated labels or long legends.)"""
    return chart.properties(height=height,
                            autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


_PHASE_COLORS = alt.Scale(domain=["train", "validation"], range=["#3b6fd8", "#e0682b"])


POINTS = "points"  # the named dataset of batch_template's spec


def batch_chart(frame: pd.DataFrame | alt.Data, metric: str, height: int = 220) -> alt.Chart:
    """Raw batch values (faint) and their moving average, one metric (``frame``: the
    CurveBuffer's frame, or a named data source for a template)."""
    d = frame[frame["metric"] == metric] if isinstance(frame, pd.DataFrame) else frame
    title = f"Batch {metric} (line: moving average)"
    base = alt.Chart(d).encode(x=alt.X("step:Q", title="batch (step)"))
    y_title = metric
    raw = base.mark_line(opacity=0.25, color="#7a8699").encode(
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)))
    smooth = base.mark_line(color="#3b6fd8", strokeWidth=2).encode(
        y=alt.Y("smoothed:Q"),
        tooltip=[alt.Tooltip("step:Q"), alt.Tooltip("smoothed:Q", format=".4f", title="EMA"),
                 alt.Tooltip("value:Q", format=".4f", title="raw")])
    return _fit(alt.layer(raw, smooth).properties(title=title), height)


@functools.cache
def _batch_template(metric: str, height: int) -> str:
    return json.dumps(batch_chart(alt.Data(name=POINTS), metric, height).to_dict())


def batch_template(metric: str, height: int = 220) -> dict[str, Any]:
    """``batch_chart`` as a Vega-Lite spec without its points (dataset POINTS): Altair
    builds and validates a spec in 20-50 ms here, so that is done once per metric."""
    return json.loads(_batch_template(metric, height))


@functools.cache
def _epoch_template(metric: str, reference: float | None, reference_label: str,
                    max_epoch: int, height: int) -> str:
    return json.dumps(epoch_chart(alt.Data(name=POINTS), metric, reference, reference_label,
                                  height, max_epoch).to_dict())


def epoch_template(metric: str, max_epoch: int, reference: float | None = None,
                   reference_label: str = "", height: int = 220) -> dict[str, Any]:
    """``epoch_chart`` as a spec without its rows (dataset POINTS: one metric's rows of
    epoch_frame), built once per metric, reference line and number of epochs."""
    return json.loads(_epoch_template(metric, reference, reference_label, max_epoch, height))


@functools.cache
def _probe_template(max_epoch: int, height: int) -> str:
    return json.dumps(probe_chart(alt.Data(name=POINTS), height, max_epoch).to_dict())


def probe_template(max_epoch: int, height: int = 240) -> dict[str, Any]:
    """``probe_chart`` as a spec without its rows (dataset POINTS: probe_frame's rows),
    built once per number of epochs."""
    return json.loads(_probe_template(max_epoch, height))


def tutorial_line(percent: float | None) -> tuple[float | None, str]:
    """The tutorial's reported test accuracy as a chart's reference line: (fraction, label),
    or (None, "") when the config is not one of its presets."""
    if percent is None:
        return None, ""
    return percent / 100, f"tutorial's test accuracy {percent:.2f} %"


def epoch_chart(frame: pd.DataFrame | alt.Data, metric: str, reference: float | None = None,
                reference_label: str = "", height: int = 220,
                max_epoch: int | None = None) -> alt.LayerChart:
    """Train vs validation per epoch; an optional dashed reference line (e.g. the tutorial's
    reported test accuracy). ``frame``: epoch_frame's rows, or a named data source (holding
    one metric's rows) for a template, which then needs ``max_epoch``."""
    d = frame[frame["metric"] == metric] if isinstance(frame, pd.DataFrame) else frame
    if max_epoch is None:
        max_epoch = int(d["epoch"].max()) if len(d) else 1
    lines = alt.Chart(d).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1),
                scale=alt.Scale(domain=[1, max(2, max_epoch)])),
        y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        color=alt.Color("phase:N", scale=_PHASE_COLORS, title=None),
        tooltip=["epoch:Q", "phase:N", alt.Tooltip("value:Q", format=".4f")])
    layers: list[alt.Chart] = [lines]
    if reference is not None:
        ref = pd.DataFrame({"value": [reference], "label": [reference_label]})
        layers.append(alt.Chart(ref).mark_rule(strokeDash=[6, 4], color="#555").encode(
            y="value:Q", tooltip=["label:N", alt.Tooltip("value:Q", format=".2%")]))
        layers.append(alt.Chart(ref).mark_text(align="left", dx=4, dy=-6, color="#555",
                                               fontSize=11).encode(
            y="value:Q", x=alt.value(2), text="label:N"))
    return _fit(alt.layer(*layers).properties(title=f"Epoch {metric}"), height)


def probe_chart(frame: pd.DataFrame | alt.Data, height: int = 240,
                max_epoch: int | None = None) -> alt.LayerChart:
    """Each probe sentence's P(positive) per epoch (``frame``: probe_frame's rows, or a named
    data source for a template, which then needs ``max_epoch``)."""
    if max_epoch is None:
        max_epoch = int(frame["epoch"].max()) if len(frame) else 1
    lines = alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="epoch (0 = before training)", axis=alt.Axis(tickMinStep=1),
                scale=alt.Scale(domain=[0, max(1, max_epoch)])),
        y=alt.Y("probability:Q", title="P(positive)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("sentence:N", title=None, legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=500)),
        tooltip=["sentence:N", "epoch:Q", alt.Tooltip("probability:Q", format=".3f")])
    half = alt.Chart(pd.DataFrame({"y": [0.5]})).mark_rule(strokeDash=[4, 4],
                                                            color="#999").encode(y="y:Q")
    return _fit(alt.layer(half, lines).properties(
        title="Probe sentences: P(positive) per epoch"), height)


# -- the Data page ------------------------------------------------------------------------------


def truncated_share(lengths: np.ndarray, maxlen: int) -> float:
    """Share of reviews longer than maxlen codes (words + the start token): 'pre'
    truncation cuts their first words."""
    lengths = np.asarray(lengths)
    return float(np.mean(lengths + 1 > maxlen)) if len(lengths) else 0.0


def length_histogram(lengths: np.ndarray, maxlen: int, max_bins: int = MAX_BINS
                     ) -> pd.DataFrame:
    """Review lengths (words) in at most ``max_bins`` bars of a round width; each bar says
    whether maxlen cuts the reviews in it ('kept whole', 'truncated', or 'partly')."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if not len(lengths):
        return pd.DataFrame(columns=["start", "end", "reviews", "cut"])
    top = int(lengths.max()) + 1
    width = 1
    for w in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000):
        width = w
        if math.ceil(top / w) <= max_bins:
            break
    edges = np.arange(0, top + width, width)
    counts, _ = np.histogram(lengths, bins=edges)
    out = []
    for lo, hi, n in zip(edges[:-1], edges[1:], counts):
        # a review of w words has w + 1 codes: it is cut when w + 1 > maxlen, i.e. w >= maxlen
        if lo >= maxlen:
            cut = "truncated"
        elif hi - 1 >= maxlen:
            cut = "partly"
        else:
            cut = "kept whole"
        out.append({"start": int(lo), "end": int(hi), "reviews": int(n), "cut": cut})
    return pd.DataFrame(out)


def length_chart(hist: pd.DataFrame, maxlen: int, height: int = 260) -> alt.LayerChart:
    colors = alt.Scale(domain=["kept whole", "partly", "truncated"],
                       range=["#3b6fd8", "#9c8ade", "#e0682b"])
    bars = alt.Chart(hist).mark_bar().encode(
        x=alt.X("start:Q", bin="binned", title="review length (words)"),
        x2="end:Q",
        y=alt.Y("reviews:Q", title="reviews"),
        color=alt.Color("cut:N", scale=colors, title=f"at maxlen {maxlen}"),
        tooltip=[alt.Tooltip("start:Q", title="from"), alt.Tooltip("end:Q", title="to (excl.)"),
                 "reviews:Q", "cut:N"])
    rule = alt.Chart(pd.DataFrame({"x": [maxlen - 1], "label": [f"maxlen = {maxlen}"]}))
    line = rule.mark_rule(color="#222", strokeDash=[6, 3], strokeWidth=2).encode(x="x:Q")
    text = rule.mark_text(align="right", dx=-5, color="#222").encode(
        x="x:Q", y=alt.value(8), text="label:N")
    return _fit(alt.layer(bars, line, text), height)


def word_counts(flat_codes: np.ndarray, words: Sequence[str], n: int = 30) -> pd.DataFrame:
    """The n most frequent words of a split from its codes: rank, index (rank + 3), count."""
    counts = np.bincount(np.asarray(flat_codes, dtype=np.int64), minlength=n + 4)
    rows = []
    for rank in range(1, min(n, len(words)) + 1):
        code = rank + 3
        rows.append({"rank": rank, "index": code, "word": words[rank - 1],
                     "count": int(counts[code]) if code < len(counts) else 0})
    return pd.DataFrame(rows, columns=["rank", "index", "word", "count"])


def words_chart(frame: pd.DataFrame) -> alt.Chart:
    height = 18 * len(frame)  # one readable label per word
    chart = alt.Chart(frame).mark_bar(color="#3b6fd8").encode(
        x=alt.X("count:Q", title="occurrences in the training reviews"),
        y=alt.Y("word:N", sort="-x", title=None,
                axis=alt.Axis(labelOverlap=False, labelFontSize=11)),
        tooltip=["rank:Q", "index:Q", "word:N", "count:Q"])
    return _fit(chart, height)


def label_balance(summary: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for split in ("train", "test"):
        s = summary[split]
        for label in ("positive", "negative"):
            rows.append({"split": split, "label": label, "reviews": s[label],
                         "share": s[label] / s["reviews"] if s["reviews"] else 0.0})
    return pd.DataFrame(rows)


def label_chart(frame: pd.DataFrame, height: int = 60) -> alt.Chart:
    chart = alt.Chart(frame).mark_bar().encode(
        y=alt.Y("split:N", title=None),
        x=alt.X("reviews:Q", stack="normalize", title="share of reviews",
                axis=alt.Axis(format="%")),
        color=alt.Color("label:N", scale=alt.Scale(domain=["negative", "positive"],
                                                   range=["#d2452d", "#169650"]), title=None),
        tooltip=["split:N", "label:N", "reviews:Q", alt.Tooltip("share:Q", format=".1%")],
    )
    return _fit(chart, height)


def encoded_tokens(codes: Sequence[int], words: list[str], top_words: int, maxlen: int
                   ) -> tuple[list[dict], int]:
    """A stored review (full-vocabulary codes) as the model sees it with ``top_words`` and
    ``maxlen``: ([{code, word, kind}], padding count). kind is start / word / oov (rank
    outside top_words: shown with its word, encoded 2) / cut (dropped by 'pre' truncation)."""
    enc = Encoder(words=words, top_words=top_words, maxlen=maxlen)
    n_cut = max(0, len(codes) - maxlen)
    out = []
    for j, raw in enumerate(codes):
        raw = int(raw)
        word = enc.word(raw)
        if raw == START:
            code, kind = START, "start"
        else:
            code, kind = (raw, "word") if raw < top_words and raw != OOV else (OOV, "oov")
        if j < n_cut:
            kind = "cut"
        out.append({"code": code, "word": word, "kind": kind})
    return out, max(0, maxlen - len(codes))


_CHIP_STYLE = {
    "start": "background:#dbe7ff;border:1px solid #3b6fd8",
    "word": "background:#f1f0ee;border:1px solid #d6d3cf",
    "oov": "background:#fde8d7;border:1px dashed #e0682b",
    "cut": "background:#f6f6f6;border:1px solid #ddd;opacity:.45;text-decoration:line-through",
    "pad": "background:#fff;border:1px dotted #aaa;color:#888",
}


def codes_html(tokens: Sequence[Mapping[str, Any]], n_pad: int, limit: int = 400) -> str:
    """Words over their indices, as chips: start (1), OOV (2), cut and padding marked.
    Every word is HTML-escaped."""

    def chip(kind: str, top: str, bottom: str, title: str) -> str:
        return (f'<span title="{html.escape(title, quote=True)}" style="display:inline-block;'
                f'margin:2px;padding:1px 5px;border-radius:5px;text-align:center;'
                f'font-size:12px;line-height:1.25;{_CHIP_STYLE[kind]}">'
                f'{html.escape(top)}<br><b>{html.escape(bottom)}</b></span>')

    parts = []
    if n_pad:
        parts.append(chip("pad", "padding", f"0 × {n_pad}", "'pre' padding up to maxlen"))
    shown = tokens[-limit:] if len(tokens) > limit else tokens
    if len(tokens) > limit:
        parts.append(chip("cut", "…", f"{len(tokens) - limit} more", "not shown"))
    titles = {"start": "start of review (index 1)", "oov": "outside top_words: index 2",
              "word": "word index = frequency rank + 3", "cut": "cut by maxlen ('pre')"}
    for t in shown:
        parts.append(chip(t["kind"], t["word"], str(t["code"]), titles[t["kind"]]))
    return '<div style="line-height:1.1">' + "".join(parts) + "</div>"


def compact_sequence(padded: Sequence[int], keep: int = 60) -> str:
    """An index sequence with its run of leading zeros (padding) collapsed."""
    seq = [int(c) for c in padded]
    n_pad = 0
    while n_pad < len(seq) and seq[n_pad] == PAD:
        n_pad += 1
    body = seq[n_pad:]
    parts = [f"0 × {n_pad} (padding)"] if n_pad else []
    if len(body) > keep:
        parts += [", ".join(map(str, body[: keep // 2])), f"… {len(body) - keep} more …",
                  ", ".join(map(str, body[-keep // 2:]))]
    elif body:
        parts.append(", ".join(map(str, body)))
    return "[" + ", ".join(parts) + "]"


# -- the Compare page ---------------------------------------------------------------------------

# One colour per run, the same in every Compare chart: Vega's categorical "tableau10" (ten
# distinct hues; Streamlit's chart theme gives two runs two shades of blue). Compare shows at
# most 8 runs at once.
RUN_PALETTE = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2",
               "#ff9da6", "#9d755d", "#bab0ac")


def run_colors(runs: Sequence[Any]) -> dict[str, str]:
    """Each run's colour by run id, in the order given (share it between charts)."""
    return {r.id: RUN_PALETTE[i % len(RUN_PALETTE)] for i, r in enumerate(runs)}


def _run_color(colors: Mapping[str, str] | None, title: str | None = None) -> alt.Color:
    """The "run" field's colour: ``colors`` maps each label in the chart to its run's colour
    (see run_colors); without it the labels take RUN_PALETTE in order."""
    scale = (alt.Scale(domain=list(colors), range=list(colors.values())) if colors
             else alt.Scale(range=list(RUN_PALETTE)))
    return alt.Color("run:N", title=title, scale=scale,
                     legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=500))


RUN_COLUMNS = ["Name", "Group", "Seed", "Owner", "Architecture", "Params", "Epochs", "Status",
               "Best val acc", "Test acc", "AUC", "Training time (s)", "Date", "Run id"]


def owner_of(run: Any) -> str:
    """A run's owner as shown everywhere ('—' for a run without one)."""
    return getattr(run, "owner", None) or "—"


def run_label(run: Any) -> str:
    """Unique within a store even when names repeat."""
    return f"{short(run.name, 40)} · {run.id[-6:]}"


def owned_label(run: Any, me: str | None = None) -> str:
    """run_label with its owner, marked "(you)" for the viewer's own runs."""
    owner = owner_of(run)
    mine = " (you)" if me and getattr(run, "owner", None) == me else ""
    return f"{run_label(run)} · by {owner}{mine}"


def runs_frame(runs: Sequence[Any], me: str | None = None) -> pd.DataFrame:
    """The Compare table; the viewer's own runs are marked "(you)" in Owner."""
    rows = []
    for r in runs:
        res = r.results or {}
        rows.append({
            "Name": r.name,
            # A seed group's runs sort together (their label), each with its seed.
            "Group": (getattr(r, "group_label", None) or r.name)
            if getattr(r, "group_id", None) else None,
            "Seed": r.config.seed,
            "Owner": owner_of(r) + (" (you)" if me and getattr(r, "owner", None) == me
                                    else ""),
            "Architecture": ARCHITECTURES.get(r.architecture, {}).get("label", r.architecture),
            "Params": res.get("params"),
            "Epochs": r.config.epochs,
            "Status": r.status,
            "Best val acc": res.get("best_val_accuracy"),
            "Test acc": res.get("test_accuracy"),
            "AUC": res.get("auc"),
            "Training time (s)": res.get("train_seconds"),
            "Date": pd.Timestamp.fromtimestamp(r.created_at),  # local time
            "Run id": r.id,
        })
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col in ("Params", "Seed"):
        df[col] = df[col].astype("Int64")
    for col in ("Best val acc", "Test acc", "AUC", "Training time (s)"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Float64")
    return df


def compare_epoch_frame(rows_by_run: Mapping[str, Iterable[Mapping[str, Any]]]) -> pd.DataFrame:
    frames = []
    for label, rows in rows_by_run.items():
        f = epoch_frame(rows)
        f.insert(0, "run", label)
        frames.append(f)
    if not frames:
        return pd.DataFrame(columns=["run", "epoch", "phase", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def compare_epoch_chart(frame: pd.DataFrame, metric: str, height: int = 240,
                        colors: Mapping[str, str] | None = None) -> alt.Chart:
    """Every run's epoch curves, one colour per run (``colors``: label -> colour)."""
    d = frame[frame["metric"] == metric]
    chart = alt.Chart(d).mark_line(point=True).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        color=_run_color(colors, "run"),
        strokeDash=alt.StrokeDash("phase:N", title=None,
                                  scale=alt.Scale(domain=["train", "validation"],
                                                  range=[[1, 0], [5, 3]]),
                                  legend=None),  # the title says which is which
        tooltip=["run:N", "epoch:Q", "phase:N", alt.Tooltip("value:Q", format=".4f")],
    ).properties(title=f"Epoch {metric} (solid: train, dashed: validation)")
    return _fit(chart, height)


def config_diff(runs: Sequence[Any]) -> tuple[pd.DataFrame, list[str]]:
    """Hyperparameters (rows) of each run (columns); the names of rows that differ. Fields an
    architecture does not use show as '—'."""
    labels = [run_label(r) for r in runs]
    fields = ["architecture", *MODEL_FIELDS, *DATA_FIELDS, *TRAINING_FIELDS]
    data: dict[str, list[str]] = {}
    for label, r in zip(labels, runs):
        uses = set(r.config.uses())
        d = r.config.to_dict()
        data[label] = ["—" if (f not in uses and f != "architecture") else _fmt_value(d[f])
                       for f in fields]
    df = pd.DataFrame(data, index=fields)
    df.index.name = "hyperparameter"
    differs = [f for f in fields if len(set(df.loc[f])) > 1]
    return df, differs


def _fmt_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def style_diff(df: pd.DataFrame, differs: Sequence[str]):
    """A pandas Styler highlighting the rows whose values differ between runs."""
    diff = set(differs)

    def row_style(row: pd.Series) -> list[str]:
        css = "background-color: #fff3bf; font-weight: 600" if row.name in diff else ""
        return [css] * len(row)

    return df.style.apply(row_style, axis=1)


def confusion_frame(confusion: Mapping[str, int]) -> pd.DataFrame:
    cells = [("negative", "negative", "tn"), ("negative", "positive", "fp"),
             ("positive", "negative", "fn"), ("positive", "positive", "tp")]
    total = sum(int(confusion.get(k, 0)) for *_, k in cells) or 1
    return pd.DataFrame([{"actual": a, "predicted": p, "reviews": int(confusion.get(k, 0)),
                          "share": int(confusion.get(k, 0)) / total, "cell": k.upper()}
                         for a, p, k in cells])


def confusion_chart(frame: pd.DataFrame, title: str = "", size: int = 170) -> alt.LayerChart:
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", title="predicted", sort=["negative", "positive"]),
        y=alt.Y("actual:N", title="actual", sort=["negative", "positive"]))
    rect = base.mark_rect().encode(
        color=alt.Color("reviews:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=["actual:N", "predicted:N", "reviews:Q", alt.Tooltip("share:Q", format=".1%")])
    text = base.mark_text(fontSize=14).encode(
        text=alt.Text("reviews:Q"),
        color=alt.condition(alt.datum.share > 0.3, alt.value("white"), alt.value("black")))
    return alt.layer(rect, text).properties(
        title=title, width=size, height=size,
        autosize=alt.AutoSizeParams(type="pad", contains="padding"))  # natural size


def roc_label(run: Any) -> str:
    """A run's name in the ROC chart: run_label with its AUC."""
    auc = (run.results or {}).get("auc")
    return f"{run_label(run)} (AUC {'—' if auc is None else f'{auc:.3f}'})"


def roc_frame(runs: Sequence[Any]) -> pd.DataFrame:
    rows = []
    for r in runs:
        res = r.results or {}
        roc = res.get("roc") or {}
        if not roc.get("fpr"):
            continue
        label = roc_label(r)
        rows += [{"run": label, "fpr": f, "tpr": t} for f, t in zip(roc["fpr"], roc["tpr"])]
    return pd.DataFrame(rows, columns=["run", "fpr", "tpr"])


def roc_chart(frame: pd.DataFrame, height: int = 280,
              colors: Mapping[str, str] | None = None) -> alt.LayerChart:
    """ROC curves, one colour per run (``colors``: roc_label -> colour)."""
    diag = alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]})).mark_line(
        strokeDash=[4, 4], color="#999").encode(x="x:Q", y="y:Q")
    curves = alt.Chart(frame).mark_line().encode(
        x=alt.X("fpr:Q", title="false-positive rate", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("tpr:Q", title="true-positive rate", scale=alt.Scale(domain=[0, 1])),
        color=_run_color(colors),
        order="fpr:Q",
        tooltip=["run:N", alt.Tooltip("fpr:Q", format=".3f"), alt.Tooltip("tpr:Q", format=".3f")])
    return _fit(alt.layer(diag, curves).properties(title="ROC curves (test set)"), height)


def by_length_frame(runs: Sequence[Any]) -> pd.DataFrame:
    rows = []
    for r in runs:
        for b in (r.results or {}).get("by_length") or []:
            rows.append({"run": run_label(r), "bucket": b["bucket"], "reviews": b["reviews"],
                         "accuracy": b["accuracy"],
                         "note": "beyond maxlen: truncated" if b.get("truncated") else ""})
    return pd.DataFrame(rows, columns=["run", "bucket", "reviews", "accuracy", "note"])


def by_length_chart(frame: pd.DataFrame, height: int = 260,
                    colors: Mapping[str, str] | None = None) -> alt.Chart:
    """Test accuracy per length bucket, a bar per run (``colors``: run_label -> colour)."""
    order = list(dict.fromkeys(frame["bucket"]))
    chart = alt.Chart(frame.dropna(subset=["accuracy"])).mark_bar().encode(
        x=alt.X("bucket:N", sort=order, title="review length (words)"),
        xOffset=alt.XOffset("run:N"),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color=_run_color(colors),
        tooltip=["run:N", "bucket:N", "reviews:Q", alt.Tooltip("accuracy:Q", format=".1%"),
                 "note:N"],
    ).properties(title="Test accuracy by review length")
    return _fit(chart, height)


def metrics_csv(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """All metric rows of a run as CSV (step, epoch, phase, name, value, t)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "epoch", "phase", "name", "value", "time"])
    for r in rows:
        w.writerow([r["step"], r["epoch"], r["phase"], r["name"], r["value"], r["t"]])
    return buf.getvalue().encode("utf-8")


# -- the Predict page ---------------------------------------------------------------------------

def _push_color(delta: float, scale: float) -> str:
    strength = min(1.0, abs(delta) / scale) if scale > 0 else 0.0
    r, g, b = POSITIVE_RGB if delta > 0 else NEGATIVE_RGB
    return f"rgba({r},{g},{b},{0.08 + 0.62 * strength:.2f})"


def attribution_html(text: str, words: Sequence[Any], max_chars: int = 20_000) -> str:
    """The review with each word coloured by how much it pushes the prediction (green:
    towards positive, red: towards negative), out-of-vocabulary words dotted and words cut by
    maxlen struck through. ``words`` are ``core.predict.WordAttribution``s, one per token.

    Everything from the text is HTML-escaped: user text never becomes markup."""
    scale = max([abs(w.delta) for w in words if w.status == "known"] + [0.02])
    titles = {"oov": "not in the model's vocabulary: read as index 2 (OOV)",
              "truncated": "cut: the model reads only the last maxlen tokens"}

    def word_html(original: str, w: Any) -> str:
        if w.status == "known":
            style = f"background:{_push_color(w.delta, scale)};border-radius:3px;padding:0 1px"
            title = f"{w.word}: {w.delta:+.4f} on P(positive) (index {w.code})"
        elif w.status == "oov":
            style = "border-bottom:2px dotted #888;color:#666"
            title = f"{w.word}: {titles['oov']}"
        else:
            style = "text-decoration:line-through;opacity:.45"
            title = f"{w.word}: {titles['truncated']}"
        return (f'<span class="attr-{w.status}" style="{style}" '
                f'title="{html.escape(title, quote=True)}">{html.escape(original)}</span>')

    spans = tokenize_spans(text[:MAX_TEXT_CHARS])
    parts: list[str] = []
    if len(spans) == len(words):
        shown = text[:MAX_TEXT_CHARS].replace("\x00", " ")
        pos = 0
        for (a, b), w in zip(spans, words):
            if a > max_chars:
                parts.append(html.escape(" … (rest not shown)"))
                break
            parts.append(html.escape(shown[pos:a]))
            parts.append(word_html(shown[a:b], w))
            pos = b
        else:
            parts.append(html.escape(shown[pos:max_chars]))
    else:
        parts = [word_html(w.word, w) + " " for w in words]
    legend = (
        '<div style="font-size:12px;color:#555;margin-top:6px">'
        f'<span style="background:{_push_color(1, 1)};padding:0 4px;border-radius:3px">'
        'pushes towards positive</span> '
        f'<span style="background:{_push_color(-1, 1)};padding:0 4px;border-radius:3px">'
        'pushes towards negative</span> '
        '<span style="border-bottom:2px dotted #888;color:#666">unknown word (OOV)</span> '
        '<span style="text-decoration:line-through;opacity:.45">cut by maxlen</span>'
        ' · colour strength relative to the strongest word '
        f'({scale:.3f} of probability)</div>')
    return ('<div class="attribution" style="white-space:pre-wrap;line-height:1.9;'
            'font-size:1.02rem">' + "".join(parts) + "</div>" + legend)


def top_pushes(words: Sequence[Any], n: int = 5) -> pd.DataFrame:
    """The words that move the prediction most, both ways."""
    known = [w for w in words if w.status == "known"]
    rows = sorted(known, key=lambda w: -abs(w.delta))[:n]
    return pd.DataFrame([{"word": w.word, "index": w.code, "effect on P(positive)": w.delta,
                          "direction": "positive" if w.delta > 0 else "negative"}
                         for w in rows],
                        columns=["word", "index", "effect on P(positive)", "direction"])


def inspector_frame(info: Mapping[str, Any], cut_limit: int = 200) -> pd.DataFrame:
    """What ``Predictor.inspect`` found, one row per kept index (padding collapsed to one
    row, cut indices listed first): position, index, token, meaning."""
    tokens, codes = info["tokens"], info["codes"]
    n_pad, n_cut, maxlen = info["n_pad"], info["n_truncated"], info["maxlen"]

    def meaning(j: int) -> tuple[str, str]:
        code = codes[j]
        if j == 0:
            return "<start>", "start of review (always 1)"
        word = tokens[j - 1]
        if code == OOV:
            return word, "2 = out of vocabulary (rank beyond top_words, or unseen)"
        return word, f"rank {code - 3} in the training vocabulary, + 3 offset = {code}"

    rows = []
    for j in range(min(n_cut, cut_limit)):
        token, what = meaning(j)
        rows.append({"position": "cut", "index": codes[j], "token": token,
                     "meaning": f"{what}; dropped by 'pre' truncation to maxlen {maxlen}"})
    if n_cut > cut_limit:
        rows.append({"position": "cut", "index": None, "token": "…",
                     "meaning": f"{n_cut - cut_limit} more cut indices not listed"})
    if n_pad:
        rows.append({"position": f"0–{n_pad - 1}", "index": 0, "token": "<pad>",
                     "meaning": f"0 = padding, {n_pad} times ('pre' padding to maxlen {maxlen})"})
    for j in range(n_cut, len(codes)):
        token, what = meaning(j)
        rows.append({"position": str(n_pad + j - n_cut), "index": codes[j], "token": token,
                     "meaning": what})
    df = pd.DataFrame(rows, columns=["position", "index", "token", "meaning"])
    df["index"] = df["index"].astype("Int64")
    return df


# Batch scoring limits (the server's upload limit is larger; these give clear messages).
UPLOAD_MAX_BYTES = 2 * 1024 * 1024
UPLOAD_MAX_ROWS = 1000
# Model files are never accepted from an upload (only run ids from the store are loaded).
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5", ".pb", ".pkl", ".pickle", ".joblib", ".zip")


def parse_reviews_upload(name: str, data: bytes, max_bytes: int = UPLOAD_MAX_BYTES,
                         max_rows: int = UPLOAD_MAX_ROWS) -> tuple[list[str], str | None]:
    """Reviews from an uploaded .csv (column 'review' or 'text', else the first column) or
    .txt (one review per line): (reviews, error). Nothing is scored when error is set."""
    if name.lower().endswith(MODEL_SUFFIXES) or data[:4] == ZIP_MAGIC or \
            data[:8] == b"\x89HDF\r\n\x1a\n":
        return [], refuse_model_file(name)  # never loaded, whatever the name says
    if len(data) > max_bytes:
        return [], (f"{name} is {len(data) / 2**20:.1f} MB; the limit is "
                    f"{max_bytes / 2**20:.0f} MB. Split the file or keep fewer reviews.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], f"{name} is not UTF-8 text. Save it as UTF-8 (CSV or plain text)."
    lower = name.lower()
    if lower.endswith(".csv"):
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            return [], f"{name} could not be read as CSV: {short(str(exc), 200)}"
        if df.shape[1] == 0:
            return [], f"{name} has no columns."
        cols = {str(c).strip().lower(): c for c in df.columns}
        col = cols.get("review", cols.get("text", df.columns[0]))
        reviews = [str(v) for v in df[col].tolist()]
    elif lower.endswith(".txt"):
        reviews = [line for line in text.splitlines() if line.strip()]
    else:
        return [], f"{name}: only .csv and .txt files are accepted."
    reviews = [r for r in reviews if r.strip()]
    if not reviews:
        return [], f"{name} holds no reviews (no non-empty rows)."
    if len(reviews) > max_rows:
        return [], (f"{name} has {len(reviews):,} reviews; at most {max_rows:,} are scored "
                    "at once. Split the file.")
    return reviews, None


def predictions_frame(reviews: Sequence[str], results: Mapping[str, Sequence[Mapping]]
                      ) -> pd.DataFrame:
    """One row per review; per model its P(positive), label and any message."""
    df = pd.DataFrame({"review": list(reviews)})
    for label, preds in results.items():
        df[f"P(positive) · {label}"] = [p["probability"] for p in preds]
        df[f"label · {label}"] = [p["label"] or "" for p in preds]
        df[f"note · {label}"] = ["; ".join(([p["error"]] if p["error"] else [])
                                           + list(p["warnings"])) for p in preds]
    return df


# -- the Leaderboard page ---------------------------------------------------------------

def leaderboard_chart(frame: pd.DataFrame, stats: dict[str, Any], height: int = 110
                ) -> alt.LayerChart:
    """Each student's best as a point; the class mean ± std as a band and a rule; the
    tutorial's accuracy as a dashed red rule."""
    points = alt.Chart(frame).mark_circle(size=90, opacity=0.8).encode(
        x=alt.X("accuracy:Q", title="best test accuracy (%)", scale=alt.Scale(zero=False)),
        y=alt.value(height / 2), yOffset=alt.YOffset("owner:N"),
        tooltip=["owner:N", alt.Tooltip("accuracy:Q", format=".2f"), "run_id:N"])
    band = pd.DataFrame([{"lo": stats["mean"] - stats["std"], "hi": stats["mean"] + stats["std"],
                          "mean": stats["mean"]}])
    layers = [alt.Chart(band).mark_rect(opacity=0.15, color="#3b6fd8").encode(
                  x="lo:Q", x2="hi:Q"),
              alt.Chart(band).mark_rule(color="#3b6fd8").encode(
                  x="mean:Q", tooltip=[alt.Tooltip("mean:Q", title="class mean", format=".2f")]),
              points]
    if stats["reference"] is not None:
        ref = pd.DataFrame([{"tutorial": stats["reference"]}])
        layers.append(alt.Chart(ref).mark_rule(color="#d23", strokeDash=[6, 4]).encode(
            x="tutorial:Q", tooltip=[alt.Tooltip("tutorial:Q", title="tutorial reported")]))
    return alt.layer(*layers).properties(height=height)
