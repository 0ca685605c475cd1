"""The class leaderboard: each student's best test accuracy per model, the class's spread,
and the tutorial's number beside it (plain pandas; app_pages/views.py draws it).

Runs are grouped by the tutorial preset they equal (``config.preset_of``: same settings but
name and seed), else by architecture ("LSTM, own settings"). Runs without an owner are not
ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.config import ARCHITECTURES, PRESETS, REPORTED_ACCURACY, preset_of
from core.store import COMPLETED

COLUMNS = ["group", "preset", "owner", "accuracy", "run_id"]


def group_of(run: Any) -> tuple[str, str | None]:
    """(group label, preset name or None)."""
    pname = preset_of(run.config)
    if pname:
        return PRESETS[pname]["name"], pname
    label = ARCHITECTURES.get(run.architecture, {}).get("label", run.architecture)
    return f"{label}, own settings", None


def best_frame(runs: Sequence[Any]) -> pd.DataFrame:
    """One row per (group, owner): the owner's best test accuracy (%) and that run's id."""
    rows = []
    for r in runs:
        acc = (r.results or {}).get("test_accuracy")
        if r.status != COMPLETED or acc is None or not r.owner:
            continue
        group, pname = group_of(r)
        rows.append({"group": group, "preset": pname, "owner": r.owner,
                     "accuracy": 100.0 * acc, "run_id": r.id})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    frame = frame.sort_values("accuracy", ascending=False).drop_duplicates(["group", "owner"])
    return frame.sort_values(["group", "accuracy"], ascending=[True, False]).reset_index(
        drop=True)


def class_stats(frame: pd.DataFrame) -> dict[str, Any]:
    """Students, mean and std (sample; 0 for one student) of one group's best accuracies,
    and the tutorial's reported accuracy when the group is a preset."""
    accs = frame["accuracy"]
    pname = frame["preset"].iloc[0] if len(frame) else None
    return {"students": len(frame), "mean": float(accs.mean()),
            "std": float(accs.std()) if len(frame) > 1 else 0.0,
            "reference": REPORTED_ACCURACY.get(pname) if pname else None}
