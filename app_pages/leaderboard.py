"""Leaderboard: per tutorial model (or architecture), each student's best test accuracy, the
class's spread beside the tutorial's number, and a link to compare the class's best runs."""

from __future__ import annotations

import streamlit as st

from app_pages import views
from app_pages.common import me, run_store, visible_runs
from core import classroom, leaderboard, paths
from core.store import COMPLETED


def _group(name: str, frame) -> None:
    stats = leaderboard.class_stats(frame)
    st.subheader(name)
    ref = stats["reference"]
    st.caption(f"{stats['students']} student{'s' if stats['students'] != 1 else ''} · class "
               f"mean {stats['mean']:.2f} % ± {stats['std']:.2f}"
               + (f" · the tutorial reported {ref:.2f} %" if ref is not None else ""))
    st.altair_chart(views.leaderboard_chart(frame, stats), width="stretch")
    table = frame[["owner", "accuracy", "run_id"]].rename(columns={
        "owner": "Student", "accuracy": "Best test acc (%)", "run_id": "Run id"})
    st.dataframe(table, hide_index=True,
                 column_config={"Best test acc (%)": st.column_config.NumberColumn(
                     format="%.2f")})
    st.page_link("app_pages/compare.py", label=f"Compare these {len(frame)} runs",
                 icon=":material/compare_arrows:",
                 query_params={"runs": ",".join(frame["run_id"].head(8))})


def render() -> None:
    st.title("Class leaderboard")
    store = run_store(str(paths.lab_home()))
    actor = me(store)
    if not classroom.load(store).leaderboard and not actor.instructor:
        st.info("The instructor has hidden the leaderboard for now.", icon=":material/info:")
        return
    frame = leaderboard.best_frame(visible_runs(store, actor, [COMPLETED]))
    if frame.empty:
        st.info("No completed run with an owner yet: pick a nickname and train one.",
                icon=":material/info:")
        return
    st.caption("Each student's best completed run per model, by test accuracy. Points are "
               "students; the band is the class mean ± one standard deviation; the dashed "
               "red line is the tutorial's reported accuracy.")
    for name, group in frame.groupby("group", sort=True):
        _group(views.md_escape(str(name)), group)


render()
