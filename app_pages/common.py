"""What the router and the pages share: the run store, the job board, the inference client,
the data-source cache key and who the visitor is (their nickname's token, kept in a cookie).

Not a page (``app.py`` lists the pages); it holds Streamlit caches, so it lives beside the
pages rather than in ``core/``."""

from __future__ import annotations

import os

import streamlit as st

from app_pages.live_charts import ChartCache
from core import access, classroom, identity, paths
from core.board import Board
from core.inference import InferenceClient
from core.store import RunStore


@st.cache_resource(show_spinner=False)
def run_store(home: str) -> RunStore:
    """One RunStore per lab home, shared by every page and session. Its settings keep the
    hash of this server's LAB_INSTRUCTOR_KEY, so the CLI can be checked against it."""
    store = RunStore(home)
    access.register_key(store)
    return store


@st.cache_resource(show_spinner=False)
def board(home: str) -> Board:
    """One job board per lab home: every session's fragments read its one shared poll."""
    return Board(run_store(home))


@st.cache_resource(show_spinner=False)
def live_charts(home: str) -> ChartCache:
    """One cache of the live view's charts per lab home, fed by the job board; created with
    the server's first page, when it starts building the usual chart templates."""
    cache = ChartCache(board(home))
    cache.warm_in_background()
    return cache


@st.cache_resource(show_spinner=False)
def inference(home: str) -> InferenceClient:
    """The web server's one handle on the inference process (TensorFlow stays out of here)."""
    return InferenceClient(home)


def data_key() -> tuple[str, str]:
    """(IMDB_DATA, cache folder): what a loaded dataset depends on, as cache-key arguments,
    so changing either (a restart with another source) never serves the old data."""
    return os.environ.get("IMDB_DATA", ""), str(paths.cache_dir())


# -- who is visiting --------------------------------------------------------------------------
COOKIE = "lab_token"
COOKIE_DAYS = 120
TOKEN_KEY, INSTRUCTOR_KEY, PENDING_COOKIE = "lab_token", "lab_instructor", "lab_set_cookie"


def _token() -> str | None:
    """This session's token: remembered in the session, else the browser's cookie (read by
    Streamlit when the page connected: a new tab or a reload)."""
    token = st.session_state.get(TOKEN_KEY)
    if token is None:
        try:
            token = st.context.cookies.get(COOKIE)
        except Exception:  # noqa: BLE001 - no request context (AppTest)
            token = None
    return token if isinstance(token, str) and token else None  # (AppTest: a mock)


def me(store: RunStore) -> access.Actor:
    """The visitor: their nickname (if they picked one in this class) and whether they
    entered the instructor key in this session."""
    token = _token()
    name = identity.lookup(store, token)
    unlocked = bool(st.session_state.get(INSTRUCTOR_KEY)) or (
        name is not None and access.token_is_instructor(store, token))
    return access.Actor(name, unlocked and access.class_mode(store))


def unlock_instructor(store: RunStore) -> None:
    """After the key matched: this session, and the visitor's nickname if they have one."""
    st.session_state[INSTRUCTOR_KEY] = True
    access.remember_unlock(store, _token())


def remember(token: str | None) -> None:
    """Keep the token in the session, and have the browser store (or drop) its cookie."""
    st.session_state[TOKEN_KEY] = token or ""
    st.session_state[PENDING_COOKIE] = token or ""


def write_cookie() -> None:
    """Set (or clear) the cookie from a script in the page: st.context.cookies is read-only,
    and the token is ours (url-safe base64), never typed text."""
    if PENDING_COOKIE not in st.session_state:
        return
    token = st.session_state.pop(PENDING_COOKIE)
    age = COOKIE_DAYS * 86400 if token else 0
    st.html(f"<script>document.cookie = '{COOKIE}={token}; path=/; max-age={age}; "
            "SameSite=Lax';</script>", unsafe_allow_javascript=True)


def visible_runs(store: RunStore, actor: access.Actor, statuses=None):
    """The class's runs this visitor may see (archived ones never; others' when the
    instructor made runs private, not)."""
    owners_only = classroom.load(store).owners_only
    return [r for r in store.list_runs(statuses, archived=False)
            if access.can_view(actor, r.owner, owners_only)]
