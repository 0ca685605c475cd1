"""The dashboard in a real browser: a live ``streamlit run`` server driven by headless
Debian Chromium through Playwright.

One walk through the lab: open the Train page first (a deep link right after the server
starts), fill the form with a tiny model, launch it and watch the live view update until it
completes; then the Data, Compare and Predict pages, typing a review with HTML in it.
Screenshots of the four pages go to ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import stop_workers
from core.paths import PROJECT_ROOT
from core.store import COMPLETED, RunStore

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# Counts the messages the page sends to the server (each timed fragment rerun is one).
COUNT_SENDS = """
window.__sends = 0;
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.__sends++; return send.call(this, data); };
"""
SERVER_START_S = 60
MAIN_CHARTS = "[data-testid='stMain'] [data-testid='stVegaLiteChart']"
TRAIN_TIMEOUT_S = 150  # TensorFlow import in the worker + a few seconds of training
# A model small enough to train in seconds; batches of 2 (12 x 800 of them, ~0.5 ms each in
# fast mode) keep it training long enough to watch the live view update, and exercise the
# curves' downsampling (9,600 batches: 300 bins of 32).
FORM = {"Vocabulary (top words)": "100", "Max review length (maxlen)": "40",
        "Embedding size": "8", "Recurrent units": "4", "Batch size": "2", "Epochs": "12",
        "Validation split": "0.20", "Test reviews (0 = all)": "400"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"Debian's chromium is not installed at {CHROMIUM} "
                              "(apt-get install chromium)"),
]
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="the playwright package is not installed")


# Typed on the Predict page: none may render as an element, a link or run a script.
HOSTILE_TEXTS = [
    "<script>alert(1)</script> a wonderful film",
    '<img src=x onerror="alert(2)"> superb',
    "[click me](javascript:alert(3)) great film",
    '<a href="javascript:alert(4)">link</a> <a href="https://evil.example">x</a> brilliant',
    '<svg onload="alert(5)"></svg><iframe src="javascript:alert(6)"></iframe> awful',
    "**bold** <br /> `code` $x^2$ :smile: boring",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(port: int) -> list[str]:
    """``streamlit run app.py`` as a user runs it, headless on a loopback port."""
    return [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
            "--server.port", str(port), "--server.address", "127.0.0.1",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]


@pytest.fixture
def server(tmp_path):
    """``streamlit run app.py`` on a free port with its own LAB_HOME and the demo data;
    yields (base URL, lab home, server pid). The server, and any worker it started, is
    stopped after."""
    port = _free_port()
    home = tmp_path / "lab"
    env = {**os.environ, "LAB_HOME": str(home), "LAB_CACHE": str(tmp_path / "cache"),
           "IMDB_DATA": "demo", "LAB_OFFLINE": "1", "LAB_MAX_JOBS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        server_command(port),
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("streamlit did not start:\n"
                            + (tmp_path / "server.log").read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield base, home, proc.pid
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
        log.close()
        if (home / "runs.db").exists():
            stop_workers(RunStore(home))


@pytest.fixture
def browser_page():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(COUNT_SENDS)
            page.set_default_timeout(60_000)
            dialogs: list[str] = []

            def on_dialog(dialog):
                dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", on_dialog)
            yield page, dialogs
        finally:
            browser.close()


def wait_idle(page, settle_s: float = 0.3) -> None:
    """Until the script run the last interaction started has finished."""
    time.sleep(settle_s)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"] "
        "[data-testid=\"stStatusWidgetRunningIcon\"]') && "
        "!document.querySelector('[data-testid=\"stStatusWidget\"]')?.innerText"
        ".includes('Running')", timeout=90_000)


def goto(page, url: str, ready_text: str) -> None:
    page.goto(url)
    page.get_by_text(ready_text, exact=False).first.wait_for()
    wait_idle(page)


def screenshot(page, name: str) -> Path:
    """The whole page: Streamlit scrolls inside its main container, so grow the viewport
    to the content's height first."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate(
        "() => Math.max(1000, ...[...document.querySelectorAll('[data-testid=\"stMain\"], "
        "[data-testid=\"stMain\"] *')].map(e => e.scrollHeight))")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 60, 9000)})
    time.sleep(1.0)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    return path


def sends_during(page, seconds: float) -> int:
    """Messages the page sent to the server in the next ``seconds``."""
    before = page.evaluate("window.__sends")
    time.sleep(seconds)
    return page.evaluate("window.__sends") - before


def main_text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def wait_count(page, selector: str, at_least: int, timeout_ms: int = 60_000) -> None:
    """Until ``selector`` matches ``at_least`` elements: charts are drawn by lazily loaded
    components after the script run ends, so an immediate count races them."""
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[selector, at_least],
        timeout=timeout_ms)


def test_train_watch_compare_and_predict_in_a_browser(server, browser_page):
    page, dialogs = browser_page
    try:
        walk(page, dialogs, *server)
    except BaseException:
        screenshot(page, "browser-failure.png")  # what the page showed when it failed
        raise


def tensorflow_libraries(pid: int) -> set[str]:
    """TensorFlow's shared libraries mapped into a process (none may be in the web server:
    Streamlit would run Keras's clear_session after every rerun of every session)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines()
            if re.search(r"tensorflow|libtf|_pywrap_tf|keras", line)}


def walk(page, dialogs: list[str], base: str, home: Path, pid: int) -> None:
    t0 = time.monotonic()

    # A deep link right after the server started still gets the router and its sidebar.
    goto(page, base + "/train", "Before launching")
    sidebar = page.locator("[data-testid='stSidebar']")
    assert "Data source" in sidebar.inner_text() and "DEMO set" in sidebar.inner_text()
    nav = sidebar.locator("[data-testid='stSidebarNav']").inner_text()
    # page titles (icon names are lowercase words); a version-1 'pages/' app would list
    # its files instead: app, compare, data, ...
    assert [w for w in nav.split() if w[0].isupper()] == ["Data", "Train", "Compare", "Predict",
                                                           "Leaderboard", "Instructor"]
    assert "app" not in nav.split()
    page.get_by_text("Parameters").first.wait_for()

    # Fill the form with a tiny model.
    for label, value in FORM.items():
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        wait_idle(page)
    page.get_by_label("Run name", exact=True).fill("browser tiny")
    page.get_by_label("Run name", exact=True).press("Enter")
    wait_idle(page)
    assert "Fix these before launching" not in main_text(page)
    page.get_by_text("Estimated time").wait_for()

    page.get_by_role("button", name="Launch training").click()
    page.get_by_text("Run: browser tiny").wait_for()
    watch_start, sends_start = time.monotonic(), page.evaluate("window.__sends")
    progress_seen: list[str] = []
    batches_seen: list[int] = []
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while "Completed: test accuracy" not in main_text(page):
        assert time.monotonic() < deadline, f"not completed: {progress_seen[-3:]}"
        bar = page.locator("[data-testid='stMain'] [data-testid='stProgress']").first
        if bar.count():
            progress_seen.append(bar.inner_text().strip())
        found = re.search(r"([\d,]+) batches read", main_text(page))
        if found:
            batches_seen.append(int(found.group(1).replace(",", "")))
        time.sleep(0.4)
    # While the job was active the live view re-polled once a second, besides the sidebar's
    # job list every 2 s: about 1.5 messages a second.
    watched = time.monotonic() - watch_start
    active_rate = (page.evaluate("window.__sends") - sends_start) / watched
    assert re.search(r"\?run=\w", page.url), page.url  # re-attachable address

    # The live view changed while the job ran: several progress lines, growing curves.
    epochs_seen = [p for p in progress_seen if p.startswith("Epoch ")]
    assert len(set(progress_seen)) >= 3, progress_seen
    assert epochs_seen, progress_seen
    assert len(set(batches_seen)) >= 2 and batches_seen == sorted(batches_seen), batches_seen
    # The last fragment run may still be drawing when "Completed" appears: wait, don't race.
    page.get_by_text("each line is drawn from at most 300 points (bins of 32 batches)",
                     exact=False).first.wait_for()
    wait_idle(page)
    store = RunStore(home)
    run = store.list_runs()[0]
    assert run.status == COMPLETED and run.name == "browser tiny", run.error
    page.get_by_text("Epoch accuracy").first.wait_for()
    # Once the run is final nothing polls: the live view and the sidebar's job list stop.
    time.sleep(2.5)
    final_rate = sends_during(page, 6.0) / 6.0
    assert final_rate <= 0.2, final_rate
    assert watched < 3 or active_rate >= 0.8, (active_rate, watched)
    wait_count(page, MAIN_CHARTS, 5)
    assert f"{100 * run.results['test_accuracy']:.2f} %" in main_text(page)
    screenshot(page, "train.png")

    goto(page, base + "/", "Review lengths")
    assert "IMDB_DATA=/path/to/aclImdb_v1.tar.gz" in main_text(page)
    page.get_by_text("Review #2").wait_for()  # the last sample review
    wait_idle(page)
    screenshot(page, "data.png")

    goto(page, base + "/compare", "Compare runs")
    page.get_by_text("Manage and download").wait_for()
    wait_count(page, "[data-testid='stDataFrame']", 2)  # runs + hyperparameters
    assert f"browser tiny · {run.id[-6:]}" in main_text(page)  # the newest run, shown
    wait_count(page, MAIN_CHARTS, 5)
    screenshot(page, "compare.png")

    goto(page, base + "/predict", "Your review")
    review = ("<img src=x onerror=alert(1)> A wonderful film: the cast was superb, "
              "but the ending was dull.")
    box = page.get_by_label("Your review", exact=True)
    box.fill(review)
    page.get_by_role("button", name="Score").click()
    metric = page.locator("[data-testid='stMetric']").filter(has_text="P(positive)").first
    metric.wait_for()
    value = metric.locator("[data-testid='stMetricValue']").inner_text()
    assert re.fullmatch(r"\d{1,3}\.\d%", value.strip()), value
    attribution = page.locator(".attribution").first
    attribution.wait_for()
    wait_idle(page)
    # The typed HTML is shown as text and never becomes an element; nothing ran.
    assert "<img src=x onerror=alert(1)>" in attribution.inner_text()
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("[data-testid='stMain'] img[onerror]").count() == 0
    time.sleep(1.0)
    assert dialogs == []
    screenshot(page, "predict.png")

    # Hostile text (issue 5, case 10): nothing the user typed becomes a live tag or link.
    for hostile in HOSTILE_TEXTS:
        box.fill(hostile)
        page.get_by_role("button", name="Score").click()
        wait_idle(page)
        # This text's attribution is shown (as text, so its last word ends it): the checks
        # below look at it, not at the previous review's.
        page.wait_for_function(
            "(w) => [...document.querySelectorAll('.attribution')]"
            ".some(e => e.innerText.trim().endsWith(w))", arg=hostile.split()[-1])
        main = page.locator("[data-testid='stMain']")
        assert main.locator("script").count() == 0
        assert main.locator("img[src='x'], img[onerror], iframe, svg[onload]").count() == 0
        assert page.locator("a[href^='javascript'], a[href*='evil.example']").count() == 0
    time.sleep(1.0)
    assert dialogs == []

    # The tokenization inspector, then: every page visited, a review scored, and still no
    # TensorFlow in the web server (the inference process and the workers have it).
    page.get_by_text("Tokenization inspector").first.click()
    page.get_by_text("padding zeros at the front").first.wait_for()
    assert tensorflow_libraries(pid) == set()
    print(f"browser walk: {time.monotonic() - t0:.0f} s")
