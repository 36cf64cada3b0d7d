"""NMT_WORKERS: several server processes on one port, each with its own loop, engines and GIL.

One process at saturation keeps about 1.5 of 2 cores busy: the event loop's Python and the
engine threads' Python between two ONNX Runtime runs take turns on one interpreter lock.
Processes do not share that lock (docs/decisions.md, "One process per core").

The parent binds the port and starts the workers (spawned, so none inherits another's
threads); each serves the inherited socket with GracefulServer and loads its own models.
The kernel hands each new connection to whichever worker accepts it first. The parent:

- forwards SIGTERM and SIGINT to every worker, which shut down as one process does (grace
  window, drain), and closes its own copy of the socket, so that the port closes once the
  last worker has closed it;
- replaces a worker that dies while serving (an OOM kill, a crash), and stops everything
  if one fails to start, since its replacement would fail the same way;
- sets PROMETHEUS_MULTIPROC_DIR (a fresh directory, unless set) so that /metrics sums every
  worker (service.metrics), and marks each dead worker's live gauges gone.

Readiness is the group's: a worker answers /health/ready 200 only once every worker has
loaded its models (Peers), so that a probe that reached a loaded worker does not send
traffic that a worker still loading would refuse.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import uvicorn
from prometheus_client import multiprocess

from service.cpus import available_cpus
from service.metrics import MULTIPROC_DIR
from service.settings import Settings

log = logging.getLogger(__name__)

# uvicorn's exit code of a server whose start-up failed (uvicorn.config.STARTUP_FAILURE).
STARTUP_FAILURE = 3
# A worker that died is replaced after this long, so that one dying at once does not spin.
RESTART_DELAY_S = 1.0
# How often a worker checks that its parent is alive.
ORPHAN_POLL_S = 1.0
# Set by the supervisor for its workers: the group's directory and its number of workers.
PEERS_DIR_ENV = "NMT_INTERNAL_WORKERS_DIR"
PEERS_COUNT_ENV = "NMT_INTERNAL_WORKERS"


class Peers:
    """The worker group a worker belongs to: each ready worker holds a file ready-<pid>."""

    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.count = count

    @classmethod
    def of_this_process(cls) -> Peers | None:
        """The group, in a worker that the supervisor started; else None."""
        directory = os.environ.get(PEERS_DIR_ENV)
        if not directory:
            return None
        return cls(Path(directory), int(os.environ[PEERS_COUNT_ENV]))

    def marker(self, pid: int) -> Path:
        return self.directory / f"ready-{pid}"

    def announce(self) -> None:
        """This worker is ready."""
        self.marker(os.getpid()).touch()

    def gone(self, pid: int) -> None:
        """A worker exited (called by the supervisor)."""
        self.marker(pid).unlink(missing_ok=True)

    def waiting_for(self) -> int:
        """How many workers are not ready yet."""
        return max(0, self.count - len(list(self.directory.glob("ready-*"))))

    async def announce_when_loaded(
        self, loaded: threading.Event, ready: Callable[[], bool]
    ) -> None:
        while not loaded.is_set():
            await asyncio.sleep(0.05)
        if ready():
            self.announce()


def worker_count(workers: int) -> int:
    """NMT_WORKERS, 0 meaning one per CPU (the affinity capped by a cgroup CPU quota)."""
    return workers or available_cpus()


class Supervisor:
    """Runs `count` workers on one bound socket until they have all shut down."""

    def __init__(self, config: uvicorn.Config, count: int, threads: int) -> None:
        self.config = config
        self.count = count
        self.threads = threads  # NMT_THREADS of each worker
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, BaseProcess] = {}  # slot -> process
        self.stopping = False
        self.exit_code = 0

    def run(self) -> int:
        """Serve until the workers have exited; returns the exit code for the parent."""
        own_dir = not os.environ.get(MULTIPROC_DIR)
        metrics_dir = Path(os.environ.get(MULTIPROC_DIR) or tempfile.mkdtemp(prefix="nmt-metrics-"))
        for stale in metrics_dir.glob("*.db"):  # a previous run's samples
            stale.unlink()
        os.environ[MULTIPROC_DIR] = str(metrics_dir)
        os.environ["NMT_THREADS"] = str(self.threads)
        peers_dir = Path(tempfile.mkdtemp(prefix="nmt-workers-"))
        self.peers = Peers(peers_dir, self.count)
        os.environ[PEERS_DIR_ENV] = str(peers_dir)
        os.environ[PEERS_COUNT_ENV] = str(self.count)
        sock: socket.socket | None = self.config.bind_socket()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        log.info(
            "serving on %s:%d with %d worker processes of %d engine thread(s)",
            self.config.host,
            self.config.port,
            self.count,
            self.threads,
        )
        try:
            for slot in range(self.count):
                if not self.stopping:
                    self._start(slot, sock)
            while self.workers:
                if self.stopping and sock is not None:
                    # The workers hold their own copies: the port closes once the last of
                    # them has closed it, not when the parent exits (connections would
                    # queue unanswered meanwhile).
                    sock.close()
                    sock = None
                self._reap(sock)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if sock is not None:
                sock.close()
            if own_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
            shutil.rmtree(peers_dir, ignore_errors=True)
        return self.exit_code

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # At once (readiness must fail from the first moment); the socket waits for the loop.
        self._forward(sig)

    def _start(self, slot: int, sock: socket.socket | None) -> None:
        process = self.context.Process(
            target=serve_worker,
            args=(sock, self.config.host, self.config.port),
            name=f"nmt-worker-{slot}",
            daemon=False,
        )
        process.start()
        self.workers[slot] = process
        log.info("worker %d started (pid %s)", slot, process.pid)

    def _forward(self, sig: int) -> None:
        """Pass a signal to every worker; from the first on, none is replaced."""
        self.stopping = True
        for process in self.workers.values():
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, sig)

    def _reap(self, sock: socket.socket | None) -> None:
        """Wait a little for a worker to exit; replace it unless stopping or it never started."""
        sentinels = {process.sentinel: slot for slot, process in self.workers.items()}
        for sentinel in wait(list(sentinels), timeout=0.5):
            slot = sentinels[sentinel]  # type: ignore[index]
            process = self.workers.pop(slot)
            process.join()
            code = process.exitcode
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid)
                self.peers.gone(process.pid)
            if self.stopping:
                log.info("worker %d exited (%s)", slot, code)
                continue
            if code == STARTUP_FAILURE:
                log.error("worker %d failed to start (%s): stopping", slot, code)
                self.exit_code = STARTUP_FAILURE
                self._forward(signal.SIGTERM)
                continue
            log.error("worker %d died (exit %s): starting another", slot, code)
            time.sleep(RESTART_DELAY_S)
            self._start(slot, sock)


def serve_worker(sock: socket.socket, host: str, port: int) -> None:
    """One worker (a spawned process): read the settings again and serve the socket."""
    from service.__main__ import configured, serve

    threading.Thread(target=_orphaned, args=(os.getppid(),), daemon=True).start()
    settings = configured()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
    )
    serve(settings, host, port, sockets=[sock])


def _orphaned(parent: int) -> None:
    """A worker whose parent is gone (killed: it forwards no signal) shuts down as on SIGTERM,
    rather than serve on unsupervised."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    log.warning("the supervisor (pid %d) is gone: shutting down", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def supervise(settings: Settings, host: str, port: int) -> int:
    """Serve with NMT_WORKERS processes; returns the exit code."""
    from service.__main__ import uvicorn_config

    count = worker_count(settings.workers)
    # NMT_THREADS is the service's, divided among its workers (at least one each)
    threads = max(1, (settings.threads or available_cpus()) // count)
    return Supervisor(uvicorn_config(settings, host, port), count, threads).run()
