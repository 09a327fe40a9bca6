"""A scan on a Dask cluster started as separate programs, as a cluster runs: one worker process is killed mid-scan.

The scheduler and two workers are the ``dask scheduler`` and ``dask worker``
executables on 127.0.0.1 (no dashboard), and the store is on S3 (moto on
loopback). The scan must survive the loss of a worker process that had
already written part of its blocks, and store exactly what the volume holds.
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

import numpy as np
import pytest
from _faults import StallingVolume, executing_keys, require
from test_scan_helpers import assert_store_holds, surface_mask

from pocaduck import make_demo_volume, scan_volume

distributed = require("distributed", "to run a scan on a Dask cluster")
require("moto", "for S3 on loopback")
psutil = require("psutil", "to check which addresses the cluster uses")

from _object_servers import S3Server  # noqa: E402  (imports moto: only after the check that it is there)

TESTS = Path(__file__).parent
DASK = Path(sys.executable).with_name("dask")
SAFETY_SECONDS = 120  # a safety net only: every wait below ends on an event long before
BLOCK = 8
STALL_ON = 3  # tile_bytes=1 makes one read per block: the victim stalls in its third block, two blocks written


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


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    """``dask scheduler`` and two ``dask worker`` programs on loopback, each in a process group of its own.

    Every group is ended at teardown, whatever the test did, so no process outlives the test.
    """
    folder = tmp_path / "dask"
    folder.mkdir()
    scheduler_file = str(folder / "scheduler.json")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    processes: list[subprocess.Popen] = []
    client = None

    def start(name: str, *arguments: str) -> None:
        with open(folder / f"{name}.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [str(DASK), *arguments],
                    cwd=folder,
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a group of its own: the nanny's worker process ends with it
                )
            )

    try:
        # --no-dashboard alone still serves Dask's HTTP endpoints (health, metrics) on 0.0.0.0: bind them too.
        loopback = ("--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0")
        start("scheduler", "scheduler", *loopback, "--port", "0", "--scheduler-file", scheduler_file)
        wait_until(
            lambda: os.path.exists(scheduler_file) or processes[0].poll() is not None, "the scheduler's address file"
        )
        assert processes[0].poll() is None, (folder / "scheduler.log").read_text()
        for number in range(2):
            start(
                f"worker-{number}",
                *("worker", "--scheduler-file", scheduler_file, "--nworkers", "1", "--nthreads", "1", *loopback),
                *("--local-directory", str(folder / f"worker-{number}")),
            )
        client = distributed.Client(scheduler_file=scheduler_file, timeout=SAFETY_SECONDS)
        client.wait_for_workers(2, timeout=SAFETY_SECONDS)
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


@pytest.fixture(scope="module")
def s3():
    """moto's S3 in this process, without its IAM check: moto's users and buckets are shared by the whole
    process, so the test keeps to a bucket of its own and adds no user that test_object_storage makes too."""
    server = S3Server(bucket="pocaduck-dask-cluster")
    server.access_key_id, server.secret_access_key = "test-key", "test-secret"
    server.start()
    server.client().create_bucket(Bucket=server.bucket)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))


def connections_of(processes: list[subprocess.Popen]) -> list:
    """Every inet socket of the cluster's processes and their children: listening and connected."""
    found = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.pid)
            for member in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    found.extend(member.net_connections(kind="inet"))
    return found


def victim_of(cluster: Cluster, pid: int) -> str:
    """The scan worker id whose task the Dask worker process ``pid`` is running."""
    address = next(address for address, found in cluster.client.run(os.getpid).items() if found == pid)
    (key,) = cluster.client.run(executing_keys, workers=[address])[address]
    return "scan-" + key.rsplit("-", 1)[-1]  # task keys end with the scan worker id, "...-scan-<i>"


def test_a_dask_worker_process_killed_mid_scan_is_replaced_and_the_store_on_s3_is_exact(cluster, s3, tmp_path):
    volume = make_demo_volume((32, 32, 40), seed=12)
    np.save(tmp_path / "labels.npy", volume)
    (tmp_path / "gate").mkdir()
    stalling = StallingVolume(str(tmp_path / "labels.npy"), str(tmp_path / "gate"), stall_on=STALL_ON)
    store = s3.config("killed-dask-worker")
    handle = scan_volume(
        stalling,
        store,
        block_shape=BLOCK,
        workers=3,
        client=cluster.client,
        retries=1,
        background=True,
        tile_bytes=1,
        report_interval=0,
        max_points_per_file=100,
    )
    try:
        claim = Path(stalling.claim)
        wait_until(claim.exists, "a Dask worker process to stall mid-scan")
        pid = int(claim.read_text())
        victim = victim_of(cluster, pid)
        wait_until(
            lambda: handle.events.latest()[victim].blocks_done == STALL_ON - 1,
            f"{victim}'s progress events to show it is in block {STALL_ON}",
        )
        sessions = f"killed-dask-worker/workers/{victim}/sessions"
        wait_until(lambda: any(key.endswith(".parquet") for key in s3.object_keys(sessions)), "its first files")

        used = connections_of(cluster.processes)
        assert any(c.status == psutil.CONN_LISTEN for c in used)
        assert {c.laddr.ip for c in used} | {c.raddr.ip for c in used if c.raddr} == {"127.0.0.1"}

        os.kill(pid, signal.SIGKILL)
        events_before_kill = len(handle.events)
    finally:
        Path(stalling.release).touch()  # if the test failed before the kill, let the stalled task go
    result = handle.wait(timeout=SAFETY_SECONDS)

    assert result.workers == 3
    after_kill = list(handle.events)[events_before_kill:]
    assert any(e.worker_id == victim and e.state == "running" and e.blocks_done == 0 for e in after_kill), (
        "the killed worker's blocks were not scanned again from the start"
    )
    assert_store_holds(store, volume, surface_mask(volume) & (volume != 0), (BLOCK,) * 3)
    kept = {key.split("/")[4] for key in s3.object_keys(sessions.rsplit("/", 1)[0]) if "/sessions/" in key}
    assert len(kept) == 1, "the killed attempt's files were not discarded by the re-run"
