"""RELIABILITY.md's table, regenerated from the reliability tests' own measurements.

Runs the reliability battery (tests/test_reliability.py and the store's concurrent-writer
test) with pytest on today's engine; each test records what it measured through the
``figures`` fixture (tests/conftest.py) in test-artifacts/reliability.json, which this
script empties first. It then rewrites the table between ``<!-- reliability:report start
-->`` and ``<!-- reliability:report end -->`` in RELIABILITY.md from that file: every figure
in the table is a test's, with the run's date, command, outcome and machine. A case whose
test did not pass (or was skipped) says so instead of showing old figures.

    .venv/bin/python bench/reliability_report.py [-k EXPR]   # -k: pytest's, for a subset
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import common

ROOT = common.ROOT
REPORT = ROOT / "RELIABILITY.md"
FIGURES = ROOT / "test-artifacts" / "reliability.json"
START, END = "<!-- reliability:report start -->", "<!-- reliability:report end -->"
TESTS = ["tests/test_reliability.py", "tests/test_store.py::test_concurrent_writers_keep_every_row"]


def _fig(f: dict, key: str, render) -> str:
    got = f.get(key)
    return render(got) if got else "not measured in this run (test failed, skipped or deselected)"


def case_01(d):
    return (f"interrupted {d['detected_after_s']} s after the kill (limit: 2 heartbeats = "
            f"{2 * d['heartbeat_s']:g} s); {d['rows_kept']} batch rows kept, steps contiguous "
            f"({d['rows_before_kill']} seen written before the kill); integrity "
            f"`{d['integrity']}`; no "
            f"`model.partial.keras`; the queued job then `{d['next_job']}`")


def case_02(d):
    return (f"server killed at batch {d['killed_at_batch']:,} of "
            f"{d['batch_rows_expected']:,}; restarted in {d['restart_s']} s; Chromium re-attached "
            f"{d['reattached_after_s']} s after the kill and showed the run live (batches read "
            f"{d['batches_shown_live'][0]:,} -> {d['batches_shown_live'][1]:,}); run "
            f"`{d['status']}` with {d['batch_rows']:,} of {d['batch_rows_expected']:,} batch "
            f"metric rows (steps 1..{d['batch_rows_expected']:,}); {d['runs_listed']} runs "
            f"listed, the queued one kept its place and then `{d['queued_then']}`")


def case_03(d):
    return (f"{d['reattached']}/{d['reloads']} reloads re-attached to the running job "
            f"({d['seconds']} s for the ten); {d['errors']} page errors or exceptions; the run "
            f"went on (batches {d['batches_before']:,} -> {d['batches_after']:,}); "
            f"{d['runs_in_store']} run in the store (none duplicated)")


def case_04(d):
    return (f"{d['batches_after_request']} batch after the request (the one under way); status "
            f"final {d['status_after_s']} s after the request; worker exited: "
            f"{'yes' if d['worker_exited'] else 'no'}")


def case_05(d):
    pos = d["positions_shown"]
    return (f"positions {pos[0]}…{pos[-1]} shown for the waiting {len(pos)}; "
            f"{d['completed']}/{d['jobs']} `completed`; started in submission order: "
            f"{'yes' if d['in_order'] else 'no'}, none overlapping; {d['batch_rows_each']} batch "
            "metric rows each (batches × epochs × loss, accuracy)")


def case_06(d):
    return (f"{d['rows_found']:,}/{d['processes'] * d['rows_each']:,} rows "
            f"({d['processes']} writers × {d['rows_each']}), each writer's in order; "
            f"{d['locked_errors']} \"database is locked\"; integrity `{d['integrity']}`")


def case_07(d):
    return (f"{d['rejected']}/{d['cases']} rejected with a message naming the field; "
            f"{d['jobs_started']} jobs started")


def case_08(d):
    return (f"refused: \"{d['slow_refused']}…\", \"{d['memory_refused']}…\"; 0 runs stored; "
            f"forced OOM → `{d['oom_status']}` (error starting \"out of memory\"); the next job "
            f"`{d['next_job']}`")


def case_09(d):
    at = d["diverged_at"]
    return (f"`diverged` at epoch {at['epoch']}, batch {at['batch']}; "
            f"{d['batches_after_first_nan']} batches trained after the first non-finite loss")


def case_10(d):
    scored = sorted(k for k, v in d.items() if v == "scored")
    told = sorted(k for k, v in d.items() if v != "scored")
    return (f"{len(d)} texts, no exception; {len(told)} answered with a message "
            f"({', '.join(told)}); {len(scored)} scored ({', '.join(scored)})")


def case_11(f):
    parts = []
    for fmt in ("keras", "h5"):
        d = f.get(f"11_untrusted_{fmt}")
        if d:
            parts.append(f"`.{fmt}` in place of a run's model and as a CLI path: refused "
                         f"{'yes' if d['refused'] else 'NO'}, marker written "
                         f"{'YES' if d['marker_written'] else 'no'}")
    d = f.get("11_uploads")
    if d:
        parts.append(f"{d['model_uploads_refused']} model-file uploads refused, marker written "
                     f"{'YES' if d['marker_written'] else 'no'}; upload limits "
                     f"{d['size_limit_mb']:g} MB and {d['row_limit']:,} reviews")
    return "; ".join(parts) or "not measured in this run"


def case_12(d):
    return (f"largest difference between the epoch losses ({d['epochs']} epochs): "
            f"{d['max_abs_epoch_loss_diff']}")


# (#, case, test, what is checked, figure key, renderer); the checks are prose, the figures
# come from the run.
CASES = [
    ("1", "Killed worker", "`test_reliability.py::test_01_killed_worker`",
     "`kill -9` of a worker mid-epoch (the job slowed by `LAB_FAULT=slow-batch:0.05`): "
     "`PRAGMA integrity_check`, status `interrupted`, metric rows kept, no partial model, "
     "next queued job starts", "01_killed_worker", case_01),
    ("2", "Killed server", "`test_02_03_killed_server_and_ten_reloads_in_chromium`",
     "the real `streamlit run app.py` server `kill -9`ed mid-run (a second run queued), "
     "started again on the same LAB_HOME; headless Chromium re-attaches; the run completes",
     "02_killed_server", case_02),
    ("3", "Reload", "`test_02_03_killed_server_and_ten_reloads_in_chromium`",
     "ten Chromium reloads of the Train page during a run (half reloads of `?run=`, half "
     "fresh visits without it)", "03_reloads", case_03),
    ("4", "Cancel", "`test_04_cancel_within_one_batch`",
     "Stop request → `cancelled`; batch rows timestamped after the request; worker process "
     "gone", "04_cancel", case_04),
    ("5", "Queue", "`test_05_queue_of_ten_runs_in_order`",
     "ten jobs submitted at once, one slot", "05_queue", case_05),
    ("6", "Concurrent store writers", "`test_store.py::test_concurrent_writers_keep_every_row`",
     "processes writing metric rows and heartbeats at once (WAL, `BEGIN IMMEDIATE`, 30 s "
     "busy timeout)", "06_concurrent_writers", case_06),
    ("7", "Invalid hyperparameters", "`test_07_invalid_configs_start_nothing`",
     "invalid configurations (zero, negative, huge, wrong type, NaN/inf, unknown "
     "architecture/optimizer/key, batch larger than the data, maxlen 0, dropout ≥ 1, kernel "
     "longer than maxlen, …) through `jobs.submit`", "07_invalid_configs", case_07),
    ("8", "Resource guard", "`test_08_resource_guard_refuses_and_oom_is_recorded`",
     "over-budget time and memory refused before start with the estimate; a forced OOM "
     "(worker capped at 3 GiB, `LAB_WORKER_MEMORY_GB`)", "08_resource_guard", case_08),
    ("9", "Divergence", "`test_09_divergence_within_one_batch`",
     "an injected NaN (`LAB_FAULT=nan-label`)", "09_divergence", case_09),
    ("10", "Hostile text", "`test_10_hostile_text_is_scored_or_explained`",
     "empty, whitespace, punctuation, emoji, Chinese, Arabic, `<br />`, `<script>`, "
     "`<img onerror>`, markdown `javascript:` link, 100,000 characters, NUL byte",
     "10_hostile_text", case_10),
    ("11", "Untrusted model files", "`test_11_untrusted_model_files_never_run[keras/h5]`, "
     "`test_11_model_files_offered_as_uploads_are_refused`",
     "a `.keras` and an `.h5` whose Lambda layer writes a marker file, put in place of a "
     "run's model, passed as a CLI path, and uploaded", None, None),
    ("12", "Determinism", "`test_12_same_config_and_seed_give_the_same_losses`",
     "the same config and seed trained twice on CPU", "12_determinism", case_12),
]


def table(figures: dict) -> str:
    rows = []
    for num, case, test, checked, key, render in CASES:
        measured = case_11(figures) if num == "11" else _fig(figures, key, render)
        rows.append(f"| {num} | {case} | {test} | {checked} | {measured} |")
    return ("| # | case | test | what is checked | figure measured |\n|---|---|---|---|---|\n"
            + "\n".join(rows))


def run_tests(extra: list[str]) -> tuple[str, float, int]:
    FIGURES.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    sys.stdout.write(proc.stdout[-3000:])
    sys.stderr.write(proc.stderr[-2000:])
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    return re.sub(r" in [\d.]+s.*", "", summary), wall, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default=None, help="pytest -k expression (a subset of the cases)")
    args = ap.parse_args()
    outcome, wall, rc = run_tests(["-k", args.k] if args.k else [])
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    block = (f"{START}\nRun of {common.now()} on {common.machine_line()}; "
             f"{common.load_line()}. pytest: {outcome} in {wall:.0f} s.  \n"
             f"Command: `{common.command_line()}`\n\n{table(figures)}\n{END}")
    text = REPORT.read_text()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"RELIABILITY.md has no {START} ... {END} block")
    REPORT.write_text(pattern.sub(lambda _: block, text))
    print(block)
    sys.exit(rc)


if __name__ == "__main__":
    main()
