"""Instructor: unlock with LAB_INSTRUCTOR_KEY, then set what students may train (and the
leaderboard, run reuse and privacy), see every run with its owner, stop or delete any, and
archive the class to start a new one. Every action goes through core, which checks the key
again (the session's actor is the instructor only after the key matched)."""

from __future__ import annotations

import streamlit as st

from app_pages import views
from app_pages.common import board, me, run_store, unlock_instructor
from core import access, classroom, jobs, paths
from core.config import ARCHITECTURES, INT_RANGES
from core.store import RunNotFound, RunStore

K = "instructor_"


def _unlock(store: RunStore) -> None:
    if access.key_matches(store, st.session_state.get(K + "key", "")):
        unlock_instructor(store)
    else:
        st.session_state[K + "message"] = ("error", "That is not the key.")


def _save(store: RunStore) -> None:
    caps = {f: int(st.session_state[K + "cap_" + f]) for f in classroom.CAPPED_FIELDS
            if st.session_state.get(K + "cap_" + f)}
    settings = classroom.ClassSettings(
        architectures=list(st.session_state[K + "archs"]), caps=caps,
        leaderboard=st.session_state[K + "leaderboard"], reuse=st.session_state[K + "reuse"],
        owners_only=st.session_state[K + "owners_only"])
    try:
        classroom.save(store, settings)
    except ValueError as exc:
        st.session_state[K + "message"] = ("error", str(exc))
    else:
        st.session_state[K + "message"] = ("success", "Class settings saved.")


def _act(store: RunStore, action: str, run_id: str) -> None:
    try:
        if action == "stop":
            jobs.cancel(store, run_id, me(store))
        else:
            store.delete(run_id, me(store))
    except (ValueError, RunNotFound, access.PermissionDenied) as exc:
        st.session_state[K + "message"] = ("error", str(exc))
    else:
        board(str(store.home)).invalidate()
        st.session_state[K + "message"] = ("success", f"Run {run_id}: {action} done.")


def _archive(store: RunStore) -> None:
    n = store.archive_class()
    board(str(store.home)).invalidate()
    st.session_state[K + "message"] = ("success", f"Archived {n} runs; a new class begins "
                                       "(students pick their nicknames again).")


def _settings_form(store: RunStore) -> None:
    current = classroom.load(store)
    st.subheader("Class settings")
    with st.form(K + "settings"):
        st.multiselect("Architectures students may use", list(ARCHITECTURES),
                       default=current.architectures, key=K + "archs",
                       format_func=lambda a: ARCHITECTURES[a]["label"])
        cols = st.columns(len(classroom.CAPPED_FIELDS))
        for col, field in zip(cols, classroom.CAPPED_FIELDS):
            col.number_input(f"Max {views.FIELD_LABELS[field]}", min_value=0,
                             max_value=INT_RANGES[field][1], step=1,
                             value=current.caps.get(field, 0), key=K + "cap_" + field,
                             help="0 = no cap")
        st.toggle("Show the leaderboard", value=current.leaderboard, key=K + "leaderboard")
        st.toggle("Reuse finished runs for identical submissions", value=current.reuse,
                  key=K + "reuse", help="Same settings, seed, data and engine: answered at "
                                        "once from the first run that trained them.")
        st.toggle("Runs visible to their owners only", value=current.owners_only,
                  key=K + "owners_only")
        st.form_submit_button("Save settings", on_click=_save, args=(store,), type="primary")


def _runs(store: RunStore) -> None:
    st.subheader("Every run")
    runs = store.list_runs(archived=False)
    if not runs:
        st.caption("No run in this class yet.")
    else:
        st.dataframe(views.runs_frame(runs), hide_index=True)
        target = st.selectbox("Run", [r.id for r in runs], key=K + "target",
                              format_func={r.id: views.owned_label(r) for r in runs}.get)
        run = next(r for r in runs if r.id == target)
        c1, c2 = st.columns(2)
        c1.button("Stop run", key=K + "stop", disabled=not run.active, on_click=_act,
                  args=(store, "stop", run.id), icon=":material/stop_circle:")
        c2.button("Delete run", key=K + "delete", disabled=run.active, on_click=_act,
                  args=(store, "delete", run.id), icon=":material/delete:")
    st.subheader("Archive the class")
    st.caption(f"Students this class: {', '.join(store.users()) or 'none yet'}.")
    confirm = st.checkbox("Yes, archive every run (kept, but hidden from the class views), "
                          "stop queued runs and start a new class", key=K + "confirm")
    st.button("Archive and start a new class", key=K + "archive", disabled=not confirm,
              on_click=_archive, args=(store,), icon=":material/inventory_2:")


def render() -> None:
    st.title("Instructor")
    store = run_store(str(paths.lab_home()))
    kind, text = st.session_state.pop(K + "message", None) or (None, None)
    if kind:
        (st.success if kind == "success" else st.error)(views.md_escape(text))
    if not access.class_mode(store):
        st.info("Classroom mode is off: start the lab with LAB_INSTRUCTOR_KEY=... (and "
                "LAB_CLASS_CODE=... for a class code) to unlock this page.",
                icon=":material/school:")
        return
    if not me(store).instructor:
        st.text_input("Instructor key", type="password", key=K + "key")
        st.button("Unlock", key=K + "unlock", on_click=_unlock, args=(store,),
                  icon=":material/lock_open:")
        return
    _settings_form(store)
    _runs(store)


render()
