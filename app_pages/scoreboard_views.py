"""The seed scoreboard, shaped for display: the band charts of a group's epoch curves, its
seeds' test accuracies beside the tutorial's number, the table and the one-line summary.
Plain altair/pandas, no streamlit (core/groups.py computes the statistics;
app_pages/scoreboard.py renders them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import pandas as pd

from app_pages.views import _PHASE_COLORS, _fit, owner_of, short

REFERENCE_COLOR = "#d23"  # the tutorial's number, as on the leaderboard
SEED_COLUMNS = {"seed": "Seed", "status": "Status", "test_accuracy": "Test acc (%)",
                "best_val_accuracy": "Best val acc (%)", "run_id": "Run id"}


def _reference_rule(value: float, label: str, axis: str = "y") -> list[alt.Chart]:
    """A dashed red rule at ``value`` on ``axis``, labelled at its left end."""
    ref = alt.Chart(pd.DataFrame([{"at": value, "label": label}]))
    rule = ref.mark_rule(color=REFERENCE_COLOR, strokeDash=[6, 4]).encode(
        **{axis: "at:Q"}, tooltip=["label:N"])
    text = ref.mark_text(align="left", dx=4, dy=-6, color=REFERENCE_COLOR, fontSize=11).encode(
        **{axis: "at:Q"}, x=alt.value(2), text="label:N")
    return [rule, text]


def band_chart(stats: pd.DataFrame, metric: str, reference: float | None = None,
               reference_label: str = "", height: int = 240) -> alt.LayerChart:
    """Per epoch and phase: the mean across seeds (line) and mean ± one standard deviation
    (band); ``stats``: core.groups.epoch_stats. An optional reference rule (the tutorial's
    test accuracy, as a fraction)."""
    d = stats[stats["metric"] == metric]
    last = int(d["epoch"].max()) if len(d) else 1
    base = alt.Chart(d).encode(
        x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1),
                scale=alt.Scale(domain=[1, max(2, last)])),
        color=alt.Color("phase:N", scale=_PHASE_COLORS, title=None,
                        legend=alt.Legend(symbolOpacity=1)))
    band = base.mark_area(opacity=0.18).encode(
        y=alt.Y("lo:Q", title=f"{metric} (mean ± std)", scale=alt.Scale(zero=False)),
        y2="hi:Q")
    mean = base.mark_line(point=True).encode(
        y="mean:Q",
        tooltip=["phase:N", "epoch:Q", alt.Tooltip("mean:Q", format=".4f"),
                 alt.Tooltip("std:Q", format=".4f"), alt.Tooltip("seeds:Q", title="seeds")])
    layers = [band, mean]
    if reference is not None:
        layers += _reference_rule(reference, reference_label)
    return _fit(alt.layer(*layers).properties(
        title=f"Epoch {metric} across seeds (line: mean, band: ± 1 std)"), height)


def seeds_chart(seeds: pd.DataFrame, stats: Mapping[str, Any], height: int = 240
                ) -> alt.LayerChart:
    """Each finished seed's test accuracy (%) as a point, the mean ± std as a band and a
    rule, the tutorial's reported accuracy as a dashed red rule. ``seeds``:
    core.groups.seed_frame; ``stats``: core.groups.accuracy_stats."""
    done = seeds.dropna(subset=["test_accuracy"])
    layers: list[alt.Chart] = []
    if stats["mean"] is not None:
        spread = alt.Chart(pd.DataFrame([{"lo": stats["mean"] - stats["std"],
                                          "hi": stats["mean"] + stats["std"],
                                          "mean": stats["mean"], "std": stats["std"]}]))
        layers += [spread.mark_rect(opacity=0.15, color="#3b6fd8").encode(y="lo:Q", y2="hi:Q"),
                   spread.mark_rule(color="#3b6fd8").encode(
                       y="mean:Q", tooltip=[alt.Tooltip("mean:Q", format=".2f", title="mean"),
                                            alt.Tooltip("std:Q", format=".2f", title="std")])]
    layers.append(alt.Chart(done).mark_circle(size=110, opacity=0.85, color="#e0682b").encode(
        x=alt.X("seed:O", title="seed", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("test_accuracy:Q", title="test accuracy (%)", scale=alt.Scale(zero=False)),
        tooltip=["seed:O", alt.Tooltip("test_accuracy:Q", format=".2f", title="test acc (%)"),
                 "run_id:N"]))
    if stats["reference"] is not None:
        layers += _reference_rule(stats["reference"], f"tutorial {stats['reference']:.2f} %")
    return _fit(alt.layer(*layers).properties(title="Test accuracy per seed"), height)


def seeds_table(seeds: pd.DataFrame) -> pd.DataFrame:
    """core.groups.seed_frame with the column names the page shows."""
    return seeds[list(SEED_COLUMNS)].rename(columns=SEED_COLUMNS)


def summary(stats: Mapping[str, Any]) -> str:
    """One line: the test accuracy's mean ± std over the finished seeds, and the
    tutorial's number (markdown)."""
    ref = stats["reference"]
    tutorial = f" · the tutorial reported **{ref:.2f} %**" if ref is not None else ""
    if not stats["done"]:
        return f"No seed has finished yet (0 of {stats['runs']}){tutorial}."
    return (f"Test accuracy over {stats['done']} of {stats['runs']} seeds: mean "
            f"**{stats['mean']:.2f} %** ± {stats['std']:.2f} (min {stats['min']:.2f}, max "
            f"{stats['max']:.2f}){tutorial}.")


def progress(runs: Sequence[Any]) -> str:
    """How far a group is: its seeds and how many runs are in each status."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    seeds = sorted(r.config.seed for r in runs)
    return (f"{len(runs)} runs of one configuration, seeds {seeds[0]} to {seeds[-1]} · "
            + ", ".join(f"{n} {status}" for status, n in counts.items()))


def group_choices(runs: Sequence[Any]) -> dict[str, str]:
    """The groups among ``runs`` (newest first): group id -> "label · N runs · by owner"."""
    members: dict[str, list[Any]] = {}
    for r in sorted(runs, key=lambda r: r.seq, reverse=True):
        if r.group_id:
            members.setdefault(r.group_id, []).append(r)
    return {gid: f"{short(rs[0].group_label or rs[0].name, 60)} · {len(rs)} runs · by "
                 f"{owner_of(rs[0])}" for gid, rs in members.items()}
