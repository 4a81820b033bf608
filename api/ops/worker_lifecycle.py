"""gunicorn worker hooks that keep a worker's replacement from stalling requests (called from
``api/ops/gunicorn_conf.py``).

- A worker warms up (``api/ops/warmup.py``) in ``post_worker_init``, after the app is loaded and before it
  accepts a connection: its first requests find the models loaded and the explainers built.
- The master imports the app's modules (``preload_modules``) before it forks any worker, so a worker, first or
  replacement, starts with them imported (copy-on-write) and spends its boot on the models alone; it creates
  the app itself (no database connection, thread or model crosses the fork).
- A warmed worker marks itself *serving* (a file named by its pid, in a directory private to the master).
  When ``max_requests`` is about to retire it, it takes its mark away and retires only if another live worker
  is still marked serving; otherwise it marks itself again and serves ``HOLD_REQUESTS`` more before it looks
  again. Two workers can therefore never retire together, and none retires while its replacement still
  boots and warms: replacing a worker never leaves no worker accepting connections. A lone worker
  (``workers = 1``) retires as due.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOLD_REQUESTS = 25
"""How many more requests a worker due for replacement serves before it looks again for a serving sibling."""
WARM_NICENESS = 10
log = logging.getLogger("candor.warmup")
_deciding = threading.Lock()


class ServingMarks:
    """One empty file per warmed, serving worker pid, in a directory named by the gunicorn master's pid."""

    def __init__(self, master_pid: int) -> None:
        self.directory = Path(tempfile.gettempdir()) / f"candor-serving-{master_pid}"

    def reset(self) -> None:
        self.remove()
        self.mark(None)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def mark(self, pid: int | None) -> None:
        """Mark ``pid`` serving (None: only create the directory). Where no file can be written (a read-only
        temporary directory), workers are never marked: each then serves past ``max_requests``."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if pid is not None:
                (self.directory / str(pid)).touch()
        except OSError as error:
            log.warning("cannot mark a worker serving: %s", error)

    def clear(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / str(pid)).unlink()

    def others_serving(self, pid: int) -> bool:
        """Whether a live worker other than ``pid`` is marked serving."""
        with contextlib.suppress(FileNotFoundError):
            for mark in self.directory.iterdir():
                if mark.name.isdigit() and int(mark.name) != pid and _alive(int(mark.name)):
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


def preload_modules() -> float:
    """Import the app and the tabular explainer adapters in the gunicorn master (half a worker's boot: shap,
    numba, scikit-learn, pandas) and compile the TreeSHAP table loop; text adapters (torch) stay out.
    Returns the seconds it took."""
    import importlib
    import time

    from api.methods.registry import specs

    started = time.perf_counter()
    importlib.import_module("api.http.app")
    for module in ("explainers.ood", "explainers.path_table", "explainers.narratives"):
        importlib.import_module(module)
    for spec in specs():
        if spec.flavour == "tabular":
            importlib.import_module(spec.adapter.partition(":")[0])
    from explainers.path_table import compile_now

    compile_now()  # TreeSHAP's compiled loop: ~1-2 s a worker would spend on its first tree model
    return time.perf_counter() - started


def prepare_worker(worker: Any, marks: ServingMarks, choice: str) -> None:
    """Warm the worker's app (``choice`` is ``CANDOR_WARM_MODELS``) and log what was warmed; move the ~0.5M
    start-up objects out of the collector's sight (full collections stay short); then mark it serving. The
    mark comes last: gunicorn's accept loop starts right after, and a sibling may retire once it is there."""
    import gc

    from api.ops.warmup import warm
    from api.ops.wsgi import app
    from model_store.audit_log import Integrator

    service = app.extensions["candor"].service
    report = _warm_in_the_background(lambda: warm(service, choice), worker.notify)
    log.info("worker warmed", extra={"pid": os.getpid(), **report})
    if service.settings.audit_checkpoint_seconds > 0:
        Integrator(service.store.audit_log, service.settings.audit_checkpoint_seconds).start()
    gc.collect()
    gc.freeze()
    marks.mark(os.getpid())


def _warm_in_the_background(
    work: Callable[[], dict[str, Any]], heartbeat: Callable[[], None]
) -> dict[str, Any]:
    """``work()`` in a thread of lower CPU priority (Linux: nice +``WARM_NICENESS`` for that thread only), so
    that the worker serving alone meanwhile keeps its CPU; the calling thread beats gunicorn's heartbeat."""
    result: dict[str, Any] = {}

    def run() -> None:
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARM_NICENESS)
        result.update(work())

    thread = threading.Thread(target=run, name="candor-warm-up")
    thread.start()
    while thread.is_alive():
        thread.join(1.0)
        heartbeat()
    return result


def hold_retirement(worker: Any, marks: ServingMarks) -> None:
    """Before a request: a worker whose next request would be its last under ``max_requests`` (gunicorn then
    checks ``nr >= max_requests``) retires only if another worker is serving; else it serves
    ``HOLD_REQUESTS`` more. Its own mark goes first, so of two workers deciding at once at most one
    retires."""
    if worker.nr + 1 < worker.max_requests or worker.cfg.workers <= 1:
        return
    with _deciding:
        if worker.nr + 1 < worker.max_requests:
            return  # another thread of this worker decided to hold meanwhile
        marks.clear(worker.pid)
        if marks.others_serving(worker.pid):
            return  # retire: gunicorn stops accepting after this request
        marks.mark(worker.pid)
        worker.max_requests = worker.nr + 1 + HOLD_REQUESTS
