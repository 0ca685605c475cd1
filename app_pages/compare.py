"""Compare: every run in one sortable table; for the selected runs their curves, models,
hyperparameter differences and test results; rename, delete and download. Every run shows
its owner; only the owner (or the instructor) gets rename and delete, and core refuses
anyone else regardless. ``?runs=ID,ID`` preselects runs (the leaderboard links here)."""

from __future__ import annotations

import hashlib

import streamlit as st

from app_pages import scoreboard, views
from app_pages.common import me, run_store, visible_runs
from core import access, paths
from core.store import COMPLETED, MODEL_FILE, RunNotFound, RunStore

K = "compare_"  # every session_state key of this page starts with it
MAX_SELECTED = 8  # runs compared at once
DEFAULT_SHOWN = 2  # newest completed runs shown when nothing is selected


def _rename(store: RunStore, run_id: str) -> None:
    try:
        store.rename(run_id, st.session_state.get(f"{K}name_{run_id}", ""), me(store))
    except (ValueError, RunNotFound, access.PermissionDenied) as exc:
        st.session_state[K + "message"] = ("error", str(exc))
    else:
        st.session_state[K + "message"] = ("success", "Renamed.")


def _delete(store: RunStore, run_id: str) -> None:
    try:
        store.delete(run_id, me(store))
    except (ValueError, RunNotFound, access.PermissionDenied) as exc:
        st.session_state[K + "message"] = ("error", str(exc))
    else:
        st.session_state[K + "confirm"] = False
        st.session_state[K + "message"] = ("success", f"Deleted run {run_id}.")


def _where(run) -> str:
    """Where a run trained: its host, and the Ray node when it ran on Ray."""
    env = run.env or {}
    host, node = env.get("host") or run.host, env.get("ray_node")
    if not host:
        return "Not started yet."
    return f"Trained on {host}" + (f" · Ray node {node[:12]}" if node else "")


def render() -> None:
    """The page: the runs table, then the chosen runs' curves, models, test results, and
    managing and downloading one of them."""
    st.title("Compare runs")
    store = run_store(str(paths.lab_home()))
    actor = me(store)
    runs = visible_runs(store, actor)
    if not runs:
        st.info("No runs yet. Train one first.", icon=":material/info:")
        st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
        return
    chosen = _chosen(runs, _runs_table(runs, actor))
    labels = {r.id: views.run_label(r) for r in chosen}
    colors = views.run_colors(chosen)  # one colour per run in every chart
    _learning_curves(store, chosen, labels, colors)
    _models(chosen, labels)
    _test_results(chosen, labels, colors)
    for r in chosen:
        if r.error:
            with st.expander(f"Why {views.md_escape(labels[r.id])} {r.status}"):
                st.code(r.error, language=None)
    _manage(store, actor, chosen, labels)
    scoreboard.groups_section(str(paths.lab_home()), runs, key=K + "group")


def _runs_table(runs: list, actor) -> list:
    """Every visible run in one sortable table; returns the runs selected in it."""
    # Selections are row positions: key the table by the set of runs, so a run added or
    # deleted (by anyone) resets the selection instead of shifting it onto other runs.
    ids_key = hashlib.sha1(",".join(r.id for r in runs).encode()).hexdigest()[:12]
    table = views.runs_frame(runs, actor.name)
    pct = st.column_config.NumberColumn(format="percent")
    event = st.dataframe(
        table, key=f"{K}table_{ids_key}", on_select="rerun", selection_mode="multi-row",
        hide_index=True, placeholder="—",
        column_config={
            "Params": st.column_config.NumberColumn(format="localized"),
            "Best val acc": pct, "Test acc": pct,
            "AUC": st.column_config.NumberColumn(format="%.4f"),
            "Training time (s)": st.column_config.NumberColumn(format="%.1f"),
            "Date": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        })
    return [runs[i] for i in event.selection.rows if i < len(runs)]


def _chosen(runs: list, selected: list) -> list:
    """The runs to compare: the selected ones, else the link's (?runs=), else the newest
    completed ones."""
    if selected:
        if len(selected) > MAX_SELECTED:
            st.warning(f"Comparing the first {MAX_SELECTED} of {len(selected)} selected runs.")
        return selected[:MAX_SELECTED]
    if wanted := [r for r in runs if r.id in st.query_params.get("runs", "").split(",")]:
        st.caption("Showing the runs the link chose; select rows to compare others.")
        return wanted[:MAX_SELECTED]
    chosen = [r for r in runs if r.status == COMPLETED][:DEFAULT_SHOWN] or runs[:1]
    st.caption(f"Showing the newest run{'s' if len(chosen) > 1 else ''}: select rows in the "
               "table (click the box at the left of a row) to choose what to compare. "
               "Click a column header to sort.")
    return chosen


def _learning_curves(store: RunStore, chosen: list, labels: dict[str, str],
                     colors: dict[str, str]) -> None:
    """Loss and accuracy per epoch, training and validation, of every chosen run."""
    st.subheader("Learning curves")
    frame = views.compare_epoch_frame(
        {labels[r.id]: store.metrics(r.id, phase="train") + store.metrics(r.id, phase="val")
         for r in chosen})
    if frame.empty:
        st.caption("No finished epoch yet in these runs.")
    else:
        by_label = {labels[r.id]: colors[r.id] for r in chosen}
        c1, c2 = st.columns(2)
        c1.altair_chart(views.compare_epoch_chart(frame, "loss", colors=by_label),
                        width="stretch")
        c2.altair_chart(views.compare_epoch_chart(frame, "accuracy", colors=by_label),
                        width="stretch")


def _models(chosen: list, labels: dict[str, str]) -> None:
    """The hyperparameters side by side (differences highlighted), each model's summary
    and where it trained."""
    st.subheader("Models and hyperparameters")
    diff, differs = views.config_diff(chosen)
    st.caption("Highlighted rows differ between the runs; '—' = not used by that "
               "architecture." if len(chosen) > 1 else "Hyperparameters of this run.")
    st.dataframe(views.style_diff(diff, differs), height=min(36 * (len(diff) + 1), 720),
                 placeholder="—")
    cols = st.columns(min(len(chosen), 3))
    for i, r in enumerate(chosen):
        with cols[i % len(cols)]:
            st.markdown(f"**{views.md_escape(labels[r.id])}**")
            summary = (r.results or {}).get("summary")
            st.code(summary or f"(no model summary: run {r.status})", language=None)
            st.caption(_where(r))


def _test_results(chosen: list, labels: dict[str, str], colors: dict[str, str]) -> None:
    """Confusion matrices, ROC curves and accuracy by review length of the runs that have
    test results."""
    st.subheader("Test results")
    done = [r for r in chosen if (r.results or {}).get("confusion")]
    if not done:
        st.caption("Test results appear when a run completes.")
        return
    cols = st.columns(min(len(done), 4))
    for i, r in enumerate(done):
        res = r.results
        with cols[i % len(cols)]:
            st.altair_chart(views.confusion_chart(
                views.confusion_frame(res["confusion"]), title=views.short(
                    labels[r.id], 34)), width="content")
            st.caption(f"accuracy {views.fmt_pct(res.get('test_accuracy'))} · "
                       f"{res.get('test_reviews', 0):,} test reviews")
    c1, c2 = st.columns(2)
    c1.altair_chart(views.roc_chart(views.roc_frame(done), colors={
        views.roc_label(r): colors[r.id] for r in done}), width="stretch")
    c2.altair_chart(views.by_length_chart(views.by_length_frame(done), colors={
        labels[r.id]: colors[r.id] for r in done}), width="stretch")


def _manage(store: RunStore, actor, chosen: list, labels: dict[str, str]) -> None:
    """One chosen run: rename (its owner or the instructor), downloads, delete."""
    st.subheader("Manage and download")
    owned = {r.id: views.owned_label(r, actor.name) for r in chosen}
    target = st.selectbox("Run", [r.id for r in chosen], format_func=owned.get,
                          key=K + "target")
    run = next(r for r in chosen if r.id == target)
    kind, text = st.session_state.pop(K + "message", (None, None))
    if kind:
        (st.success if kind == "success" else st.error)(views.md_escape(text))
    may_manage = access.can_manage(actor, run.owner, access.class_mode(store))
    if may_manage:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.text_input("Name", value=run.name, max_chars=80, key=f"{K}name_{run.id}")
        c2.button("Rename", key=K + "rename", width="stretch", on_click=_rename,
                  args=(store, run.id))
    else:
        st.caption(f"This run belongs to {views.md_escape(views.owner_of(run))}: only they or "
                   "the instructor may rename or delete it.")
    _downloads(store, run)
    if not may_manage:
        return
    st.divider()
    confirm = st.checkbox(f"Yes, delete {views.md_escape(labels[run.id])} with its model "
                          "and metrics", key=K + "confirm")
    st.button("Delete run", key=K + "delete", type="primary", icon=":material/delete:",
              disabled=not confirm or run.active, on_click=_delete, args=(store, run.id),
              help="Stop a running job on the Train page first." if run.active else None)


def _downloads(store: RunStore, run) -> None:
    """The run's model file (once completed) and its metrics as CSV."""
    model = store.artifact(run.id, MODEL_FILE) if run.status == COMPLETED else None
    stem = views.safe_filename(f"{run.name}-{run.id}")
    d1, d2 = st.columns(2)
    if model is not None:
        d1.download_button("Download model (.keras)", data=model.read_bytes,
                           file_name=f"{stem}.keras", mime="application/octet-stream",
                           on_click="ignore", key=K + "download_model",
                           icon=":material/download:", width="stretch")
    else:
        d1.caption(f"No model file: the run is {run.status}.")
    d2.download_button("Download metrics (.csv)",
                       data=lambda rid=run.id: views.metrics_csv(store.metrics(rid)),
                       file_name=f"{stem}-metrics.csv", mime="text/csv", on_click="ignore",
                       key=K + "download_metrics", icon=":material/table_view:",
                       width="stretch")


render()
