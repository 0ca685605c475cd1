"""core/fmt.py: the one home of plain formatting (pages, command line, cost guard)."""

from __future__ import annotations

import math

from app_pages import views
from core import cli, fmt, guard


def test_dashboard_and_terminal_formats():
    assert views.fmt_seconds is fmt.seconds and views.fmt_pct is fmt.pct
    assert fmt.seconds(None) == fmt.seconds(math.nan) == "—" and fmt.seconds(4.25) == "4.2 s"
    assert fmt.seconds_compact(42.4) == "42s" and fmt.seconds_compact(185) == "3m05s"
    assert fmt.seconds_compact(None) == "--" and cli._fmt_s(None) == "--"
    assert fmt.pct(None) == "—" and cli._pct(None) == "--" and cli._pct(0.5) == "50.00 %"
    assert fmt.pct(0.8748, 1) == "87.5 %" and fmt.date(None) == "—"


def guard_config():
    from core.config import preset

    return preset("seed-lstm", train_size=2000, epochs=1)


def test_rough_estimates_as_the_guard_prints_them():
    """The guard's estimates and budgets are rounded to what an estimate can promise."""
    got = [fmt.seconds_rough(s) for s in (0.0, 12.3, 89.9, 90, 600, 5399, 5400, 86_400 * 3)]
    assert got == ["0 s", "12 s", "90 s", "2 min", "10 min", "90 min", "1.5 h", "72.0 h"]
    assert fmt.seconds_rough(guard.estimate(guard_config()).seconds) in \
        guard.estimate(guard_config()).describe()
