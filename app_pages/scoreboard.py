"""The seed scoreboard of a run group (core/groups.py): the runs of one configuration over
several seeds, queued by Train's "Reproduce over N seeds" or ``python -m core reproduce``.
Drawn on Train under a watched run that belongs to a group, and on Compare ("Seed
groups"). Not a page: the pages call it. A group still training redraws every
GROUP_POLL_S, showing what is done so far."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages import scoreboard_views as sv
from app_pages import views
from app_pages.common import board, run_store
from core import groups

GROUP_POLL_S = 5.0  # a group with a seed queued or running redraws this often
MAX_COMPARED = 8  # runs the Compare link preselects (Compare shows at most 8)


@st.cache_data(ttl=GROUP_POLL_S / 2, show_spinner=False)
def _members(home: str, group_id: str) -> list:
    """The group's runs, read once per server every few seconds (every tab shares it)."""
    return run_store(home).group(group_id, reap=False)


@st.cache_data(max_entries=64, show_spinner=False)
def _board(home: str, group_id: str, version: tuple) -> dict[str, Any]:
    """What the scoreboard draws for one state of the group (``version``: each run's id,
    status and epoch), built once per server per state: statistics and chart specs."""
    store = run_store(home)
    runs = _members(home, group_id)
    stats = groups.epoch_stats({r.id: store.metrics(r.id, "train") + store.metrics(r.id, "val")
                                for r in runs})
    acc = groups.accuracy_stats(runs)
    seeds = groups.seed_frame(runs)
    ref, ref_label = views.tutorial_line(acc["reference"])
    return {
        "label": runs[0].group_label or runs[0].name, "progress": sv.progress(runs),
        "ids": [r.id for r in runs],
        "epochs": not stats.empty, "accuracy": acc, "summary": sv.summary(acc),
        "seeds": sv.seeds_table(seeds),
        "loss": sv.band_chart(stats, "loss").to_dict(),
        "val_accuracy": sv.band_chart(stats, "accuracy", ref, ref_label).to_dict(),
        "test": sv.seeds_chart(seeds, acc).to_dict(),
    }


def under_run(home: str, run_id: str) -> None:
    """Train: the scoreboard of the watched run's group, if it belongs to one."""
    group_id = board(home).run(run_id).group_id
    if group_id:
        show(home, group_id)


def groups_section(home: str, runs: list, key: str) -> None:
    """Compare: pick one of the groups among ``runs`` and show its scoreboard."""
    choices = sv.group_choices(runs)
    if not choices:
        return
    st.subheader("Seed groups")
    st.caption("Runs of one configuration over several seeds (Train's \"Reproduce over N "
               "seeds\", or `python -m core reproduce`): how much the seed alone moves the "
               "result.")
    group_id = st.selectbox("Group", list(choices), format_func=choices.get, key=key)
    show(home, group_id)


def show(home: str, group_id: str) -> None:
    """The scoreboard in a bordered box; a fragment polled while a seed is still active."""
    active = any(r.active for r in _members(home, group_id))
    with st.container(border=True):
        st.fragment(run_every=GROUP_POLL_S if active else None)(_scoreboard)(
            home, group_id, active)


def _scoreboard(home: str, group_id: str, polling: bool) -> None:
    runs = _members(home, group_id)
    if not runs:
        st.caption("This group's runs were deleted.")
        return
    if polling and not any(r.active for r in runs):
        st.rerun()  # the last seed ended: redraw once in full, which stops the polling
    data = _board(home, group_id, tuple(
        (r.id, r.status, (r.progress or {}).get("epoch")) for r in runs))
    _header(data)
    _curves(data)
    _test_accuracy(data)


def _header(data: dict[str, Any]) -> None:
    """The group's name, its seeds and their statuses, and a link to compare its runs."""
    st.subheader(f"Seed scoreboard: {views.md_escape(data['label'])}")
    top, link = st.columns([3, 1], vertical_alignment="center")
    top.caption(data["progress"])
    ids = data["ids"][:MAX_COMPARED]
    link.page_link("app_pages/compare.py", label=f"Compare these {len(ids)} runs",
                   icon=":material/compare_arrows:", query_params={"runs": ",".join(ids)})


def _curves(data: dict[str, Any]) -> None:
    """Loss and accuracy per epoch across the seeds: mean and ± one std."""
    if not data["epochs"]:
        st.caption("The band of epoch curves appears when the first seed ends an epoch.")
        return
    c1, c2 = st.columns(2)
    c1.vega_lite_chart(spec=data["loss"], width="stretch")
    c2.vega_lite_chart(spec=data["val_accuracy"], width="stretch")


def _test_accuracy(data: dict[str, Any]) -> None:
    """Each seed's test accuracy beside the tutorial's number, and the table of seeds."""
    st.markdown(data["summary"])
    chart, table = st.columns([3, 2])
    if data["accuracy"]["done"]:
        chart.vega_lite_chart(spec=data["test"], width="stretch")
    pct = st.column_config.NumberColumn(format="%.2f")
    table.dataframe(data["seeds"], hide_index=True, placeholder="—",
                    column_config={"Test acc (%)": pct, "Best val acc (%)": pct})
