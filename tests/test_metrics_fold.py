"""Folding dead workers' Prometheus files (``api/service/metrics_fold.py``): the scrape's totals stay exactly
what they were, the dead workers' files are gone, later workers add on top, and a scrape waits for a fold.

Workers are real processes writing through prometheus-client's multiprocess mode, as gunicorn's do."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from api.service.metrics_fold import FoldAwareCollector, fold_dead_worker, folding_lock

WORKER = """
from prometheus_client import Counter, Histogram
requests = Counter("demo_requests_total", "requests", ["route"])
latency = Histogram("demo_seconds", "latency", ["route"], buckets=(0.1, 1.0))
for i in range({n}):
    requests.labels("/a" if i % 3 else "/b").inc()
    latency.labels("/a").observe(i / {n})
import os
print(os.getpid())
"""


def run_worker(directory: Path, n: int) -> int:
    """A process that counts ``n`` requests into ``directory`` and exits; its pid."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    command = [sys.executable, "-c", WORKER.format(n=n)]
    process = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return int(process.stdout)


def scrape(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    FoldAwareCollector(registry, str(directory))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
    }


def test_folding_keeps_every_total_and_deletes_the_dead_workers_files(tmp_path: Path) -> None:
    pids = [run_worker(tmp_path, n) for n in (30, 7, 12)]
    before = scrape(tmp_path)
    assert before[("demo_requests_total", (("route", "/b"),))] == 10 + 3 + 4
    assert before[("demo_seconds_count", (("route", "/a"),))] == 49

    fold_dead_worker(tmp_path, pids[0])
    assert scrape(tmp_path) == before
    fold_dead_worker(tmp_path, pids[1])
    fold_dead_worker(tmp_path, pids[2])
    assert scrape(tmp_path) == before
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]

    run_worker(tmp_path, 3)  # a worker started after the folds adds on top of the archive
    after = scrape(tmp_path)
    assert after[("demo_requests_total", (("route", "/b"),))] == 17 + 1
    assert after[("demo_seconds_count", (("route", "/a"),))] == 52
    fold_dead_worker(tmp_path, 999_999_999)  # a pid without files: nothing to do
    assert scrape(tmp_path) == after


def test_a_scrape_waits_for_a_fold_in_progress(tmp_path: Path) -> None:
    run_worker(tmp_path, 5)
    scraped: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = []
    with folding_lock(tmp_path, exclusive=True):
        reader = threading.Thread(target=lambda: scraped.append(scrape(tmp_path)))
        reader.start()
        reader.join(timeout=0.5)
        assert reader.is_alive() and not scraped  # blocked on the fold's lock
    reader.join(timeout=10)
    assert scraped and scraped[0][("demo_requests_total", (("route", "/a"),))] == 3
