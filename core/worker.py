"""Worker process entry point: ``python -m core.worker RUN_ID``.

Runs one claimed run to a final status, whatever happens, then starts the next queued job.
"""

from __future__ import annotations

import os
import sys
import traceback

from core import jobs
from core import store as st
from core.training import Heartbeat, Progress, run_training


def main(run_id: str) -> int:
    store = st.RunStore()
    run = store.get(run_id, reap=False)
    if run.status != st.RUNNING:
        return 0  # cancelled while queued or claimed by someone else: nothing to do
    if run.pid != os.getpid():
        store.set_worker(run_id, os.getpid())  # started by hand, not by dispatch
    progress = Progress()
    beat = Heartbeat(store, run_id, progress)
    beat.start()
    status, error = st.FAILED, None
    try:
        status = run_training(store, run_id, progress)
    except MemoryError:
        error = "out of memory: " + traceback.format_exc()
    except BaseException as exc:  # noqa: BLE001 - record every failure, then exit
        error = traceback.format_exc()
        if isinstance(exc, KeyboardInterrupt):
            status = st.CANCELLED
    finally:
        beat.stop()
        store.finish(run_id, status, error=error,
                     progress={**progress.snapshot(), "stage": status})
        (store.run_dir(run_id) / st.PARTIAL_MODEL_FILE).unlink(missing_ok=True)
        jobs.dispatch(store)
    return 0 if status in (st.COMPLETED, st.CANCELLED, st.DIVERGED) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
