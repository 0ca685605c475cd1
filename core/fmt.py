"""Plain formatting of durations, percentages and dates: one home for the dashboard
(app_pages/views.py), the command line (core/cli.py) and the cost guard (core/guard.py).
Missing values print as "—" on the pages and "--" in the terminal."""

from __future__ import annotations

import math
import time

MISSING = "—"  # the dashboard's mark for a missing value
CLI_MISSING = "--"  # the command line's (plain ASCII in table columns)


def _missing(x: float | None) -> bool:
    return x is None or not math.isfinite(x)


def seconds(s: float | None) -> str:
    """A duration for the dashboard: "< 1 s", "4.2 s", "1 min 15 s", "2 h 02 min"."""
    if _missing(s):
        return MISSING
    s = max(0.0, float(s))
    if s < 1:
        return "< 1 s"
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def seconds_compact(s: float | None) -> str:
    """A duration for terminal columns: "42s", "3m05s"."""
    if _missing(s):
        return CLI_MISSING
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def seconds_rough(s: float) -> str:
    """An estimate's order of magnitude: "40 s", "12 min", "2.5 h" (core/guard.py's)."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def pct(x: float | None, digits: int = 2, missing: str = MISSING) -> str:
    """A fraction as a percentage: 0.8748 -> "87.48 %"."""
    return missing if _missing(x) else f"{100 * x:.{digits}f} %"


def date(ts: float | None) -> str:
    """A timestamp as local "YYYY-MM-DD HH:MM"."""
    return MISSING if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
