"""The S3 server process dies mid-ingestion: a clear error naming the store, no hang, and exact results once
it is back and the workers run again.

The server is moto's own ``moto_server`` program on 127.0.0.1, killed with SIGKILL as an outage would end
it. It keeps objects in memory, so the server that comes back on the same port is empty: the bucket and
every object are gone, and the workers re-run from the start into it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from _faults import require
from _support import as_row_set, worker_points

from pocaduck import (
    Ingestor,
    PocaduckError,
    Query,
    StorageConfig,
    StorageUnavailableError,
    StoreNotFoundError,
    consolidate,
)

boto3 = require("boto3", "to make the bucket on the S3 server")
require("moto", "for the S3 server on loopback")

MOTO_SERVER = os.path.join(os.path.dirname(sys.executable), "moto_server")
BUCKET = "pocaduck-outage"
LABELS = [0, 2**63, 2**64 - 1]
SAFETY_SECONDS = 120  # a safety net: with the settings below a failure comes in seconds


class MotoProcess:
    """``moto_server`` on a fixed loopback port, in a process group of its own so it can be killed for good."""

    def __init__(self, folder):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        with open(self.folder / f"moto-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(
                [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + SAFETY_SECONDS
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            assert self.process.poll() is None, (self.folder / f"moto-{self.starts}.log").read_text()
            assert time.monotonic() < deadline, "moto_server never listened"
            time.sleep(0.05)
        self.client().create_bucket(Bucket=BUCKET)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test-key",
            aws_secret_access_key="test-secret",
        )

    def config(self, prefix: str) -> StorageConfig:
        return StorageConfig(
            f"s3://{BUCKET}/{prefix}",
            s3_region="us-east-1",
            s3_access_key_id="test-key",
            s3_secret_access_key="test-secret",
            s3_endpoint_url=self.endpoint_url,
            # With botocore's defaults a refused connection is retried for about 10 s before the error comes;
            # one attempt and a short connect timeout make the outage show at once.
            extra_config={"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}},
        )


@pytest.fixture
def moto(tmp_path) -> Iterator[MotoProcess]:
    server = MotoProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))


def ingest(config: StorageConfig, worker: int, blocks: range, on_block=lambda block: None) -> dict[int, list]:
    """Write LABELS in ``blocks`` with small files, calling ``on_block`` before each block; return what was written."""
    written: dict[int, list] = {}
    with Ingestor(config, worker_id=worker, max_points_per_file=60) as ingestor:
        for block in blocks:
            on_block(block)
            for label in LABELS:
                points = worker_points(worker, label, block)
                ingestor.write(label, f"{worker}/{block}", points)
                written.setdefault(label, []).extend(as_row_set(points))
    return written


def failure_of(step) -> BaseException:
    """Run ``step`` in a thread; return what it raised, failing the test if it hangs instead."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            step()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(SAFETY_SECONDS)
    assert outcome, "the step hung instead of failing"
    assert outcome[0] is not None, "the step succeeded with the store gone"
    return outcome[0]


def assert_says_the_store_is_unreachable(error: BaseException, config: StorageConfig) -> None:
    assert isinstance(error, PocaduckError), f"a raw {type(error).__name__} reached the caller: {error}"
    # A write that failed in the background arrives as the cause of the Ingestor's WorkerWriteError.
    unavailable = error if isinstance(error, StorageUnavailableError) else error.__cause__
    assert isinstance(unavailable, StorageUnavailableError), repr(error)
    assert "could not be reached" in str(error) and config.base_path in str(error)


def test_an_s3_server_killed_mid_ingestion_fails_clearly_and_reruns_into_the_new_one_are_exact(moto):
    config = moto.config("store")
    ingest(config, 0, range(4))

    def kill_at_block_5(block: int) -> None:
        if block == 5:  # blocks 0-4 were written: some of worker 1's files are published, others in flight
            listing = moto.client().list_objects_v2(Bucket=BUCKET, Prefix="store/workers/1/sessions/")
            assert any(item["Key"].endswith(".parquet") for item in listing.get("Contents", []))
            moto.kill()

    error = failure_of(lambda: ingest(config, 1, range(12), on_block=kill_at_block_5))
    assert moto.process.returncode == -signal.SIGKILL
    assert_says_the_store_is_unreachable(error, config)
    assert_says_the_store_is_unreachable(failure_of(lambda: consolidate(config)), config)
    assert_says_the_store_is_unreachable(failure_of(lambda: Query(config)), config)

    moto.start()  # same port, but moto kept everything in memory: an empty server with an empty bucket
    with pytest.raises(StoreNotFoundError):
        consolidate(config)
    written = [ingest(config, 0, range(4)), ingest(config, 1, range(12))]
    consolidate(config)
    with Query(config) as query:
        assert query.get_labels().tolist() == LABELS
        for label in LABELS:
            assert as_row_set(query.get_points(label)) == sorted(row for part in written for row in part[label])
