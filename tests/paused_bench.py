"""``python tests/paused_bench.py ARGS``: ``bench ARGS`` that stops for good in one window of
the store's writes, so that a test can SIGKILL it exactly there.

``$PAUSE_AT`` names the window; on reaching it the process creates the file ``$PAUSED_FLAG``
and sleeps. The windows:

- ``claimed``: the run is claimed, nothing of it written yet;
- ``begun``: status.json says running, the index does not know the run yet;
- ``metrics``: metrics.json is written, status.json still says running;
- ``status``: status.json says complete, the index still says running;
- ``checkpoint``: a checkpoint's temporary file is written in full, not yet renamed into place.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from harness.cli import main
from harness.store.store import Store
from harness.utils import atomic

WINDOW = os.environ["PAUSE_AT"]
FLAG = Path(os.environ["PAUSED_FLAG"])


def pause(window: str) -> None:
    if window == WINDOW:
        FLAG.write_text(window)
        time.sleep(3600)


claim, set_status = Store.claim, Store._set_status


def paused_claim(self, run_id):
    held = claim(self, run_id)
    pause("claimed")
    return held


def paused_set_status(self, run_id, status, **extra):
    if status == "complete":
        pause("metrics")
    set_status(self, run_id, status, **extra)
    pause({"running": "begun", "complete": "status"}.get(status, ""))


atomic_path = atomic.atomic_path


@contextmanager
def paused_atomic_path(path, durable=True):
    with atomic_path(path, durable) as tmp:
        yield tmp
        if Path(path).parent.name == "checkpoints":
            pause("checkpoint")


Store.claim, Store._set_status = paused_claim, paused_set_status
atomic.atomic_path = paused_atomic_path
main(sys.argv[1:])
