"""A protocol-level Streamlit client: one browser tab, without the browser.

It speaks the websocket protocol of the installed streamlit (``/_stcore/stream``, binary
``BackMsg``/``ForwardMsg`` protobufs) the way the frontend does, so a benchmark can hold
dozens of tabs in one asyncio process on a small machine and still cost the server what
real tabs cost:

- the first ``rerun_script`` names the page by its URL path (``page_name``) with an empty
  ``page_script_hash``; later ones carry the hash from ``new_session`` / ``navigation``
  and the current query string (updated by ``page_info_changed``);
- widgets are found in the received deltas by label (their ids are derived by streamlit
  and never hard-coded here); values go in ``widget_states``, buttons are a one-shot
  ``trigger_value``. Only widgets this client changed are sent: the server keeps the
  others' values in its session state, as it does for a tab;
- ``auto_rerun`` (what ``st.fragment(run_every=...)`` sends) starts a timer that requests
  a rerun of that fragment every interval, with ``is_auto_rerun``; a full run's
  ``new_session``, ``stop_auto_rerun`` and a page change stop the timers, as the
  frontend's cleanupAutoReruns does;
- exception elements are collected, so a caller can assert that no page failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.NumberInput_pb2 import NumberInput
from streamlit.proto.WidgetStates_pb2 import WidgetState

FINISHED = ForwardMsg.FINISHED_SUCCESSFULLY
FRAGMENT_FINISHED = ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY


class ProtocolError(RuntimeError):
    """The page did not show what the client looked for (a missing widget, a timeout)."""


class Tab:
    """One browser tab's view of the app: the elements on screen, the page, the timers."""

    def __init__(self, base_url: str, name: str = "tab") -> None:
        self.url = base_url.replace("http", "ws", 1).rstrip("/") + "/_stcore/stream"
        self.name = name
        self.ws = None
        self.reader: asyncio.Task | None = None
        self.elements: dict[tuple[int, ...], tuple[str, object]] = {}  # path -> (run, el)
        self.run_id = ""  # script run whose deltas are arriving
        self.page_hash = ""
        self.finished_page = ""  # the page of the last full run that finished
        self.pages: dict[str, str] = {}  # url path -> page script hash
        self.query = ""
        self.widgets: dict[str, WidgetState] = {}  # values this tab set, resent each rerun
        self.timers: dict[str, tuple[float, asyncio.Task]] = {}  # fragment id -> timer
        self.full_runs = self.fragment_runs = self.auto_reruns_sent = 0
        self.exceptions: list[str] = []
        self.tick = asyncio.Event()  # set on every script_finished
        self.state = "new"  # what the student is doing; set by the caller, for phases

    # -- connection ---------------------------------------------------------------------
    async def open(self, page: str, query: str = "", timeout: float = 120) -> float:
        """Connect and load ``page`` (its URL path) as a fresh tab; returns the seconds
        from connecting to the end of the first full script run."""
        t0 = time.perf_counter()
        # No client pings: browsers never send any (the server pings, and we answer).
        self.ws = await websockets.connect(self.url, subprotocols=["streamlit"],
                                           max_size=None, open_timeout=timeout,
                                           ping_interval=None)
        self.reader = asyncio.create_task(self._read())
        self.query = query
        await self._await_run(self._send(page_name=page), timeout)
        return time.perf_counter() - t0

    async def close(self) -> None:
        self._stop_timers()
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            self._handle(msg)

    # -- incoming -----------------------------------------------------------------------
    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            self._new_session(msg)
        elif kind == "navigation":
            self._pages(msg.navigation.app_pages)
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "delta" and msg.delta.HasField("new_element"):
            self._element(tuple(msg.metadata.delta_path), msg.delta.new_element)
        elif kind == "auto_rerun":
            self._start_timer(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fid in msg.stop_auto_rerun.fragment_ids:
                self._stop_timer(fid)
        elif kind == "script_finished":
            self._finished(msg.script_finished)

    def _new_session(self, msg: ForwardMsg) -> None:
        """A run starts. A full run (no fragment ids) resets the timers, as the frontend's
        handleNewSession does; its elements replace the page's when it finishes."""
        self.run_id = msg.metadata.run.script_run_id
        ns = msg.new_session
        self._pages(ns.app_pages)
        if not msg.metadata.run.fragment_ids:
            self._stop_timers()
            self.page_hash = ns.page_script_hash or self.page_hash

    def _pages(self, app_pages) -> None:
        for page in app_pages:
            self.pages[page.url_pathname] = page.page_script_hash

    def _element(self, path: tuple[int, ...], el) -> None:
        self.elements[path] = (self.run_id, el)
        if el.WhichOneof("type") == "exception":
            self.exceptions.append(f"{self.name}: {el.exception.type}: {el.exception.message}")

    def _finished(self, status: int) -> None:
        if status == FINISHED:
            self.full_runs += 1
            self.finished_page = self.page_hash
            # Stale elements (not redrawn by this run) leave the screen, as in the frontend.
            self.elements = {p: (r, e) for p, (r, e) in self.elements.items()
                             if r == self.run_id}
        elif status == FRAGMENT_FINISHED:
            self.fragment_runs += 1
        self.tick.set()

    # -- timers (st.fragment(run_every=...)) -------------------------------------------
    def _start_timer(self, fragment_id: str, interval: float) -> None:
        old = self.timers.get(fragment_id)
        if old and old[0] == interval:
            return
        self._stop_timer(fragment_id)
        self.timers[fragment_id] = (interval, asyncio.create_task(
            self._every(fragment_id, interval)))

    async def _every(self, fragment_id: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.auto_reruns_sent += 1
            await self._send(fragment_id=fragment_id, auto=True)

    def _stop_timer(self, fragment_id: str) -> None:
        timer = self.timers.pop(fragment_id, None)
        if timer:
            timer[1].cancel()

    def _stop_timers(self) -> None:
        for fid in list(self.timers):
            self._stop_timer(fid)

    # -- outgoing -----------------------------------------------------------------------
    async def _send(self, page_name: str = "", page_hash: str | None = None,
                    fragment_id: str = "", auto: bool = False,
                    triggers: tuple[WidgetState, ...] = ()) -> None:
        cs = ClientState(query_string=self.query, page_name=page_name,
                         page_script_hash=self.page_hash if page_hash is None else page_hash,
                         fragment_id=fragment_id, is_auto_rerun=auto)
        cs.widget_states.widgets.extend([*self.widgets.values(), *triggers])
        msg = BackMsg()
        msg.rerun_script.CopyFrom(cs)
        await self.ws.send(msg.SerializeToString())

    async def _await_run(self, send, timeout: float, page_hash: str | None = None) -> None:
        """Send a rerun request and wait for the next full run (of ``page_hash``, when
        given: a run of the old page may still end after the request left) to finish."""
        before = self.full_runs
        await send
        await self.until(lambda: self.full_runs > before and page_hash in (
            None, self.finished_page), timeout, "the script run")

    async def until(self, cond: Callable[[], object], timeout: float, what: str) -> object:
        """Wait (on script runs ending) until ``cond()`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            self.tick.clear()
            value = cond()
            if value:
                return value
            left = deadline - time.monotonic()
            if self.reader is not None and self.reader.done():
                raise ProtocolError(f"{self.name}: connection lost waiting for {what}: "
                                    f"{self.closed_why()}")
            if left <= 0:
                raise ProtocolError(f"{self.name}: no {what} after {timeout:.0f}s "
                                    f"(page {self.page_hash[:8]}, query {self.query!r})")
            try:
                await asyncio.wait_for(self.tick.wait(), min(left, 1.0))
            except TimeoutError:
                pass

    def closed_why(self) -> str:
        exc = self.reader.exception() if not self.reader.cancelled() else None
        return repr(exc) if exc else f"closed by the server ({self.ws.close_code})"

    async def rerun(self, timeout: float = 60) -> None:
        """Commit the values set so far (a browser does on blur/Enter)."""
        await self._await_run(self._send(), timeout)

    async def press(self, label: str, kind: str = "button", timeout: float = 60) -> None:
        """Click the button with this label and wait for the run it triggers."""
        button = self.widget(kind, label)
        if button.disabled:
            raise ProtocolError(f"{self.name}: {label!r} is disabled; errors on the page: "
                                f"{self.texts('alert')}")
        trigger = WidgetState(id=button.id, trigger_value=True)
        await self._await_run(self._send(triggers=(trigger,)), timeout)

    async def goto(self, page: str, query: str = "", timeout: float = 120) -> None:
        """Follow a link to another page (its URL path), as the sidebar navigation does."""
        if page not in self.pages:
            raise ProtocolError(f"{self.name}: no page {page!r} in {sorted(self.pages)}")
        self._stop_timers()
        self.elements.clear()
        self.widgets.clear()  # the old page's widgets are gone
        self.query = query
        target = self.pages[page]
        await self._await_run(self._send(page_hash=target), timeout, target)

    # -- what is on screen --------------------------------------------------------------
    def shown(self, kind: str) -> list:
        """The elements of one kind (``button``, ``alert``, ``metric``...) in page order."""
        return [getattr(el, kind) for _, (_, el) in sorted(self.elements.items())
                if el.WhichOneof("type") == kind]

    def texts(self, kind: str) -> list[str]:
        return [getattr(e, "body", "") or getattr(e, "label", "") for e in self.shown(kind)]

    def widget(self, kind: str, label: str):
        found = [w for w in self.shown(kind) if w.label == label]
        if not found:
            raise ProtocolError(f"{self.name}: no {kind} labelled {label!r}; labels shown: "
                                f"{[w.label for w in self.shown(kind)]}")
        return found[0]

    def set_number(self, label: str, value: float) -> None:
        w = self.widget("number_input", label)
        state = WidgetState(id=w.id)
        if w.data_type == NumberInput.INT:
            state.int_value = int(value)
        else:
            state.double_value = float(value)
        self.widgets[w.id] = state

    def set_text(self, label: str, text: str, kind: str = "text_area") -> None:
        w = self.widget(kind, label)
        self.widgets[w.id] = WidgetState(id=w.id, string_value=text)

    def query_param(self, name: str) -> str | None:
        return (parse_qs(self.query).get(name) or [None])[0]
