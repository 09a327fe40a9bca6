"""A store under a bucket prefix (S3, GCS, Azure), reached through an fsspec filesystem.

Object stores have no rename and no file locks, so the interface maps onto them thus:

- files are built in a local scratch folder and uploaded whole by ``publish``;
  an object store makes an upload visible only once it is complete;
- ``create_exclusive`` is a conditional PUT (``If-None-Match: *`` on S3 and Azure,
  ``ifGenerationMatch=0`` on GCS), so racing workers agree on one manifest;
- ``local_copy`` downloads into a local cache and reuses the copy while the
  object's ETag (or generation) is unchanged, because DuckDB reads only local files;
  a download of 16 MiB or more shows a tqdm bar (or logs a line without tqdm);
- ``read_range`` is one ranged GET;
- ``publish_if_unchanged`` is a conditional PUT on S3 (``If-Match`` on the ETag,
  ``If-None-Match: *`` for a first publish), whose answer gives the new ETag; on
  GCS and Azure it checks the version, uploads, then asks for the new version,
  which leaves a narrow window between each step and the next;
- ``lock`` is a lock file on this machine: it keeps two Ingestors of one worker
  id apart on one machine, but two machines using the same worker id at once are
  not detected.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, BinaryIO, TypeVar

from ..config import redact_url
from ..errors import StorageAccessError, StorageUnavailableError
from ._base import Storage
from ._local import file_lock, lock_is_held

logger = logging.getLogger("pocaduck")
_PROGRESS_FROM_BYTES = 16 * 2**20  # a download this large takes seconds: say what is happening
# A point file this small is read whole on first use: its footer and any label's rows in one request.
_WHOLE_FILE_BYTES = 256 * 2**10
# Bytes read from the end of a larger file on first use: its footer in one request (an Arrow IPC reader asks
# the footer's length, then the footer: two round trips), as pyarrow reads a Parquet footer by itself.
_TAIL_BYTES = 64 * 2**10
_FETCHERS = 32  # requests in flight for one process's fetch_together calls
Result = TypeVar("Result")


@functools.cache
def _fetchers(process: int) -> ThreadPoolExecutor:
    """The pool of ``process``: a forked child gets its own, since its parent's threads did not come with it."""
    del process
    return ThreadPoolExecutor(_FETCHERS, thread_name_prefix="pocaduck-fetch", initializer=_mark_fetcher)


_fetcher = threading.local()


def _mark_fetcher() -> None:
    _fetcher.active = True


def _cache_root() -> str:
    """Where downloaded index files are kept: ``$POCADUCK_CACHE_DIR`` or ``~/.cache/pocaduck``; safe to delete."""
    return os.environ.get("POCADUCK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "pocaduck")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _version_of(info: dict[str, Any]) -> str:
    """What changes whenever an object is replaced: its ETag or generation, else size and mtime."""
    for key in ("ETag", "etag", "generation"):
        if info.get(key):
            return str(info[key])
    return f"{info.get('size')}-{info.get('LastModified') or info.get('mtime') or info.get('updated')}"


class FsspecStorage(Storage):
    """A store at ``url`` on ``filesystem``; paths below it are store-relative.

    >>> import fsspec
    >>> storage = FsspecStorage(fsspec.filesystem("memory"), "memory://doc-store")
    >>> storage.create_exclusive("pocaduck.json", b"{}"), storage.create_exclusive("pocaduck.json", b"{}")
    (True, False)
    >>> storage.listdir("")
    ['pocaduck.json']
    """

    concurrent = True

    def __init__(self, filesystem: Any, url: str):
        self._fs = filesystem
        self.url = url.rstrip("/")
        self._root = filesystem._strip_protocol(self.url).rstrip("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"

    def _full(self, path: str) -> str:
        return f"{self._root}/{path}" if path else self._root

    def describe(self, path: str) -> str:
        return redact_url(f"{self.url}/{path}" if path else self.url)

    @contextlib.contextmanager
    def _reaching(self, path: str) -> Iterator[None]:
        """Turn the filesystem's access and transport errors into ours, naming the object but no secret."""
        try:
            yield
        except (FileNotFoundError, FileExistsError):
            raise
        except Exception as error:
            if _is_access_refusal(error):
                raise StorageAccessError(
                    f"{self.describe(path)}: access refused ({error}). Check the credentials (StorageConfig's "
                    f"s3_*/gcs_*/azure_* keywords or the AWS_*/GOOGLE_*/AZURE_* environment variables) and the "
                    f"permissions on the bucket"
                ) from error
            if _is_transport_error(error):
                raise StorageUnavailableError(
                    f"{self.describe(path)}: the store could not be reached ({type(error).__name__}: {error}). "
                    f"Nothing half-written is visible; run the same step again when the store is back"
                ) from error
            raise

    def exists(self, path: str) -> bool:
        with self._reaching(path):
            try:
                self._fs.info(self._full(path))
                return True
            except FileNotFoundError:
                return False

    def root_exists(self) -> bool:
        """True when the bucket holds something under the store's prefix (a prefix is not a folder)."""
        with self._reaching(""):
            try:
                return bool(self._fs.ls(self._root, detail=False))
            except FileNotFoundError:
                return False

    def read_bytes(self, path: str) -> bytes:
        with self._reaching(path):
            # An open-ended range is one GET; without one, s3fs first asks for the size (a HEAD).
            return self._fs.cat_file(self._full(path), start=0)

    def fetch_together(self, calls: Sequence[Callable[[], Result]]) -> list[Result]:
        """Independent reads sent at once from a thread pool: one round trip for all rather than one each.

        A call made from one of the pool's own threads runs its reads in turn, so nested calls cannot starve it.
        """
        if len(calls) < 2 or getattr(_fetcher, "active", False):
            return [call() for call in calls]
        futures = [_fetchers(os.getpid()).submit(call) for call in calls]
        wait(futures)
        return [future.result() for future in futures]

    def read_range(self, path: str, start: int, length: int) -> bytes:
        with self._reaching(path):
            try:
                return self._fs.cat_file(self._full(path), start=start, end=start + length)
            except FileNotFoundError:
                raise
            except Exception:
                # A range that starts past the end is refused (HTTP 416), in each client's own words.
                if start >= self.size(path):
                    return b""
                raise

    def size(self, path: str) -> int:
        with self._reaching(path):
            return int(self._fs.size(self._full(path)))

    def write_bytes(self, path: str, data: bytes) -> None:
        with self._reaching(path):
            self._fs.pipe_file(self._full(path), data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        with self._reaching(path):
            try:
                self._fs.pipe_file(self._full(path), data, mode="create")
                return True
            except FileExistsError:
                return False

    def publish(self, local_file: str, path: str) -> None:
        with self._reaching(path):
            self._fs.put_file(local_file, self._full(path))
        os.unlink(local_file)

    def copy(self, source: str, target: str) -> None:
        """A server-side copy (S3 CopyObject, GCS rewrite, Azure copy-from-URL): no bytes travel through here."""
        with self._reaching(target):
            self._fs.copy(self._full(source), self._full(target))

    def version(self, path: str) -> str | None:
        self._fs.invalidate_cache(self._full(path))  # another process may have replaced it since we looked
        with self._reaching(path):
            try:
                return _version_of(self._fs.info(self._full(path)))
            except FileNotFoundError:
                return None

    def publish_if_unchanged(self, local_file: str, path: str, expected: str | None) -> str | None:
        if "s3" not in self._fs.protocol:
            if self.version(path) != expected:
                return None
            self.publish(local_file, path)
            return self.version(path)
        bucket, key, _ = self._fs.split_path(self._full(path))
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        # One PUT (up to 5 GB), since s3fs's multipart upload takes no condition.
        with self._reaching(path), open(local_file, "rb") as body:
            try:
                answer = self._fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **condition)
            except OSError as error:
                if _condition_failed(error):
                    return None
                raise
            finally:
                self._fs.invalidate_cache(self._full(path))
        os.unlink(local_file)
        # The answer's ETag is this very upload's, even if another writer replaces it a moment later.
        return _version_of(answer) if answer.get("ETag") else self.version(path)

    def listdir(self, path: str) -> list[str]:
        with self._reaching(path):
            try:
                entries = self._fs.ls(self._full(path), detail=False)
            except FileNotFoundError:
                return []
        prefix = self._full(path).rstrip("/") + "/"
        return sorted({entry.rstrip("/")[len(prefix) :] for entry in entries if entry.startswith(prefix)} - {""})

    def delete_tree(self, path: str) -> None:
        with self._reaching(path), contextlib.suppress(FileNotFoundError):
            self._fs.rm(self._full(path), recursive=True)

    def open_input(self, path: str, size: int | None = None) -> BinaryIO:
        """A random-access file that fetches exactly the byte ranges asked for, one GET each.

        Giving ``size`` (the index records it) saves the HEAD request that would look it up.
        """
        return _RangeReader(self, path, size)

    def local_copy(self, path: str) -> str:
        """Download ``path`` into the local cache unless the cached copy is still current.

        One metadata request per call; the object itself is fetched only when it changed.
        """
        with self._reaching(path):
            info = self._fs.info(self._full(path))
        version = _version_of(info)
        folder = os.path.join(_cache_root(), _short_hash(self.url))
        stem = f"{_short_hash(path)}-"
        cached = os.path.join(folder, f"{stem}{_short_hash(version)}-{os.path.basename(path)}")
        if os.path.exists(cached):
            return cached
        os.makedirs(folder, exist_ok=True)
        partial = f"{cached}.partial-{uuid.uuid4().hex}"
        try:
            with self._reaching(path), _download_progress(self.describe(path), int(info.get("size") or 0)) as shown:
                self._fs.get_file(self._full(path), partial, callback=shown)
            os.replace(partial, cached)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        older = [
            os.path.join(folder, name)
            for name in os.listdir(folder)
            if name.startswith(stem) and ".partial-" not in name and not cached.endswith(name)
        ]
        # Keep the version just replaced: another process may have been handed its path a moment
        # ago and not opened it yet. Readers of even older ones keep their open handles.
        with contextlib.suppress(FileNotFoundError):  # another process tidying at the same time
            for stale in sorted(older, key=os.path.getmtime)[:-1]:
                os.unlink(stale)
        return cached

    @functools.cached_property
    def _scratch(self) -> tempfile.TemporaryDirectory:
        # Removed when this storage object goes away (or at exit), with whatever a failed run left in it.
        return tempfile.TemporaryDirectory(prefix="pocaduck-staging-")

    def staging_dir(self, path: str) -> str:
        folder = os.path.join(self._scratch.name, *path.split("/"))
        os.makedirs(folder, exist_ok=True)
        return folder

    def lock(self, path: str) -> contextlib.AbstractContextManager[bool]:
        """A lock on this machine only: object stores offer no lock that dies with its holder."""
        return file_lock(self._lock_file(path))

    def lock_is_held(self, path: str) -> bool:
        """Seen from this machine only, like the lock itself."""
        return lock_is_held(self._lock_file(path))

    def _lock_file(self, path: str) -> str:
        locks = os.path.join(tempfile.gettempdir(), f"pocaduck-locks-{os.getuid()}")  # per user: no shared folder
        return os.path.join(locks, _short_hash(self.describe(path)) + ".lock")


class _RangeReader(io.RawIOBase):
    """A read-only file over one object: each read is one ranged GET, with our error translation.

    The first read that falls in the file's last ``_TAIL_BYTES`` (a footer) fetches all of them and keeps them,
    and a file of at most ``_WHOLE_FILE_BYTES`` is fetched whole on its first read: what follows comes from here.
    """

    def __init__(self, storage: FsspecStorage, path: str, size: int | None):
        self._storage, self._path, self._size, self._position = storage, path, size, 0
        self._kept_from, self._kept = 0, b""

    def readable(self) -> bool:
        return True

    @property
    def kept_bytes(self) -> int:
        """Bytes of the object held in memory (its tail, or all of a small one) to answer reads without a request."""
        return len(self._kept)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = self._storage.size(self._path)
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        end = min(self._position + len(buffer), self.size)
        if end <= self._position:
            return 0
        if not self._kept_from <= self._position < end <= self._kept_from + len(self._kept):
            whole = self.size <= _WHOLE_FILE_BYTES
            if whole or self._position >= self.size - _TAIL_BYTES:
                self._kept_from = 0 if whole else self.size - _TAIL_BYTES
                self._kept = self._storage.read_range(self._path, self._kept_from, self.size - self._kept_from)
        if self._kept_from <= self._position < end <= self._kept_from + len(self._kept):
            data = self._kept[self._position - self._kept_from : end - self._kept_from]
        else:
            data = self._storage.read_range(self._path, self._position, end - self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


@contextlib.contextmanager
def _download_progress(what: str, size: int) -> Iterator[Any]:
    """An fsspec callback showing a large download: a tqdm bar when tqdm is installed, else one log line."""
    from fsspec.callbacks import DEFAULT_CALLBACK, TqdmCallback

    if size < _PROGRESS_FROM_BYTES:
        yield DEFAULT_CALLBACK
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.info("downloading %s (%.0f MB) into the local cache", what, size / 1e6)
        yield DEFAULT_CALLBACK
        return
    bar = TqdmCallback(tqdm_kwargs={"desc": f"downloading {what}", "unit": "B", "unit_scale": True}, tqdm_cls=tqdm)
    try:
        yield bar
    finally:
        bar.close()


@functools.cache
def _transport_error_types() -> tuple[type[BaseException], ...]:
    """Errors meaning the store could not be reached, from whichever client libraries are installed."""
    types: list[type[BaseException]] = [OSError, TimeoutError]
    with contextlib.suppress(ImportError):
        from botocore.exceptions import BotoCoreError

        types.append(BotoCoreError)
    with contextlib.suppress(ImportError):
        from aiohttp import ClientError

        types.append(ClientError)
    with contextlib.suppress(ImportError):
        from azure.core.exceptions import AzureError

        types.append(AzureError)
    return tuple(types)


def _is_access_refusal(error: BaseException) -> bool:
    """A PermissionError (s3fs), or an HTTP 401/403 from a client that does not translate it (adlfs, gcsfs)."""
    status = getattr(error, "status_code", None) or getattr(error, "code", None)
    return isinstance(error, PermissionError) or status in (401, 403)


def _condition_failed(error: OSError) -> bool:
    """A conditional PUT refused: the object changed (412, 409 for a concurrent one) or is gone (404)."""
    if isinstance(error, (FileExistsError, FileNotFoundError)):
        return True
    response = getattr(error.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")


def _is_transport_error(error: BaseException) -> bool:
    return isinstance(error, _transport_error_types())
