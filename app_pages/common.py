"""What the router and the pages share: the run store and the data-source cache key.

Not a page (``app.py`` lists the pages); it holds Streamlit caches, so it lives beside the
pages rather than in ``core/``."""

from __future__ import annotations

import os

import streamlit as st

from core import paths
from core.store import RunStore


@st.cache_resource(show_spinner=False)
def run_store(home: str) -> RunStore:
    """One RunStore per lab home, shared by every page and session."""
    return RunStore(home)


def data_key() -> tuple[str, str]:
    """(IMDB_DATA, cache folder): what a loaded dataset depends on, as cache-key arguments,
    so changing either (a restart with another source) never serves the old data."""
    return os.environ.get("IMDB_DATA", ""), str(paths.cache_dir())
