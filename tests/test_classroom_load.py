"""A small class on a real server: bench/classroom.py with 4 tabs and tiny jobs on the demo
set. Each tab loads Train, launches a job through the form, watches it live to the end and
scores a review on Predict, all over Streamlit's websocket protocol.

Correctness only (timings on a shared machine prove nothing here): every job completes,
no page shows an exception, no batch metric row is lost, no tab hit an error, and the
server and every worker are gone afterwards.
"""

from __future__ import annotations

import asyncio
import sys

import psutil
import pytest

from conftest import TINY
from core.paths import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
classroom = pytest.importorskip("classroom", reason="bench/classroom.py needs websockets")

TABS = 4
# The form's number inputs take TINY's sizes (architecture and optimizer: the LSTM preset).
JOB = {k: v for k, v in TINY.items() if k != "architecture"}


def _lab_processes(home) -> list[psutil.Process]:
    """Processes still running for this LAB_HOME (the server or a worker)."""
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if (p.info["environ"] or {}).get("LAB_HOME", "").startswith(str(home)):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow
def test_four_tabs_train_watch_and_predict(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_JOBS", "2")  # two jobs at a time: the test stays short
    monkeypatch.setattr(classroom, "JOB_TIMEOUT_S", 120)
    monkeypatch.setattr(classroom, "WATCH_ROUNDS", 1)
    homes = []
    real_server = classroom.Server

    def server(home, *args):  # the harness's temporary LAB_HOME, to check afterwards
        homes.append(home)
        return real_server(home, *args)

    monkeypatch.setattr(classroom, "Server", server)
    result = asyncio.run(classroom.classroom(TABS, "demo", str(tmp_path / "cache"), JOB,
                                             idle_s=2.0, baseline=False))

    assert result["errors"] == []
    assert result["exceptions"] == []
    jobs = result["jobs"]
    assert jobs["launched"] == jobs["completed"] == TABS, jobs["runs"]
    assert all(j["expected_rows"] > 0 for j in jobs["runs"])
    assert jobs["rows_lost"] == 0, jobs["runs"]
    assert all(t.get("probability", "").endswith("%") for t in result["tabs"]), result["tabs"]
    assert all(t["fragment_runs"] > 0 for t in result["tabs"])  # the live view was polled
    # then one job watched by every tab, and the same job with none watching
    watched = result["one_run_watched"]
    assert watched["statuses"] == ["completed", "completed"] and watched["rows_lost"] == 0
    assert not [p for home in homes for p in _lab_processes(home)]


def test_tab_reads_exceptions_timers_and_pages():
    """The client's bookkeeping, without a server: an exception delta is recorded,
    auto_rerun starts a fragment timer that stop_auto_rerun and a full run's
    new_session stop, and pages come from new_session."""
    from stclient import Tab
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    async def play() -> Tab:
        tab = Tab("http://127.0.0.1:1", "t")
        msg = ForwardMsg()
        msg.new_session.app_pages.add(page_script_hash="h1", url_pathname="train")
        msg.new_session.page_script_hash = "h1"
        msg.metadata.run.script_run_id = "r1"
        tab._handle(msg)
        msg = ForwardMsg()
        msg.delta.new_element.exception.type = "ValueError"
        msg.metadata.delta_path.extend([0, 1])
        tab._handle(msg)
        msg = ForwardMsg()
        msg.auto_rerun.interval, msg.auto_rerun.fragment_id = 60.0, "f1"
        tab._handle(msg)
        assert set(tab.timers) == {"f1"}
        msg = ForwardMsg()
        msg.stop_auto_rerun.fragment_ids.append("f1")
        tab._handle(msg)
        assert not tab.timers
        return tab

    tab = asyncio.run(play())
    assert tab.pages == {"train": "h1"} and tab.page_hash == "h1"
    assert tab.exceptions == ["t: ValueError: "]
    assert tab.shown("exception")[0].type == "ValueError"
