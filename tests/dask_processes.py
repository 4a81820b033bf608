"""An external Dask cluster as separate machines: real ``dask scheduler`` and ``dask worker`` processes (the
venv's ``dask`` CLI) that share neither files nor configuration with the process that starts them.

Each process runs in its own new, empty working directory (``HOME`` too), with an environment of ``PATH``,
``HOME``, ``LANG`` and ``PYTHONPATH`` (the repository root, so it runs the code under test; Candor is
installed editable) and nothing of Candor's configuration (no ``CANDOR_*``, ``PG*`` or database URL), in a
new mount namespace where tmpfs hides the given directories (the test's data dir, the SQLite file's dir)
and PostgreSQL's socket directory.

Network: where the machine allows (root, veth and bridge links), ``netns`` mode: each worker in its own
network namespace on its own address (``10.231.K.10+i/24``) on a bridge whose host side (``10.231.K.1``)
is the scheduler's address; a worker's namespace has no default route, so it reaches only the scheduler,
the other workers and what the host serves on every address at ``10.231.K.1`` (no firewall: PostgreSQL
listens on loopback, out of its reach). Elsewhere ``loopback`` mode: everything on 127.0.0.1.
``CANDOR_TEST_DASK_NETWORK`` forces a mode. Teardown deletes the namespaces and the bridge; what a harness
killed before its teardown left is swept at the next start, and its Dask processes died with it.

Workers run without a nanny, so killing one (SIGKILL to its process group) takes it away for good. A
worker whose scheduler is gone exits; ``restart_scheduler`` starts the scheduler again on the same address
and ``replace_lost_workers`` starts each exited worker again in its namespace on its address.

Importable from tests (pytest puts ``tests`` on the path) and from bench scripts (``sys.path`` gets
``tests``). Probes that run on the workers (``worker_view``) live here; ``client_for`` makes cloudpickle
ship this module's functions by value, since workers do not import ``tests``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IP = shutil.which("ip") or "/usr/sbin/ip"
DASK = str(Path(sys.executable).parent / "dask")
POSTGRES_SOCKETS = ("/var/run/postgresql", "/run/postgresql")
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0
PR_SET_PDEATHSIG = 1


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=30)


def netns_available() -> bool:
    """Whether this process may make network namespaces, veth pairs and bridges (tried once, undone)."""
    if os.geteuid() != 0 or not Path(IP).exists() or not shutil.which("unshare"):
        return False
    tag = uuid.uuid4().hex[:6]
    try:
        _ip("link", "add", f"czp{tag}", "type", "bridge")
        _ip("link", "del", f"czp{tag}")
        _ip("netns", "add", f"candor-probe-{tag}")
        _ip("netns", "del", f"candor-probe-{tag}")
        subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@functools.cache
def network_mode() -> str:
    """``netns`` or ``loopback``: ``CANDOR_TEST_DASK_NETWORK`` if set, else what the machine allows."""
    wanted = os.environ.get("CANDOR_TEST_DASK_NETWORK", "auto")
    if wanted == "auto":
        return "netns" if netns_available() else "loopback"
    if wanted not in ("netns", "loopback"):
        raise ValueError(f"CANDOR_TEST_DASK_NETWORK={wanted!r}: netns, loopback or auto")
    return wanted


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _free_subnet() -> int:
    """A K whose 10.231.K.0/24 no link of this machine uses."""
    used = subprocess.run([IP, "-o", "addr"], capture_output=True, text=True, check=True).stdout
    free = [k for k in range(1, 255) if f"10.231.{k}." not in used]
    return random.choice(free)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> None:
    """Delete the namespaces and bridges left by a harness whose process died before cleaning up (each
    names its owner's pid: the namespace in its name, the bridge in its alias)."""
    names = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=False).stdout
    for match in re.finditer(r"^(candor-(\d+)-[0-9a-f]+-w\d+)", names, re.MULTILINE):
        if not _alive(int(match.group(2))):
            subprocess.run([IP, "netns", "del", match.group(1)], capture_output=True, check=False)
    links = subprocess.run([IP, "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    for match in re.finditer(r"^\d+: (czb[0-9a-f]+):.*alias candor-pid-(\d+)", links, re.MULTILINE):
        if not _alive(int(match.group(2))):
            subprocess.run([IP, "link", "del", match.group(1)], capture_output=True, check=False)


class Network:
    """The bridge and the workers' namespaces (netns mode), or plain loopback."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.tag = uuid.uuid4().hex[:5]
        self.subnet = _free_subnet() if mode == "netns" else 0
        self.bridge = f"czb{self.tag}"
        self.namespaces: list[str] = []
        self.host = f"10.231.{self.subnet}.1" if mode == "netns" else LOOPBACK
        if mode == "netns":
            sweep_stale()
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("link", "set", self.bridge, "alias", f"candor-pid-{os.getpid()}")
            _ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")

    def worker_address(self, index: int) -> str:
        return f"10.231.{self.subnet}.{10 + index}" if self.mode == "netns" else LOOPBACK

    def host_link(self, index: int) -> str:
        return f"czh{self.tag}{index}"

    def namespace(self, index: int) -> str | None:
        """The worker's namespace, made on first use (None in loopback mode)."""
        if self.mode != "netns":
            return None
        name = f"candor-{os.getpid()}-{self.tag}-w{index}"
        if name in self.namespaces:
            return name
        inner = f"czw{self.tag}{index}"
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("link", "add", self.host_link(index), "type", "veth", "peer", "name", inner, "netns", name)
        _ip("link", "set", self.host_link(index), "master", self.bridge, "up")
        _ip("-n", name, "addr", "add", f"{self.worker_address(index)}/24", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def bytes_to_worker(self, index: int) -> int | None:
        """Bytes the host side has sent down the worker's link so far (netns mode), else None."""
        if self.mode != "netns":
            return None
        return int(Path(f"/sys/class/net/{self.host_link(index)}/statistics/tx_bytes").read_text())

    def close(self) -> None:
        for name in self.namespaces:  # deleting a namespace deletes its veth end, and so the pair
            subprocess.run([IP, "netns", "del", name], capture_output=True, check=False)
        self.namespaces.clear()
        if self.mode == "netns":
            subprocess.run([IP, "link", "del", self.bridge], capture_output=True, check=False)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started it dies (kept across the execs of
    ``ip netns exec``, ``unshare`` and ``sh``), so a crashed test leaves no Dask process behind."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def clean_environment(home: Path) -> dict[str, str]:
    """What a fresh machine's shell gives a process: no Candor, PostgreSQL or database settings."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }


def _hiding(paths: Sequence[str], argv: list[str]) -> list[str]:
    """``argv`` in a new mount namespace where an empty tmpfs covers each of ``paths``."""
    mounts = "".join(f"mount -t tmpfs -o size=1m candor-hidden {shlex.quote(p)} && " for p in paths)
    script = f'{mounts}exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "candor-node", *argv]


class DaskProcesses:
    """A scheduler and ``n_workers`` workers as separate machines; a context manager (cleans up on exit)."""

    def __init__(
        self,
        hidden: Sequence[Path],
        n_workers: int = 2,
        network: str | None = None,
        scheduler_config: dict[str, str] | None = None,
    ) -> None:
        """``scheduler_config``: Dask configuration of the scheduler, as ``DASK_*`` environment variables."""
        self.scheduler_config = dict(scheduler_config or {})
        self.mode = network or network_mode()
        self.hidden = [str(Path(p).resolve()) for p in hidden] + [
            p for p in POSTGRES_SOCKETS if Path(p).is_dir()
        ]
        self.n_workers = n_workers
        self.base = Path(tempfile.mkdtemp(prefix="candor-machines-"))
        self.network: Network | None = None
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.port = 0

    @property
    def address(self) -> str:
        assert self.network is not None
        return f"tcp://{self.network.host}:{self.port}"

    # -- life cycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> DaskProcesses:
        try:
            self.network = Network(self.mode)
            self.port = _free_port(self.network.host)
            self.start_scheduler()
            for index in range(self.n_workers):
                self.start_worker(index)
            self.wait_for_workers(self.n_workers)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for index in list(self.workers):
            self.kill_worker(index)
        self.kill_scheduler()
        if self.network is not None:
            self.network.close()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- processes ----------------------------------------------------------------------------------------
    def _spawn(
        self, name: str, argv: list[str], namespace: str | None, config: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        home = self.base / name
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        command = _hiding(self.hidden, argv)
        if namespace is not None:
            command = [IP, "netns", "exec", namespace, *command]
        log = (self.base / f"{name}.log").open("ab")
        with log:
            return subprocess.Popen(
                command,
                cwd=home,
                env={**clean_environment(home), **(config or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: a kill takes all of it
                preexec_fn=_die_with_parent,
            )

    def start_scheduler(self) -> None:
        assert self.network is not None
        argv = [DASK, "scheduler", "--host", self.network.host, "--port", str(self.port), "--no-dashboard"]
        self.scheduler = self._spawn("scheduler", argv, None, self.scheduler_config)
        self._wait_listening(self.network.host, self.port, "scheduler")

    def start_worker(self, index: int) -> None:
        assert self.network is not None
        address = self.network.worker_address(index)
        argv = [DASK, "worker", self.address, "--name", f"machine-{index}", "--nthreads", "1"]
        argv += ["--no-nanny", "--no-dashboard", "--host", address, "--local-directory", "."]
        self.workers[index] = self._spawn(f"worker-{index}", argv, self.network.namespace(index))

    def _wait_listening(self, host: str, port: int, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            proc = self.scheduler
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the {name} exited: {self.log(name)}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the {name} did not listen in time: {self.log(name)}")

    def wait_for_workers(self, n: int, timeout: float = START_TIMEOUT) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- faults -------------------------------------------------------------------------------------------
    @staticmethod
    def _kill(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index`` (its whole process group): gone for good, no nanny brings it back."""
        self._kill(self.workers.pop(index, None))

    def kill_scheduler(self) -> None:
        self._kill(self.scheduler)
        self.scheduler = None

    def restart_scheduler(self) -> None:
        """The scheduler again, on the same address."""
        self.kill_scheduler()
        self.start_scheduler()

    def replace_lost_workers(self) -> list[int]:
        """Start again each worker that exited or was killed, in its namespace on its address."""
        lost = [
            i for i in range(self.n_workers) if i not in self.workers or self.workers[i].poll() is not None
        ]
        for index in lost:
            self.workers.pop(index, None)
            self.start_worker(index)
        return lost

    def alive_workers(self) -> list[int]:
        return [i for i, proc in self.workers.items() if proc.poll() is None]

    def bytes_to_workers(self) -> dict[int, int | None]:
        """Per worker index, the bytes sent down its link so far (None in loopback mode)."""
        assert self.network is not None
        return {i: self.network.bytes_to_worker(i) for i in range(self.n_workers)}

    @contextlib.contextmanager
    def client(self, **kwargs: Any) -> Iterator[Any]:
        with client_for(self.address, **kwargs) as client:
            yield client


@contextlib.contextmanager
def client_for(address: str, **kwargs: Any) -> Iterator[Any]:
    """A ``distributed.Client`` of ``address`` that ships this module's functions to workers by value."""
    import cloudpickle
    from distributed import Client

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with Client(address, timeout=START_TIMEOUT, **kwargs) as client:
        yield client


def worker_view(paths: Sequence[str], ports: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """Run on a worker (``client.run``): what this machine sees of the given paths, its configuration and
    the given TCP ports."""
    reachable = {}
    for host, port in ports:
        try:
            with socket.create_connection((host, port), timeout=2):
                reachable[f"{host}:{port}"] = True
        except OSError:
            reachable[f"{host}:{port}"] = False
    return {
        "cwd": os.getcwd(),
        "cwd_entries": sorted(os.listdir(os.getcwd())),
        "home": os.environ.get("HOME"),
        "configuration": sorted(
            k for k in os.environ if k.startswith(("CANDOR_", "PG", "DATABASE")) or "DATABASE" in k
        ),
        "paths": {p: sorted(os.listdir(p)) if os.path.isdir(p) else None for p in paths},
        "reachable": reachable,
        "net_namespace": os.readlink("/proc/self/ns/net"),
        "mount_namespace": os.readlink("/proc/self/ns/mnt"),
        "pid": os.getpid(),
    }
