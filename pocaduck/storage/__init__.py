"""Storage backends behind one narrow interface.

Everything above this package speaks only to :class:`Storage`; only
:func:`open_storage` asks which backend a store lives on.
"""

from __future__ import annotations

from ..config import StorageConfig
from ..errors import UnsupportedStorageError
from ._base import Storage
from ._local import LocalStorage

__all__ = ["LocalStorage", "Storage", "open_storage"]


def open_storage(config: StorageConfig) -> Storage:
    """Return the backend for a store's location.

    >>> open_storage(StorageConfig("/tmp/some_store")).describe("manifest.json")
    '/tmp/some_store/manifest.json'
    """
    if config.is_local:
        return LocalStorage(config.local_root)
    raise UnsupportedStorageError(
        f"storage type {config.storage_type!r} ({config.base_path}) is not supported yet by this version; "
        "use a local folder"
    )
