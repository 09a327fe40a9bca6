"""A store in a folder on a local (or network-mounted) filesystem."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator

from ..errors import StoreNotFoundError
from ._base import Storage


class LocalStorage(Storage):
    def __init__(self, root: str):
        if os.path.exists(root) and not os.path.isdir(root):  # else each write fails on a bare NotADirectoryError
            raise StoreNotFoundError(
                f"{root} is a file, not a store folder; give the path of a folder, new or existing"
            )
        self.root = root

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/")) if path else self.root

    def describe(self, path: str) -> str:
        return self._abs(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(self._abs(path))

    def root_exists(self) -> bool:
        return os.path.isdir(self.root)

    def read_bytes(self, path: str) -> bytes:
        with open(self._abs(path), "rb") as f:
            return f.read()

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """``os.pread``: one system call, the file position untouched.

        >>> import tempfile
        >>> storage = LocalStorage(tempfile.mkdtemp())
        >>> storage.write_bytes("f", b"0123456789")
        >>> storage.read_range("f", 2, 3), storage.read_range("f", 8, 5), storage.read_range("f", 20, 5)
        (b'234', b'89', b'')
        """
        descriptor = os.open(self._abs(path), os.O_RDONLY)
        try:
            return os.pread(descriptor, length, start)
        finally:
            os.close(descriptor)

    def size(self, path: str) -> int:
        return os.path.getsize(self._abs(path))

    def _temp_beside(self, target: str) -> str:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        return f"{target}.tmp-{uuid.uuid4().hex}"

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._abs(path)
        temp = self._temp_beside(target)
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, target)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        target = self._abs(path)
        temp = self._temp_beside(target)
        with open(temp, "wb") as f:
            f.write(data)
        try:
            os.link(temp, target)  # fails if target exists, and never exposes a partial file
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(temp)

    def publish(self, local_file: str, path: str) -> None:
        target = self._abs(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(local_file, target)

    def copy(self, source: str, target: str) -> None:
        destination = self._abs(target)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        staged = f"{destination}.{uuid.uuid4().hex}.partial"
        try:
            os.link(self._abs(source), staged)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(self._abs(source), staged)
        os.replace(staged, destination)

    def version(self, path: str) -> str | None:
        try:
            found = os.stat(self._abs(path))
        except FileNotFoundError:
            return None
        # publish renames a new file over the old: a new inode, and a new mtime even if the inode is reused
        return f"{found.st_ino}-{found.st_mtime_ns}-{found.st_size}"

    def publish_if_unchanged(self, local_file: str, path: str, expected: str | None) -> str | None:
        target = self._abs(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # One lock on the folder (no extra file in the store) held across the check, the rename and
        # the look at the new version, which no other publisher can change meanwhile; it dies with its holder.
        folder = os.open(os.path.dirname(target), os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            if self.version(path) != expected:
                return None
            os.replace(local_file, target)
            return self.version(path)
        finally:
            os.close(folder)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._abs(path)))
        except FileNotFoundError:
            return []

    def delete_tree(self, path: str) -> None:
        target = self._abs(path)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.unlink(target)

    def open_input(self, path: str, size: int | None = None) -> str:
        return self._abs(path)

    def local_copy(self, path: str) -> str:
        return self._abs(path)

    def staging_dir(self, path: str) -> str:
        target = self._abs(path)
        os.makedirs(target, exist_ok=True)
        return target

    def lock(self, path: str) -> contextlib.AbstractContextManager[bool]:
        return file_lock(self._abs(path))

    def lock_is_held(self, path: str) -> bool:
        return lock_is_held(self._abs(path))


@contextlib.contextmanager
def file_lock(target: str) -> Iterator[bool]:
    """Hold an flock on ``target``; the context value says whether it was free.

    >>> import tempfile
    >>> with file_lock(tempfile.mktemp()) as free:
    ...     free
    True
    """
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the flock


def lock_is_held(target: str) -> bool:
    """Whether a live process holds :func:`file_lock` on ``target``, asked without writing anything.

    flock needs no write access, so this works on a read-only store; no file means no holder.

    >>> import tempfile
    >>> path = tempfile.mktemp()
    >>> with file_lock(path):
    ...     lock_is_held(path)
    True
    """
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
