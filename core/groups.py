"""Seed groups: one configuration trained over several seeds, and its statistics.

A group is the runs ``jobs.submit_group`` (the Train page's "Reproduce over N seeds") or
``python -m core reproduce`` queued together: the same settings, seeds ``cfg.seed``,
``cfg.seed + 1``, ... Each run carries the group's id and label in the store; this module
makes the members' configurations and computes what the scoreboard shows: per epoch, the
mean and standard deviation across seeds, and each seed's test accuracy beside the
tutorial's reported number. A group still running counts what is done so far. Plain
pandas; app_pages/scoreboard_views.py draws it.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from core.config import NAME_MAX_CHARS, REPORTED_ACCURACY, TrainConfig, preset_of
from core.store import COMPLETED

# pandas (a second's import on the shared machine) is imported where a frame is made: the
# queue (core.jobs), and with it the CLI and every worker, imports this module without it.
if TYPE_CHECKING:
    import pandas as pd

PHASES = {"train": "train", "val": "validation"}  # stored phase -> shown phase
STAT_COLUMNS = ["phase", "metric", "epoch", "mean", "std", "lo", "hi", "seeds"]
SEED_COLUMNS = ["seed", "status", "test_accuracy", "best_val_accuracy", "run_id"]


def new_group_id() -> str:
    """Sortable by creation time, unique across processes."""
    return "g" + time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def seeds(cfg: TrainConfig, n: int) -> list[int]:
    return [cfg.seed + k for k in range(n)]


def _fit(text: str, suffix: str) -> str:
    """``text + suffix``, ``text`` cut (with "…") so the whole stays a valid run name."""
    room = NAME_MAX_CHARS - len(suffix)
    return (text if len(text) <= room else text[:room - 1] + "…") + suffix


def label(cfg: TrainConfig, n: int) -> str:
    """The group's name: its configuration's name and the number of seeds."""
    return _fit(cfg.display_name(), f" × {n} seeds")


def members(cfg: TrainConfig, n: int) -> list[TrainConfig]:
    """The group's configurations: ``cfg`` with seeds cfg.seed .. cfg.seed + n - 1, each
    named after its seed."""
    return [dataclasses.replace(cfg, seed=s, name=_fit(cfg.display_name(), f" · seed {s}"))
            for s in seeds(cfg, n)]


def epoch_stats(rows_by_run: Mapping[str, Iterable[Mapping[str, Any]]]) -> pd.DataFrame:
    """Epoch metrics of each run (store rows, phases 'train' and 'val') -> per phase
    ('train' / 'validation'), metric (loss, accuracy) and epoch (1-based): the mean across
    the runs that reached it, the sample standard deviation (0 for one run), mean ∓ std
    (lo, hi) and how many runs (seeds) it counts. Non-finite values are left out."""
    import pandas as pd

    values = pd.DataFrame(
        [(PHASES[r["phase"]], r["name"], int(r["epoch"]) + 1, run_id, float(r["value"]))
         for run_id, rows in rows_by_run.items() for r in rows
         if r["phase"] in PHASES and r["name"] in ("loss", "accuracy")
         and r["value"] is not None and math.isfinite(r["value"])],
        columns=["phase", "metric", "epoch", "run", "value"])
    # one value per run and epoch (a metric written twice counts once: the last)
    values = values.drop_duplicates(["phase", "metric", "epoch", "run"], keep="last")
    out = values.groupby(["phase", "metric", "epoch"], as_index=False)["value"].agg(
        mean="mean", std="std", seeds="count")
    out["std"] = out["std"].fillna(0.0)
    out["lo"], out["hi"] = out["mean"] - out["std"], out["mean"] + out["std"]
    return out[STAT_COLUMNS].sort_values(["phase", "metric", "epoch"], ignore_index=True)


def seed_frame(runs: Sequence[Any]) -> pd.DataFrame:
    """One row per run: its seed, status, test and best validation accuracy (%, None until
    known) and id, in seed order."""
    import pandas as pd

    rows = []
    for r in runs:
        res = r.results or {}
        test, val = res.get("test_accuracy"), res.get("best_val_accuracy")
        rows.append({"seed": r.config.seed, "status": r.status,
                     "test_accuracy": None if test is None or r.status != COMPLETED
                     else 100.0 * test,
                     "best_val_accuracy": None if val is None else 100.0 * val,
                     "run_id": r.id})
    frame = pd.DataFrame(rows, columns=SEED_COLUMNS)
    for col in ("test_accuracy", "best_val_accuracy"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame.sort_values("seed", ignore_index=True)


def accuracy_stats(runs: Sequence[Any]) -> dict[str, Any]:
    """Test accuracy (%) across the completed runs: how many of all, mean, sample std (0 for
    one), min, max (None without any), and the tutorial's reported accuracy (%) when the
    configuration is one of its presets (``preset``: its name)."""
    accs = [100.0 * r.results["test_accuracy"] for r in runs
            if r.status == COMPLETED and (r.results or {}).get("test_accuracy") is not None]
    pname = preset_of(runs[0].config) if runs else None
    out: dict[str, Any] = {"done": len(accs), "runs": len(runs), "mean": None, "std": None,
                           "min": None, "max": None, "preset": pname,
                           "reference": REPORTED_ACCURACY.get(pname) if pname else None}
    if accs:
        out.update(mean=statistics.mean(accs), min=min(accs), max=max(accs),
                   std=statistics.stdev(accs) if len(accs) > 1 else 0.0)
    return out
