"""A password written into a URL (``scheme://user:password@host``) never shows in a repr, an error or the command's output."""

from __future__ import annotations

import socket
import subprocess
import sys

import fsspec
import pytest

from pocaduck import Query, StorageConfig
from pocaduck.config import redact_url
from pocaduck.errors import PocaduckError, UnsupportedStorageError
from pocaduck.storage import FsspecStorage

SECRET = "wJalrXUtnFEMI-secret"


def closed_port() -> int:
    """A loopback port nobody listens on, so a request there fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_redact_url_hides_only_the_password():
    assert redact_url(f"s3://AKIA:{SECRET}@bucket/prefix") == "s3://AKIA:***@bucket/prefix"
    assert redact_url(f"see http://user:{SECRET}@127.0.0.1:9000/x and ftp://u:p@h") == (
        "see http://user:***@127.0.0.1:9000/x and ftp://u:***@h"
    )
    assert redact_url("abfs://container@account.dfs.core.windows.net/store") == (
        "abfs://container@account.dfs.core.windows.net/store"
    )
    assert redact_url("/data/a:b@c/store") == "/data/a:b@c/store"


def test_a_config_repr_hides_passwords_in_its_urls():
    config = StorageConfig(f"s3://AKIA:{SECRET}@bucket/prefix", s3_endpoint_url=f"http://user:{SECRET}@127.0.0.1:9000")
    shown = repr(config)
    assert SECRET not in shown
    assert "s3://AKIA:***@bucket/prefix" in shown and "http://user:***@127.0.0.1:9000" in shown


def test_a_storage_names_its_objects_without_the_password():
    storage = FsspecStorage(fsspec.filesystem("memory"), f"memory://user:{SECRET}@doc-store")
    assert storage.describe("manifest.json") == "memory://user:***@doc-store/manifest.json"
    assert SECRET not in repr(storage)


def test_a_bucket_url_with_a_password_is_refused_before_any_request():
    config = StorageConfig(
        f"s3://AKIA:{SECRET}@bucket/prefix",
        s3_region="us-east-1",
        s3_access_key_id="a",
        s3_secret_access_key="b",
        s3_endpoint_url=f"http://127.0.0.1:{closed_port()}",
    )
    with pytest.raises(UnsupportedStorageError, match="credentials in the URL are not supported") as refused:
        Query(config)
    assert SECRET not in str(refused.value) and "s3://AKIA:***@bucket/prefix" in str(refused.value)


def test_an_unreachable_endpoint_with_a_password_fails_without_showing_it():
    config = StorageConfig(
        "s3://bucket/prefix",
        s3_region="us-east-1",
        s3_access_key_id="a",
        s3_secret_access_key="b",
        s3_endpoint_url=f"http://user:{SECRET}@127.0.0.1:{closed_port()}",
        extra_config={"config_kwargs": {"retries": {"max_attempts": 1}}},
    )
    with pytest.raises(PocaduckError) as failed:
        Query(config)
    assert SECRET not in str(failed.value)


@pytest.mark.parametrize(
    "store",
    [f"s3://AKIA:{SECRET}@bucket/prefix", f"https://user:{SECRET}@example.org/store", f"file://me:{SECRET}@/no/store"],
    ids=["s3", "https", "file"],
)
@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
def test_the_command_never_prints_the_password(store, debug):
    result = subprocess.run(
        [sys.executable, "-m", "pocaduck.cli", *debug, "info", store], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert SECRET not in result.stderr + result.stdout and ":***@" in result.stderr
