"""Where the lab keeps its files: ``LAB_HOME`` (default ``.lab/`` beside the app)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def lab_home() -> Path:
    """Run store, model files and caches live here; set LAB_HOME to move them."""
    return Path(os.environ.get("LAB_HOME") or PROJECT_ROOT / ".lab").expanduser()


def cache_dir() -> Path:
    """Encoded-data cache; shared by all stores unless LAB_CACHE is set."""
    return Path(os.environ.get("LAB_CACHE") or lab_home() / "cache").expanduser()
