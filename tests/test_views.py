"""app_pages/views.py: the data shaping behind the pages (no Streamlit, no TensorFlow)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from app_pages import views
from core.config import ARCHITECTURES, COMMON_FIELDS, TrainConfig, preset
from core.predict import WordAttribution
from core.text import tokenize


def batch_rows(n_steps: int, start_id: int = 1, value=lambda step: 1.0 / step):
    rows, i = [], start_id
    for step in range(1, n_steps + 1):
        for name in ("loss", "accuracy"):
            rows.append({"id": i, "step": step, "epoch": 0, "phase": "batch", "name": name,
                         "value": value(step), "t": 0.0})
            i += 1
    return rows


def test_curve_buffer_stays_bounded_and_keeps_exact_means_and_ema():
    buf = views.CurveBuffer(max_points=50, alpha=0.1)
    rows = batch_rows(10_000, value=lambda s: float(s % 7))
    for chunk in range(0, len(rows), 997):  # read incrementally, in uneven slices
        buf.feed(rows[chunk:chunk + 997])
    buf.feed(rows[:100])  # rows already read are ignored
    frame = buf.frame()
    assert buf.rows_read == 20_000 and buf.after_id == 20_000
    for name in ("loss", "accuracy"):
        line = frame[frame["metric"] == name]
        assert 25 <= len(line) <= 50
        assert line["step"].iloc[-1] == 10_000 and line["step"].is_monotonic_increasing
        # each bin's mean is the mean of the raw values it covers
        first_end = int(line["step"].iloc[0])
        assert line["value"].iloc[0] == pytest.approx(np.mean([s % 7 for s in
                                                               range(1, first_end + 1)]))
        # EMA over every batch (bias-corrected), whatever the binning
        ema = 0.0
        for s in range(1, 10_001):
            ema = 0.9 * ema + 0.1 * (s % 7)
        assert line["smoothed"].iloc[-1] == pytest.approx(ema / (1 - 0.9 ** 10_000))


def test_curve_buffer_skips_non_finite_values():
    buf = views.CurveBuffer()
    rows = batch_rows(3)
    rows[2]["value"] = float("nan")
    rows[3]["value"] = None
    buf.feed(rows)
    frame = buf.frame()
    assert len(frame) == 4 and frame["value"].map(math.isfinite).all()


def test_epoch_and_probe_frames():
    rows = [{"phase": "train", "name": "loss", "epoch": 0, "value": 0.6},
            {"phase": "val", "name": "accuracy", "epoch": 1, "value": 0.8},
            {"phase": "train", "name": "seconds", "epoch": 0, "value": 12.0}]
    f = views.epoch_frame(rows)
    assert f.to_dict("records") == [
        {"epoch": 1, "phase": "train", "metric": "loss", "value": 0.6},
        {"epoch": 2, "phase": "validation", "metric": "accuracy", "value": 0.8}]
    probes = [{"phase": "probe", "name": "probe1", "epoch": -1, "value": 0.5},
              {"phase": "probe", "name": "probe1", "epoch": 0, "value": 0.7}]
    p = views.probe_frame(probes, ["first", "second sentence"])
    assert list(p["epoch"]) == [0, 1] and set(p["sentence"]) == {"2. second sentence"}


def test_form_sections_show_exactly_the_fields_an_architecture_uses():
    for arch, spec in ARCHITECTURES.items():
        shown = [f for _, fields in views.form_sections(arch) for f in fields]
        assert sorted(shown) == sorted(set(spec["uses"]) | set(COMMON_FIELDS))
        assert all(f in views.FIELD_LABELS and f in views.FIELD_HELP for f in shown)


def test_model_key_ignores_what_does_not_change_the_model():
    a = preset("seed-lstm")
    b = preset("seed-lstm", epochs=9, batch_size=8, seed=3, fast=False, dropout=0.5)
    assert views.model_key(a) == views.model_key(b)
    assert views.model_key(a) != views.model_key(preset("seed-lstm", units=50))
    assert views.model_key(preset("seed-lstm-dropout")) != views.model_key(
        preset("seed-lstm-dropout", dropout=0.5))


def test_parse_probes():
    probes, errors = views.parse_probes("a great film\n\n  boring  \n")
    assert probes == ["a great film", "boring"] and errors == []
    _, errors = views.parse_probes("\n".join(["x"] * 9))
    assert errors == ["probes: 9 sentences given, at most 8 (one per line)"]
    _, errors = views.parse_probes("fine\n...!")
    assert errors == ["probes: sentence 2 has no words once punctuation is removed"]


def test_length_histogram_and_truncated_share():
    lengths = np.array([0, 5, 10, 499, 500, 501, 2000])
    assert views.truncated_share(lengths, 500) == pytest.approx(3 / 7)  # 500+ words: cut
    hist = views.length_histogram(lengths, 500)
    assert len(hist) <= views.MAX_BINS and hist["reviews"].sum() == len(lengths)
    cut = hist[hist["reviews"] > 0].set_index("start")["cut"]
    assert cut.iloc[0] == "kept whole" and cut.iloc[-1] == "truncated"


def test_word_counts_from_codes():
    flat = np.array([1, 4, 5, 4, 2, 6, 4, 1, 5])
    frame = views.word_counts(flat, ["the", "a", "film"], n=3)
    assert frame.to_dict("records") == [
        {"rank": 1, "index": 4, "word": "the", "count": 3},
        {"rank": 2, "index": 5, "word": "a", "count": 2},
        {"rank": 3, "index": 6, "word": "film", "count": 1}]


def test_encoded_tokens_mark_start_oov_and_cut():
    words = ["the", "film", "was", "great"]
    codes = [1, 4, 5, 6, 7]  # <start> the film was great
    tokens, n_pad = views.encoded_tokens(codes, words, top_words=6, maxlen=4)
    assert [t["kind"] for t in tokens] == ["cut", "word", "word", "oov", "oov"]
    assert [t["code"] for t in tokens] == [1, 4, 5, 2, 2] and n_pad == 0
    tokens, n_pad = views.encoded_tokens(codes, words, top_words=100, maxlen=8)
    assert tokens[0]["kind"] == "start" and n_pad == 3
    html = views.codes_html([{"code": 4, "word": "<b>x</b>", "kind": "word"}], 2)
    assert "<b>x" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_compact_sequence():
    assert views.compact_sequence([0, 0, 0, 1, 4, 2]) == "[0 × 3 (padding), 1, 4, 2]"
    assert views.compact_sequence([1, 4]) == "[1, 4]"
    long = views.compact_sequence([1] + list(range(4, 200)))
    assert "more" in long and long.endswith("199]")


def _attr(word, status="known", delta=0.1, code=5):
    return WordAttribution(word, code, delta, status)


def test_attribution_html_escapes_everything_and_marks_statuses():
    text = '<img src=x onerror=alert(1)> "great" & awful'
    words = [_attr(w) for w in tokenize(text)]
    words[0] = _attr("img", "truncated")
    words[1] = _attr("src", "oov", 0.0, 2)
    words[-1] = _attr("awful", delta=-0.3)
    out = views.attribution_html(text, words)
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" not in out  # spans
    assert "&lt;" in out and "&quot;" in out and "&amp;" in out
    assert 'class="attr-truncated"' in out and 'class="attr-oov"' in out
    assert "rgba(210,45,45," in out  # 'awful' pushes towards negative


def test_attribution_html_falls_back_to_words_when_spans_do_not_line_up():
    out = views.attribution_html("İ <i>", [_attr("i̇"), _attr("i"), _attr("i")])
    assert "<i>" not in out and out.count('class="attr-known"') == 3


def test_inspector_frame_collapses_padding_and_lists_cut_codes():
    info = {"tokens": ["a", "zzz", "film"], "codes": [1, 5, 2, 9], "n_pad": 0,
            "n_truncated": 1, "maxlen": 3}
    frame = views.inspector_frame(info)
    assert list(frame["position"]) == ["cut", "0", "1", "2"]
    assert list(frame["index"]) == [1, 5, 2, 9]
    assert "out of vocabulary" in frame["meaning"][2]
    padded = views.inspector_frame({**info, "n_pad": 5, "n_truncated": 0, "maxlen": 9})
    assert padded["position"][0] == "0–4" and padded["index"][0] == 0


def test_parse_reviews_upload():
    ok, err = views.parse_reviews_upload("r.csv", b"id,Review\n1,great\n2,\n3,awful\n")
    assert (ok, err) == (["great", "awful"], None)
    ok, err = views.parse_reviews_upload("r.csv", b"body,other\n\"x, y\",1\n")
    assert ok == ["x, y"]  # no review/text column: the first one
    ok, err = views.parse_reviews_upload("r.txt", b"one\n\n two \n")
    assert ok == ["one", " two "]
    assert "not UTF-8" in views.parse_reviews_upload("r.txt", b"\xff\xfe\x00")[1]
    assert "only .csv and .txt" in views.parse_reviews_upload("r.json", b"{}")[1]
    assert "holds no reviews" in views.parse_reviews_upload("r.txt", b"\n \n")[1]
    big = views.parse_reviews_upload("big.txt", b"x" * (views.UPLOAD_MAX_BYTES + 1))[1]
    assert "the limit is 2 MB" in big
    many = views.parse_reviews_upload("m.txt", b"a\n" * (views.UPLOAD_MAX_ROWS + 1))[1]
    assert "at most 1,000 are scored" in many


def _run(id_, name, status="completed", **results):
    cfg = TrainConfig(name=name)
    return SimpleNamespace(id=id_, name=name, architecture=cfg.architecture, config=cfg,
                           status=status, created_at=0.0, results=results)


def test_runs_frame_and_config_diff():
    a = _run("20260101-000000-aaaaaa", "first", params=10, test_accuracy=0.8, auc=0.9,
             train_seconds=3.0, best_val_accuracy=0.7)
    b = _run("20260101-000001-bbbbbb", "second", status="failed")
    b.config = TrainConfig(name="second", architecture="cnn-lstm", units=50)
    b.group_id, b.group_label = "g1", "seed sweep"  # one run of a seed group, one alone
    frame = views.runs_frame([a, b])
    assert list(frame["Status"]) == ["completed", "failed"]
    assert pd.isna(frame["Group"][0]) and frame["Group"][1] == "seed sweep"
    assert list(frame["Seed"]) == [a.config.seed, b.config.seed]
    assert frame["Test acc"][0] == 0.8 and pd.isna(frame["Test acc"][1])
    diff, differs = views.config_diff([a, b])
    assert {"architecture", "units", "conv_filters"} <= set(differs)
    assert "epochs" not in differs
    assert diff.loc["conv_filters", views.run_label(a)] == "—"  # unused by lstm
    styled = views.style_diff(diff, differs).to_html()
    assert "#fff3bf" in styled


def test_compare_charts_give_each_run_its_own_colour_in_every_chart():
    """Two runs get two distinct categorical colours (not two shades of one), the same run
    the same colour in the curves, ROC and by-length charts."""
    roc = {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}
    by_length = [{"bucket": "1-100", "reviews": 3, "accuracy": 0.5}]
    a = _run("20260101-000000-aaaaaa", "first", auc=0.9, roc=roc, by_length=by_length)
    b = _run("20260101-000001-bbbbbb", "second", auc=None, roc=roc, by_length=by_length)
    colors = views.run_colors([a, b])
    assert len(set(colors.values())) == 2 and set(colors.values()) <= set(views.RUN_PALETTE)
    rows = [{"epoch": 0, "phase": "train", "name": "loss", "value": 0.5}]
    curves = views.compare_epoch_chart(
        views.compare_epoch_frame({views.run_label(a): rows, views.run_label(b): rows}),
        "loss", colors={views.run_label(r): colors[r.id] for r in (a, b)}).to_dict()
    roc_chart = views.roc_chart(views.roc_frame([a, b]), colors={
        views.roc_label(r): colors[r.id] for r in (a, b)}).to_dict()
    bars = views.by_length_chart(views.by_length_frame([a, b]), colors={
        views.run_label(r): colors[r.id] for r in (a, b)}).to_dict()
    scales = [curves["encoding"]["color"]["scale"], roc_chart["layer"][1]["encoding"]["color"]
              ["scale"], bars["encoding"]["color"]["scale"]]
    for scale in scales:
        assert scale["range"] == [colors[a.id], colors[b.id]]
    assert scales[1]["domain"] == [views.roc_label(a), views.roc_label(b)]
    assert views.roc_label(b).endswith("(AUC —)")


def test_fmt_helpers_and_md_escape():
    assert views.fmt_seconds(None) == "—" and views.fmt_seconds(0.2) == "< 1 s"
    assert views.fmt_seconds(75) == "1 min 15 s" and views.fmt_seconds(7322) == "2 h 02 min"
    assert views.fmt_pct(0.8748) == "87.48 %"
    assert views.md_escape("**bold** :red[x] <b>") == r"\*\*bold\*\* \:red\[x\] \<b\>"
    assert views.safe_filename("my run/../x: ü") == "my_run_.._x"


def test_batch_template_is_the_batch_chart_and_columns_its_points():
    """The live view draws batch curves from a template filled with the points: the same
    layers and encodings as the Altair chart, and exactly the metric's rows."""
    buf = views.CurveBuffer()
    buf.feed([{"id": i, "step": i // 2 + 1, "epoch": 0, "phase": "batch",
               "name": ("loss", "accuracy")[i % 2], "value": 0.1 * (i % 7)}
              for i in range(1, 41)])
    frame = buf.frame()
    spec = views.batch_template("loss")
    chart = views.batch_chart(frame, "loss").to_dict()
    assert spec["layer"] == chart["layer"] and spec["title"] == chart["title"]
    points = pd.DataFrame(buf.columns("loss")).to_dict("records")
    assert points == frame[frame["metric"] == "loss"].to_dict("records")
    assert len(points) == 20


def test_the_live_view_polls_fast_only_while_its_run_trains_or_is_next():
    """A run next in the queue is followed each second, so its start shows without a
    full-page redraw; runs further back are followed slowly; an ended run not at all."""
    assert views.live_poll_s("running", None) == views.LIVE_POLL_S
    assert views.live_poll_s("queued", 1) == views.LIVE_POLL_S
    assert views.live_poll_s("queued", 2) == views.QUEUED_POLL_S > views.LIVE_POLL_S
    assert all(views.live_poll_s(s, None) is None
               for s in ("completed", "failed", "cancelled", "interrupted", "diverged"))
