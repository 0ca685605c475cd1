"""LSTM Sentiment Lab: the dashboard's entry point and router.

    streamlit run app.py

Every page lives in ``app_pages/`` and only calls ``core/``. This file declares the pages and
draws the sidebar every page shares: the data source in use (and why), and the training
jobs running or queued, polled from the run store.

The folder is deliberately not called ``pages/``: Streamlit treats a ``pages/`` folder as a
version-1 multipage app until some session has run ``st.navigation``, so right after a
server start a browser on /train would get that page alone, without this router and its
sidebar (and AppTest, which resets that flag on every run, could not reach the pages
through the router at all).
"""

from __future__ import annotations

import os

import streamlit as st

from app_pages.common import board
from core import paths, views
from core.data import DataError, SourceInfo, resolve_source
from core.store import QUEUED, RUNNING

JOBS_POLL_S = 2.0  # how often the sidebar redraws the job list while a job is active


@st.cache_data(ttl=300, show_spinner=False)
def _source(imdb_data: str) -> tuple[SourceInfo | None, str | None]:
    """The data source (cached: looking for the Keras download may probe the network)."""
    try:
        return resolve_source(), None
    except DataError as exc:
        return None, str(exc)


def _data_source() -> None:
    src, error = _source(os.environ.get("IMDB_DATA", ""))
    st.markdown("**Data source**")
    if error:
        st.error(error, icon=":material/error:")
    elif src.is_demo:
        st.warning(f"{md_label(src)}  \n{views.md_escape(src.reason)}. For real reviews set "
                   "`IMDB_DATA=/path/to/aclImdb_v1.tar.gz` and restart.",
                   icon=":material/science:")
    else:
        st.info(f"{md_label(src)}  \n{views.md_escape(src.reason)}", icon=":material/dataset:")


def md_label(src: SourceInfo) -> str:
    return f"**{views.md_escape(src.label())}**"


def _jobs(home: str, polling: bool) -> None:
    """Running and queued jobs with their progress, from the server's one job board; a
    fragment redrawn every JOBS_POLL_S while any job is active, and never when none is."""
    active = board(home).active()
    if polling and not active:
        st.rerun()  # the last job just ended: redraw once in full, which stops the polling
    st.markdown("**Jobs**")
    if not active:
        st.caption("No training job running or queued.")
        return
    queued = [r.id for r in active if r.status == QUEUED]  # in seq order: the queue's
    for run in active:
        position = queued.index(run.id) + 1 if run.status == QUEUED else None
        frac, text = views.progress_view(run, position)
        st.page_link("app_pages/train.py", label=views.md_escape(views.short(run.name, 40)),
                     icon=":material/model_training:" if run.status == RUNNING
                     else ":material/hourglass_top:", query_params={"run": run.id})
        st.progress(frac, text=text)


def run() -> None:
    st.set_page_config(page_title="LSTM Sentiment Lab", page_icon=":material/psychology:",
                       layout="wide")
    page = st.navigation([
        st.Page("app_pages/data.py", title="Data", icon=":material/dataset:"),
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:",
                url_path="train"),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:",
                url_path="compare"),
        st.Page("app_pages/predict.py", title="Predict", icon=":material/rate_review:",
                url_path="predict"),
    ])
    with st.sidebar:
        _data_source()
        home = str(paths.lab_home())
        polling = bool(board(home).active())
        st.fragment(run_every=JOBS_POLL_S if polling else None)(_jobs)(home, polling)
    page.run()


if __name__ == "__main__":
    run()
