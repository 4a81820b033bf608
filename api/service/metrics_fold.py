"""A dead gunicorn worker's Prometheus files folded into one archive file per metric type.

gunicorn replaces every worker after ``max_requests``; in multiprocess mode each worker leaves a counter and a
histogram file (1 MiB, sparse) that must stay counted, so without folding a long-running server's metrics
directory, and the work of every scrape, grows with every worker it ever replaced. The master folds a dead
worker's values into ``counter_archive.db`` / ``histogram_archive.db`` (summed per series, as a scrape sums
them) and deletes its files. Folds and scrapes hold one lock file (a fold exclusively), so a scrape never
sees a worker's values twice or not at all.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

LOCK_FILE = ".fold.lock"
FOLDED_TYPES = ("counter", "histogram")
"""The types whose values outlive their process (gauges here are computed at scrape time)."""


@contextmanager
def folding_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    """The metrics directory's lock: exclusive for a fold, shared for a scrape."""
    with open(directory / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fold_dead_worker(directory: Path, pid: int) -> None:
    """Add worker ``pid``'s counter and histogram values to the archive files and delete its files."""
    with folding_lock(directory, exclusive=True):
        for kind in FOLDED_TYPES:
            dead = directory / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            archive = MmapedDict(str(directory / f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(dead)):
                    total, _ = archive.read_value(key)
                    archive.write_value(key, total + value, timestamp)
            finally:
                archive.close()
            dead.unlink()


class FoldAwareCollector(MultiProcessCollector):
    """prometheus-client's multiprocess collector, reading the files under the shared lock."""

    def __init__(self, registry: object, path: str) -> None:
        super().__init__(registry, path)
        self.directory = Path(path)

    def collect(self) -> Iterable[Metric]:
        with folding_lock(self.directory, exclusive=False):
            return list(super().collect())
