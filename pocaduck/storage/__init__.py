"""Storage backends behind one narrow interface.

Everything above this package speaks only to :class:`Storage`; only
:func:`open_storage` asks which backend a store lives on.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlparse

from ..config import StorageConfig, redact_url
from ..errors import UnsupportedStorageError
from ._base import Storage
from ._credentials import PACKAGES, PROTOCOLS, filesystem_options
from ._fsspec import FsspecStorage
from ._local import LocalStorage, file_lock, lock_is_held

_FILESYSTEMS_KEPT = 16
_CLIENT_ENVIRONMENT = ("AWS_", "GOOGLE_", "GCS", "STORAGE_EMULATOR_HOST", "AZURE_", "FSSPEC_")
_filesystems: OrderedDict[tuple[int, str, int], Any] = OrderedDict()
_filesystems_lock = threading.Lock()

__all__ = ["FsspecStorage", "LocalStorage", "Storage", "file_lock", "lock_is_held", "open_storage"]


def open_storage(config: StorageConfig) -> Storage:
    """Return the backend for a store's location: a local folder, or S3, GCS or Azure through fsspec.

    >>> open_storage(StorageConfig("/tmp/some_store")).describe("manifest.json")
    '/tmp/some_store/manifest.json'
    >>> open_storage(StorageConfig("s3://bucket/prefix", s3_region="us-east-1")).describe("manifest.json")
    's3://bucket/prefix/manifest.json'
    """
    if config.is_local:
        return LocalStorage(config.local_root)
    if urlparse(config.base_path).password is not None:  # no client reads it, and messages would quote it
        raise UnsupportedStorageError(
            f"{redact_url(config.base_path)}: credentials in the URL are not supported; pass them as "
            f"StorageConfig's s3_*/gcs_*/azure_* keywords or the AWS_*/GOOGLE_*/AZURE_* environment variables"
        )
    if config.storage_type not in PROTOCOLS:
        raise UnsupportedStorageError(
            f"storage type {config.storage_type!r} ({config.base_path}) is not supported; "
            f"use a local folder or an s3://, gs:// or az:// URL"
        )
    package = PACKAGES[config.storage_type]
    try:
        importlib.import_module(package)
    except ImportError as error:
        raise UnsupportedStorageError(
            f"{config.base_path} needs the {package} package: pip install 'pocaduck[{config.storage_type}]'"
        ) from error
    filesystem = _filesystem(config)
    scheme, rest = config.base_path.split("://", 1)
    # The original spelled Azure URLs azure://, which adlfs does not know: it knows az:// and abfs://.
    url = f"az://{rest}" if scheme.lower() == "azure" else config.base_path
    return FsspecStorage(filesystem, url)


def _filesystem(config: StorageConfig) -> Any:
    """The process's fsspec filesystem for ``config``'s location and credentials, made on first use.

    A filesystem holds the client and its open connections: making one for every new Query cost 0.1-1 s of
    client setup (botocore's models), and on a real bucket new connections cost their TCP and TLS handshakes.
    A forked process makes its own (the key holds the process id).
    """
    import fsspec

    from .._immutables import store_key

    # Credentials the client finds by itself (environment variables) are part of what it is made with.
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_CLIENT_ENVIRONMENT)))
    key = (os.getpid(), store_key(config), hash(environment))
    with _filesystems_lock:
        kept = _filesystems.get(key)
        if kept is not None:
            _filesystems.move_to_end(key)
            return kept
    made = fsspec.filesystem(PROTOCOLS[config.storage_type], **filesystem_options(config))
    with _filesystems_lock:
        made = _filesystems.setdefault(key, made)
        while len(_filesystems) > _FILESYSTEMS_KEPT:
            _filesystems.popitem(last=False)
    return made
