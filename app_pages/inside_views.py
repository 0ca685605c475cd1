"""Tables and charts for 'looking inside' a prediction (integrated gradients, the LSTM's
running state), from what core.explain computed in the inference process. Plain Python
(pandas + Altair) so the web server draws them without TensorFlow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

COMPLETENESS_TOLERANCE = 0.05  # |sum - (f(x) - f(x'))| / |f(x) - f(x')|
GATES = {"i": "input gate", "f": "forget gate", "o": "output gate"}


def completeness_line(ig: Mapping[str, Any]) -> tuple[bool, str]:
    """(within tolerance, the check in words) for an integrated-gradients answer."""
    diff = ig["p"] - ig["p_baseline"]
    ok = ig["gap"] <= COMPLETENESS_TOLERANCE
    words = sum(w.delta for w in ig["words"])
    return ok, (f"Completeness: the attributions sum to {ig['total']:+.4f} (words "
                f"{words:+.4f}, start token {ig['start']:+.4f}); f(review) − f(all padding) = "
                f"{ig['p']:.4f} − {ig['p_baseline']:.4f} = {diff:+.4f}; gap {ig['gap']:.2%} "
                f"({'within' if ok else 'outside'} {COMPLETENESS_TOLERANCE:.0%}, "
                f"{ig['steps']} steps, {ig['seconds'] * 1000:.0f} ms).")


def _labels(tokens: list[str]) -> list[str]:
    return [f"{k}: {t}" for k, t in enumerate(tokens)]


def running_frame(inside: Mapping[str, Any]) -> pd.DataFrame:
    tokens = inside["tokens"]
    return pd.DataFrame({"position": np.arange(len(tokens)), "word": tokens,
                         "P(positive)": inside["running"]})


def running_chart(inside: Mapping[str, Any]) -> alt.LayerChart:
    frame = running_frame(inside)
    line = alt.Chart(frame).mark_line(point=len(frame) <= 80).encode(
        x=alt.X("position:Q", title="word (position in the review)"),
        y=alt.Y("P(positive):Q", scale=alt.Scale(domain=[0, 1])),
        tooltip=["position", "word", alt.Tooltip("P(positive):Q", format=".3f")])
    rule = alt.Chart(pd.DataFrame({"y": [0.5]})).mark_rule(strokeDash=[4, 4], color="#888"
                                                           ).encode(y="y:Q")
    return (rule + line).properties(height=220)


def units_by_variation(inside: Mapping[str, Any]) -> list[int]:
    """Hidden units, the most varying over the review first."""
    return [int(u) for u in np.argsort(-np.asarray(inside["h"]).std(axis=0), kind="stable")]


def heatmap_frame(inside: Mapping[str, Any], n_units: int) -> pd.DataFrame:
    h = np.asarray(inside["h"])
    units = units_by_variation(inside)[:n_units]
    tokens = inside["tokens"]
    pos, rank = np.meshgrid(np.arange(len(tokens)), np.arange(len(units)), indexing="ij")
    return pd.DataFrame({"position": pos.ravel(), "word": np.asarray(tokens)[pos.ravel()],
                         "unit": np.asarray(units)[rank.ravel()], "rank": rank.ravel(),
                         "h": h[:, units][pos.ravel(), rank.ravel()]})


def heatmap_chart(inside: Mapping[str, Any], n_units: int) -> alt.Chart:
    frame = heatmap_frame(inside, n_units)
    order = [str(u) for u in units_by_variation(inside)[:n_units]]
    return alt.Chart(frame.assign(unit=frame["unit"].astype(str))).mark_rect().encode(
        x=alt.X("position:O", title="word (position in the review)",
                axis=alt.Axis(labels=len(inside["tokens"]) <= 60)),
        y=alt.Y("unit:N", sort=order, title="hidden unit (most varying first)"),
        color=alt.Color("h:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1]),
                        title="h"),
        tooltip=["position", "word", "unit", alt.Tooltip("h:Q", format=".3f")],
    ).properties(height=max(120, 14 * n_units))


def gates_frame(inside: Mapping[str, Any], unit: int) -> pd.DataFrame:
    tokens = inside["tokens"]
    parts = []
    for key, name in [*GATES.items(), ("c", "cell state c"), ("h", "hidden state h")]:
        parts.append(pd.DataFrame({"position": np.arange(len(tokens)), "word": tokens,
                                   "series": name,
                                   "value": np.asarray(inside[key])[:, unit]}))
    return pd.concat(parts, ignore_index=True)


def gates_chart(inside: Mapping[str, Any], unit: int) -> alt.Chart:
    return alt.Chart(gates_frame(inside, unit)).mark_line().encode(
        x=alt.X("position:Q", title="word (position in the review)"),
        y=alt.Y("value:Q"), color=alt.Color("series:N", title=f"unit {unit}"),
        tooltip=["position", "word", "series", alt.Tooltip("value:Q", format=".3f")],
    ).properties(height=240)
