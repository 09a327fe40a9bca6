"""A Dask cluster started as separate programs, as a cluster runs: ``dask scheduler`` and ``dask worker`` on loopback.

Each program runs in a process group of its own and is ended when the context
leaves, whatever the test did, so no process outlives the test. A worker can
be given an environment and a command wrapping it (a private view of the
filesystem, say), to play a machine of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import distributed
import pytest

TESTS = Path(__file__).parent
DASK = Path(sys.executable).with_name("dask")
SAFETY_SECONDS = 120  # a safety net only: every wait ends on an event long before


@dataclass
class Cluster:
    client: distributed.Client
    processes: list[subprocess.Popen]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SAFETY_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def dask_cluster(
    folder: Path,
    workers: int = 2,
    worker_environment: Callable[[int], dict[str, str]] = lambda number: {},
    worker_wrapper: Callable[[int], list[str]] = lambda number: [],
) -> Iterator[Cluster]:
    """A scheduler and ``workers`` single-threaded workers, their logs and scratch folders in ``folder``.

    Worker ``n`` runs with ``worker_environment(n)`` added to this process's
    environment, as ``worker_wrapper(n) + [dask, "worker", ...]``, in ``folder/worker-n``.
    """
    folder.mkdir(exist_ok=True)
    scheduler_file = str(folder / "scheduler.json")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    processes: list[subprocess.Popen] = []
    client = None

    def start(name: str, command: list[str], extra_environment: dict[str, str]) -> None:
        with open(folder / f"{name}.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=folder,
                    env={**environment, **extra_environment},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a group of its own: the nanny's worker process ends with it
                )
            )

    try:
        # --no-dashboard alone still serves Dask's HTTP endpoints (health, metrics) on 0.0.0.0: bind them too.
        loopback = ("--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0")
        start("scheduler", [str(DASK), "scheduler", *loopback, "--port", "0", "--scheduler-file", scheduler_file], {})
        wait_until(
            lambda: os.path.exists(scheduler_file) or processes[0].poll() is not None, "the scheduler's address file"
        )
        assert processes[0].poll() is None, (folder / "scheduler.log").read_text()
        for number in range(workers):
            scratch = folder / f"worker-{number}"
            scratch.mkdir(exist_ok=True)
            start(
                f"worker-{number}",
                [
                    *worker_wrapper(number),
                    *(str(DASK), "worker", "--scheduler-file", scheduler_file, "--nworkers", "1", "--nthreads", "1"),
                    *loopback,
                    *("--local-directory", str(scratch)),
                ],
                worker_environment(number),
            )
        client = distributed.Client(scheduler_file=scheduler_file, timeout=SAFETY_SECONDS)
        client.wait_for_workers(workers, timeout=SAFETY_SECONDS)
        yield Cluster(client, processes)
    finally:
        if client is not None:
            client.close()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
