"""LSTM Sentiment Lab: the dashboard's entry point and router.

    streamlit run app.py

Every page lives in ``app_pages/`` and only calls ``core/``. This file declares the pages and
draws the sidebar every page shares: who you are (your nickname), the data source in use
(and why), and the training jobs running or queued, with their owners, from the job board.

The folder is deliberately not called ``pages/``: Streamlit treats a ``pages/`` folder as a
version-1 multipage app until some session has run ``st.navigation``, so right after a
server start a browser on /train would get that page alone, without this router and its
sidebar (and AppTest, which resets that flag on every run, could not reach the pages
through the router at all).
"""

from __future__ import annotations

import os

import streamlit as st

from app_pages import views
from app_pages.common import board, live_charts, me, remember, run_store, write_cookie
from core import access, identity, paths
from core.data import DataError, SourceInfo, resolve_source
from core.store import QUEUED, RUNNING

SIDEBAR_QUEUED = 3  # queued runs listed in the sidebar besides the visitor's own
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


def _join(home: str) -> None:
    store = run_store(home)
    try:
        token, name = identity.register(store, st.session_state.get("who_nickname", ""),
                                        st.session_state.get("who_code", ""))
    except identity.IdentityError as exc:
        st.session_state["who_error"] = str(exc)
    else:
        remember(token)
        st.session_state["who_error"] = ""
        st.toast(f"Welcome, {name}!")


def _forget() -> None:
    remember(None)
    st.session_state["lab_instructor"] = False


def _identity(home: str) -> None:
    """The visitor's nickname, or the form to pick one (and the class code, when set)."""
    write_cookie()
    actor = me(run_store(home))
    if actor.name:
        role = " · instructor" if actor.instructor else ""
        st.markdown(f"**You:** {views.md_escape(actor.name)}{role}")
        st.button("Not you? Forget me", key="who_forget", on_click=_forget,
                  icon=":material/logout:", type="tertiary")
        return
    st.markdown("**Who are you?**")
    st.text_input("Nickname", key="who_nickname", max_chars=64,
                  placeholder="2 to 24 letters or digits",
                  help="Shown beside your runs on every page; unique in the class.")
    if identity.class_code_required():
        st.text_input("Class code", key="who_code", type="password",
                      help="The code your instructor gave the class.")
    st.button("Join", key="who_join", on_click=_join, args=(home,), icon=":material/login:")
    if st.session_state.get("who_error"):
        st.error(views.md_escape(st.session_state["who_error"]), icon=":material/error:")
    if access.class_mode(run_store(home)):
        st.caption("Pick a nickname to train; your runs are yours to stop, rename and delete.")


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
    queued = [r.id for r in active if r.status == QUEUED]  # in the fair queue's order
    mine = me(run_store(home)).name
    shown = _shown(active, queued, mine)
    for run in shown:
        position = queued.index(run.id) + 1 if run.status == QUEUED else None
        frac, text = views.progress_view(run, position, board(home).estimated_wait(run.id))
        label = f"{views.short(run.name, 30)} · {views.owner_of(run)}"
        label += " (you)" if mine and run.owner == mine else ""
        st.page_link("app_pages/train.py", label=views.md_escape(label),
                     icon=":material/model_training:" if run.status == RUNNING
                     else ":material/hourglass_top:", query_params={"run": run.id})
        st.progress(frac, text=text)
    if len(shown) < len(active):
        st.caption(f"… and {len(active) - len(shown)} more queued.")


def _shown(active: list, queued: list[str], mine: str | None) -> list:
    """The running runs, the visitor's own and the next SIDEBAR_QUEUED of the queue: a class
    of thirty redraws a short list every JOBS_POLL_S in every tab, not the whole queue."""
    head = set(queued[:SIDEBAR_QUEUED])
    return [r for r in active if r.status == RUNNING or r.id in head
            or (mine and r.owner == mine)]


def run() -> None:
    """Route to the page asked for, after drawing the shared sidebar."""
    st.set_page_config(page_title="LSTM Sentiment Lab", page_icon=":material/psychology:",
                       layout="wide")
    page = _navigation()
    home = str(paths.lab_home())
    live_charts(home)  # the server's first page starts its chart templates (background)
    _sidebar(home)
    page.run()


def _navigation():
    """The router over the pages (the page the URL asks for is returned, not run)."""
    return st.navigation([
        st.Page("app_pages/data.py", title="Data", icon=":material/dataset:"),
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:",
                url_path="train"),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:",
                url_path="compare"),
        st.Page("app_pages/predict.py", title="Predict", icon=":material/rate_review:",
                url_path="predict"),
        st.Page("app_pages/leaderboard.py", title="Leaderboard", icon=":material/leaderboard:",
                url_path="leaderboard"),
        st.Page("app_pages/instructor.py", title="Instructor", icon=":material/school:",
                url_path="instructor"),
    ])


def _sidebar(home: str) -> None:
    """Who you are, the data source, and the jobs (polled only while one is active)."""
    with st.sidebar:
        _identity(home)
        _data_source()
        polling = bool(board(home).active())
        st.fragment(run_every=JOBS_POLL_S if polling else None)(_jobs)(home, polling)


if __name__ == "__main__":
    run()
