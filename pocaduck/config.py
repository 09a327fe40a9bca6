"""Where a store lives and how to reach it.

``StorageConfig`` keeps the original pocaduck's keyword names so scripts written
for it run unchanged. Secrets are excluded from ``repr``, and passwords written
into URLs are redacted wherever a URL is shown, so they never reach logs or
tracebacks.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlparse

_SCHEME_TO_TYPE = {
    "": "local",
    "file": "local",
    "s3": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "azure": "azure",
    "abfs": "azure",
}

# scheme://user:password@ — the password runs to the last @ before the path, as urlparse reads it.
_PASSWORD_IN_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s]*@")


def redact_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it shown as ``***``.

    Works on a URL or on a whole message that quotes URLs; the user name stays, to tell accounts apart.

    >>> redact_url("s3://AKIA:secret@bucket/prefix")
    's3://AKIA:***@bucket/prefix'
    >>> redact_url("abfs://container@account.dfs.core.windows.net/store")  # no password: unchanged
    'abfs://container@account.dfs.core.windows.net/store'
    """
    return _PASSWORD_IN_URL.sub(r"\1:***@", text)


@dataclass(repr=False)
class StorageConfig:
    """Location of a store: a local folder or a bucket URL, plus credentials.

    >>> StorageConfig("/data/my_store").storage_type
    'local'
    >>> StorageConfig("s3://bucket/prefix", s3_secret_access_key="hidden")
    StorageConfig(base_path='s3://bucket/prefix', s3_region=None, s3_endpoint_url=None)
    """

    base_path: str
    s3_region: str | None = None
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)
    gcs_project_id: str | None = field(default=None, repr=False)
    gcs_credentials: str | dict[str, Any] | None = field(default=None, repr=False)
    azure_storage_connection_string: str | None = field(default=None, repr=False)
    extra_config: dict[str, Any] = field(default_factory=dict, repr=False)
    s3_endpoint_url: str | None = None

    def __repr__(self) -> str:
        # The fields a dataclass repr would show, with a password inside base_path or s3_endpoint_url redacted.
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        shown = ", ".join(f"{name}={(redact_url(v) if isinstance(v, str) else v)!r}" for name, v in values.items())
        return f"{type(self).__name__}({shown})"

    def __post_init__(self) -> None:
        self.base_path = os.fspath(self.base_path)
        scheme = urlparse(self.base_path).scheme.lower()
        if len(scheme) == 1:  # a Windows drive letter, not a URL scheme
            scheme = ""
        self.storage_type = _SCHEME_TO_TYPE.get(scheme, scheme)

    @property
    def is_local(self) -> bool:
        return self.storage_type == "local"

    @property
    def local_root(self) -> str:
        """The store's folder on this machine (local stores only)."""
        path = self.base_path
        if path.startswith("file://"):
            path = urlparse(path).path
        return os.path.abspath(os.path.expanduser(path))

    def absolute(self) -> StorageConfig:
        """This store named so that a process started elsewhere (a forkserver, a Dask node) finds it too.

        >>> StorageConfig("~/store").absolute().base_path == os.path.expanduser("~/store")
        True
        """
        return replace(self, base_path=self.local_root) if self.is_local else self

    @classmethod
    def add_storage_args(cls, parser: argparse.ArgumentParser, *, base_path: bool = True) -> None:
        """Add the original library's storage options to an argument parser (``base_path=False``: credentials only).

        >>> parser = argparse.ArgumentParser()
        >>> StorageConfig.add_storage_args(parser)
        >>> StorageConfig.from_args(parser.parse_args(["--base-path", "/tmp/s"])).base_path
        '/tmp/s'
        """
        if base_path:
            parser.add_argument(
                "--base-path", required=True, help="store location: a folder, s3://, gs:// or az:// URL"
            )
        group = parser.add_argument_group("storage credentials (default: the client's own chain, e.g. AWS_* variables)")
        group.add_argument("--s3-region")
        group.add_argument("--s3-access-key-id")
        group.add_argument("--s3-secret-access-key", help="visible to other users in the process list: prefer AWS_*")
        group.add_argument("--s3-endpoint-url", help="an S3-compatible server, e.g. http://minio.internal:9000")
        group.add_argument("--gcs-project-id")
        group.add_argument("--gcs-credentials", help="a service account key file")
        group.add_argument("--azure-connection-string")

    @classmethod
    def from_args(cls, args: argparse.Namespace, base_path: str | None = None) -> StorageConfig:
        """Build a config from options added by ``add_storage_args``; ``base_path`` overrides ``--base-path``.

        >>> parser = argparse.ArgumentParser()
        >>> StorageConfig.add_storage_args(parser, base_path=False)
        >>> StorageConfig.from_args(parser.parse_args(["--s3-region", "eu-west-1"]), "s3://b/store")
        StorageConfig(base_path='s3://b/store', s3_region='eu-west-1', s3_endpoint_url=None)
        """
        return cls(
            base_path=base_path if base_path is not None else args.base_path,
            s3_region=getattr(args, "s3_region", None),
            s3_access_key_id=getattr(args, "s3_access_key_id", None),
            s3_secret_access_key=getattr(args, "s3_secret_access_key", None),
            s3_endpoint_url=getattr(args, "s3_endpoint_url", None),
            gcs_project_id=getattr(args, "gcs_project_id", None),
            gcs_credentials=getattr(args, "gcs_credentials", None),
            azure_storage_connection_string=getattr(args, "azure_connection_string", None),
        )


def as_config(store: StorageConfig | str | os.PathLike) -> StorageConfig:
    """Accept either a config or a plain path/URL wherever a store is named."""
    return store if isinstance(store, StorageConfig) else StorageConfig(os.fspath(store))
