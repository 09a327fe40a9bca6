"""Object stores on loopback for the tests and the request benchmark: S3, GCS and Azure emulators.

S3 is moto in server mode, in a thread of the calling process on a free port.
Objects live in moto's in-memory backend, not in the server, so ``stop()``
then ``start()`` is a server that disappears and comes back with its data.
Requests are signed and checked against one IAM key made at start, so a wrong
key is refused as a real S3 would. Every answered request is logged with the
bytes of its response, for counting.

GCS is gcp-storage-emulator (a thread, no authentication); Azure is Azurite's
blob service (a Node.js process, found on PATH or in ``node_modules/.bin``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
from moto import settings as moto_settings
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from pocaduck import StorageConfig


@dataclass
class Request:
    """One request the server answered; ``bytes_sent`` counts its whole response (status line, headers, body)."""

    method: str
    path: str
    byte_range: str | None
    status: int
    bytes_sent: int = 0
    copy_source: str | None = None  # a server-side copy (CopyObject): a PUT that uploads no body


class _CountingWriter:
    """The handler's output stream, adding every byte to the request being answered before sending it.

    ``send_response`` logs the request before it writes anything, so every byte has its request; counting
    before the write means a client that has the response sees the count complete.
    """

    def __init__(self, stream, handler: _LoggingHandler):
        self._stream, self._handler = stream, handler

    def write(self, data: bytes) -> int:
        if self._handler.current is not None:
            self._handler.current.bytes_sent += len(data)
        return self._stream.write(data)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _LoggingHandler(MotoRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.current: Request | None = None
        self.wfile = _CountingWriter(self.wfile, self)
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = int(getattr(code, "value", code)) if str(getattr(code, "value", code)).isdigit() else 0
        self.current = Request(
            self.command,
            self.path,
            self.headers.get("Range"),
            status,
            copy_source=self.headers.get("x-amz-copy-source"),
        )
        self.server.requests.append(self.current)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Server:
    """moto's S3 on 127.0.0.1, with one bucket and one valid access key."""

    region = "us-east-1"

    def __init__(self, bucket: str = "pocaduck-test"):
        self.bucket = bucket
        self.port = _free_port()
        self.requests: list[Request] = []
        self._server = None
        self._thread: threading.Thread | None = None
        self._app = DomainDispatcherApplication(create_backend_app)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=_LoggingHandler)
        self._server.connections = set()
        self._server.requests = self.requests
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Go away: stop listening and cut the connections clients keep alive."""
        self._server.shutdown()
        self._server.server_close()
        for connection in list(self._server.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join()

    def enable_auth(self) -> None:
        """Make an IAM user allowed everything, then refuse any request not signed with its key."""
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="pocaduck")
        iam.put_user_policy(
            UserName="pocaduck",
            PolicyName="everything",
            PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}',
        )
        key = iam.create_access_key(UserName="pocaduck")["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        self._previous_auth = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0

    def disable_auth(self) -> None:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = self._previous_auth

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def config(self, prefix: str, **overrides) -> StorageConfig:
        """A store under ``prefix`` of the bucket, with the valid key and fast failure when the server is gone."""
        options = {
            "s3_region": self.region,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
            "s3_endpoint_url": self.endpoint_url,
            # Fail at once rather than retry for seconds: the tests stop the server on purpose.
            "extra_config": {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}},
            **overrides,
        }
        return StorageConfig(f"s3://{self.bucket}/{prefix}", **options)

    def object_keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/")
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@contextlib.contextmanager
def s3_without_auth(bucket: str) -> Iterator[S3Server]:
    """moto's S3 with ``bucket``, without its IAM check: moto's users and buckets are shared by the whole
    process, so a test module doing this keeps to a bucket of its own and adds no user that test_object_storage
    makes too."""
    server = S3Server(bucket=bucket)
    server.access_key_id, server.secret_access_key = "test-key", "test-secret"
    server.start()
    server.client().create_bucket(Bucket=server.bucket)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def gcs_emulator(bucket: str) -> Iterator[None]:
    """gcp-storage-emulator on a free port, with ``bucket``; gcsfs finds it through STORAGE_EMULATOR_HOST."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["STORAGE_EMULATOR_HOST"]
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        server.stop()


# Azurite's documented development account: a public, well-known key, not a secret.
_AZURITE_ACCOUNT = "devstoreaccount1"
_AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_command() -> str | None:
    """The ``azurite-blob`` executable, on PATH or installed by ``npm install azurite`` in the repository."""
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return shutil.which("azurite-blob") or shutil.which(
        "azurite-blob", path=os.path.join(repository, "node_modules", ".bin")
    )


@contextlib.contextmanager
def azurite(container: str) -> Iterator[str]:
    """Azurite's blob service on a free port, with ``container``; yields its connection string."""
    from azure.storage.blob import BlobServiceClient

    port = _free_port()
    process = subprocess.Popen(
        [
            azurite_command(),
            *("--blobHost", "127.0.0.1", "--blobPort", str(port)),
            *("--inMemoryPersistence", "--silent", "--skipApiVersionCheck", "--loose"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={_AZURITE_ACCOUNT};AccountKey={_AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{_AZURITE_ACCOUNT};"
        )
        BlobServiceClient.from_connection_string(connection_string).create_container(container)
        yield connection_string
    finally:
        process.terminate()
        process.wait()


def _wait_for_port(port: int, process: subprocess.Popen) -> None:
    while process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the emulator exited with code {process.returncode} before listening on port {port}")
