"""gunicorn worker hooks that keep a worker's replacement from stalling requests (called from
``api/gunicorn_conf.py``).

- A worker warms up (``api/warmup.py``) in ``post_worker_init``, after the app is loaded and before it accepts
  a connection: its first requests find the models loaded and the explainers built.
- While it imports the app and warms, it is marked as *warming* (a file named by its pid in a directory
  private to the master). A sibling that reaches ``max_requests`` meanwhile keeps serving (its limit moves on
  by ``HOLD_REQUESTS`` at a time) until no sibling is warming, so ``max_requests`` never retires the last
  worker that accepts connections. A mark older than the worker timeout, or of a dead worker, does not count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

HOLD_REQUESTS = 25
"""How many more requests a worker due for replacement serves before it looks again for warming siblings."""
log = logging.getLogger("candor.warmup")


class WarmingMarks:
    """One empty file per warming worker pid, in a directory named by the gunicorn master's pid."""

    def __init__(self, master_pid: int, stale_seconds: float) -> None:
        self.directory = Path(tempfile.gettempdir()) / f"candor-warming-{master_pid}"
        self.stale_seconds = stale_seconds

    def reset(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def mark(self, pid: int) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.directory / str(pid)).touch()

    def clear(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / str(pid)).unlink()

    def others_warming(self, pid: int) -> bool:
        """Whether a live worker other than ``pid`` is marked, and not for longer than the timeout."""
        now = time.time()
        with contextlib.suppress(FileNotFoundError):
            for mark in self.directory.iterdir():
                other = int(mark.name) if mark.name.isdigit() else None
                if other is None or other == pid or not _alive(other):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - mark.stat().st_mtime <= self.stale_seconds:
                        return True
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def warm_worker(worker: Any, marks: WarmingMarks, choice: str) -> None:
    """Warm the worker's app (``choice`` is ``CANDOR_WARM_MODELS``), log what was warmed, then unmark it."""
    from api.warmup import warm
    from api.wsgi import app

    try:
        report = warm(app.extensions["candor"].service, choice, between=worker.notify)
        log.info("worker warmed", extra={"pid": os.getpid(), **report})
    finally:
        marks.clear(os.getpid())


def hold_retirement(worker: Any, marks: WarmingMarks) -> None:
    """Before a request: a worker whose next request would be its last under ``max_requests`` serves
    ``HOLD_REQUESTS`` more while a sibling is still warming (gunicorn checks ``nr >= max_requests``)."""
    if worker.nr + 1 >= worker.max_requests and marks.others_warming(worker.pid):
        worker.max_requests = worker.nr + 1 + HOLD_REQUESTS
