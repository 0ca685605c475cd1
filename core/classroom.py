"""The class's settings, kept in the run store's settings table and set by the instructor.

What students may train (architectures, and caps on epochs, train_size, maxlen, top_words
and units, enforced for students by ``config.validate``), whether the leaderboard is shown,
whether identical submissions reuse a finished run, and whether runs are visible to their
owners only. Defaults leave a lab without an instructor exactly as before: no caps, the
leaderboard shown, no reuse, runs visible to all.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from core.config import ARCHITECTURES, INT_RANGES, Limits

SETTING = "class_settings"
CAPPED_FIELDS = ("epochs", "train_size", "maxlen", "top_words", "units")
DEFAULT_MAX_QUEUED = 3


def max_queued_per_user() -> int:
    try:
        return max(1, int(os.environ.get("LAB_MAX_QUEUED_PER_USER", DEFAULT_MAX_QUEUED)))
    except ValueError:
        return DEFAULT_MAX_QUEUED


@dataclass
class ClassSettings:
    architectures: list[str] = field(default_factory=lambda: list(ARCHITECTURES))
    caps: dict[str, int] = field(default_factory=dict)  # field -> largest value allowed
    leaderboard: bool = True
    reuse: bool = False
    owners_only: bool = False  # completed runs visible to their owners (and instructor) only

    def limits(self) -> Limits:
        return Limits(architectures=tuple(self.architectures), caps=dict(self.caps))

    def problems(self) -> list[str]:
        """What is wrong with settings the instructor entered."""
        errors = []
        unknown = [a for a in self.architectures if a not in ARCHITECTURES]
        if unknown:
            errors.append(f"architectures: unknown {', '.join(unknown)}")
        if not self.architectures:
            errors.append("architectures: allow at least one")
        for name, cap in self.caps.items():
            if name not in CAPPED_FIELDS:
                errors.append(f"caps: {name} cannot be capped (allowed: {', '.join(CAPPED_FIELDS)})")
                continue
            low, high = INT_RANGES[name]
            if not isinstance(cap, int) or not max(low, 1) <= cap <= high:
                errors.append(f"caps: {name} cap {cap!r} must be a whole number from "
                              f"{max(low, 1)} to {high}")
        return errors


def load(store) -> ClassSettings:
    raw: dict[str, Any] = store.get_setting(SETTING) or {}
    known = {k: v for k, v in raw.items() if k in ClassSettings.__dataclass_fields__}
    return ClassSettings(**known)


def save(store, settings: ClassSettings) -> None:
    """Store the settings; ValueError listing every problem (nothing stored then)."""
    errors = settings.problems()
    if errors:
        raise ValueError("; ".join(errors))
    store.set_setting(SETTING, asdict(settings))


def student_limits(store, actor) -> Limits | None:
    """The limits validation applies to ``actor``: none for the instructor."""
    if actor is not None and actor.instructor:
        return None
    return load(store).limits()


def allowed_ranges(limits: Limits | None) -> dict[str, tuple[int, int]]:
    """field -> (low, high) as the Train form shows them, with the class caps applied."""
    out = {}
    for name in CAPPED_FIELDS:
        low, high = INT_RANGES[name]
        if limits and name in limits.caps:
            low, high = max(low, 1), min(high, limits.caps[name])  # train_size 0 = all
        out[name] = (low, high)
    return out
