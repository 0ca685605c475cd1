"""What the router and the pages share: the run store, the job board, the inference client
and the data-source cache key.

Not a page (``app.py`` lists the pages); it holds Streamlit caches, so it lives beside the
pages rather than in ``core/``."""

from __future__ import annotations

import os

import streamlit as st

from core import paths
from core.board import Board
from core.inference import InferenceClient
from core.store import RunStore


@st.cache_resource(show_spinner=False)
def run_store(home: str) -> RunStore:
    """One RunStore per lab home, shared by every page and session."""
    return RunStore(home)


@st.cache_resource(show_spinner=False)
def board(home: str) -> Board:
    """One job board per lab home: every session's fragments read its one shared poll."""
    return Board(run_store(home))


@st.cache_resource(show_spinner=False)
def inference(home: str) -> InferenceClient:
    """The web server's one handle on the inference process (TensorFlow stays out of here)."""
    return InferenceClient(home)


def data_key() -> tuple[str, str]:
    """(IMDB_DATA, cache folder): what a loaded dataset depends on, as cache-key arguments,
    so changing either (a restart with another source) never serves the old data."""
    return os.environ.get("IMDB_DATA", ""), str(paths.cache_dir())
