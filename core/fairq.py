"""The fair queue's order and its waits: plain functions of what the store holds.

Round-robin across owners: the next run started belongs to the owner who has waited
longest since their last start (an owner who never started goes first; ties go to the
oldest submission), and each owner's own runs start in the order they were submitted. Two
students with three runs each therefore start A1 B1 A2 B2 A3 B3, whatever order they
submitted in. Runs without an owner count as one owner.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def fair_order(queued: Iterable[tuple[str, str | None, int]],
               last_start: Mapping[str | None, float]) -> list[str]:
    """Run ids in the order they will start. ``queued``: (id, owner, seq); ``last_start``:
    owner -> time of their latest start (absent = never started)."""
    per_owner: dict[str | None, list[tuple[int, str]]] = {}
    for run_id, owner, seq in queued:
        per_owner.setdefault(owner, []).append((seq, run_id))
    for runs in per_owner.values():
        runs.sort(reverse=True)  # pop() takes the oldest
    # (0, real start time) or (1, k) for the k-th simulated start: later than any real one
    started = {o: (0, last_start.get(o, -math.inf)) for o in per_owner}
    order: list[str] = []
    while per_owner:
        owner = min(per_owner, key=lambda o: (started[o], per_owner[o][-1][0]))
        order.append(per_owner[owner].pop()[1])
        if not per_owner[owner]:
            del per_owner[owner]
        started[owner] = (1, len(order))  # just started: the back of the line
    return order


def estimated_waits(queued: Sequence[Any], running: Sequence[Any], max_jobs: int,
                    now: float) -> dict[str, float]:
    """Seconds until each queued run (in fair order) is expected to start: slots free up
    as running runs end (their ETA, else guard's estimate less the time already spent)."""
    from core.guard import estimate

    slots = []
    for run in running:
        eta = (run.progress or {}).get("eta_s")
        if eta is None:
            eta = estimate(run.config).seconds - (now - (run.started_at or now))
        slots.append(max(0.0, float(eta)))
    slots += [0.0] * max(0, max_jobs - len(slots))
    slots.sort()
    waits = {}
    for run in queued:
        start = slots.pop(0)
        waits[run.id] = start
        slots.append(start + estimate(run.config).seconds)
        slots.sort()
    return waits
