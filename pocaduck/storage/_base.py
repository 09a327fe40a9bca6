"""The storage interface: whole-file puts, whole-file and ranged gets, addressed by store-relative paths.

Files are immutable once published, which is what lets the same interface
serve a local disk (temp file + rename) and an object store (one PUT), and
lets a reader fetch pieces of a file by range without fearing it changed.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import BinaryIO, TypeVar

Result = TypeVar("Result")


class Storage(abc.ABC):
    """A store's files. Paths are relative to the store root and use ``/``."""

    #: Whether reads sent together cost about one of them (an object store's round trip): worth guessing ahead.
    concurrent = False

    @abc.abstractmethod
    def describe(self, path: str) -> str:
        """Human-readable location of ``path``, for error messages."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def root_exists(self) -> bool: ...

    @abc.abstractmethod
    def read_bytes(self, path: str) -> bytes: ...

    def fetch_together(self, calls: Sequence[Callable[[], Result]]) -> list[Result]:
        """The results of independent reads, in order; the first error raised once all are done.

        A local disk answers each in microseconds, so they run one after another;
        an object store runs them at once (see ``FsspecStorage``), one round trip for all.
        """
        return [call() for call in calls]

    @abc.abstractmethod
    def read_range(self, path: str, start: int, length: int) -> bytes:
        """Bytes ``start`` to ``start + length`` of ``path``: one read, one ranged GET on an object store.

        Fewer bytes (none at all from the end on) when the file is shorter; ``FileNotFoundError`` when it is absent.
        """

    @abc.abstractmethod
    def size(self, path: str) -> int:
        """Bytes in ``path``; ``FileNotFoundError`` when it does not exist."""

    @abc.abstractmethod
    def write_bytes(self, path: str, data: bytes) -> None:
        """Replace ``path`` atomically: readers see the old content or the new, never half."""

    @abc.abstractmethod
    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` only if absent; return False when it already existed."""

    @abc.abstractmethod
    def publish(self, local_file: str, path: str) -> None:
        """Move a complete local file into the store at ``path`` atomically."""

    @abc.abstractmethod
    def copy(self, source: str, target: str) -> None:
        """Give ``target`` the content of ``source`` in the store, sending no bytes from here.

        A hard link on a local disk, a server-side copy on an object store;
        ``target`` appears whole or not at all.
        """

    @abc.abstractmethod
    def version(self, path: str) -> str | None:
        """A token that changes whenever ``path`` is replaced (None when absent), for ``publish_if_unchanged``."""

    @abc.abstractmethod
    def publish_if_unchanged(self, local_file: str, path: str, expected: str | None) -> str | None:
        """``publish`` only if ``path`` still has version ``expected`` (None: still absent).

        Returns the version of the file just published, or None (and publishes
        nothing) when ``path`` changed meanwhile. The check and the replace are one
        atomic step, so of two writers that started from the same version exactly
        one wins. The loser's file stays.
        """

    @abc.abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Names directly below ``path``; empty when it does not exist."""

    @abc.abstractmethod
    def delete_tree(self, path: str) -> None: ...

    @abc.abstractmethod
    def open_input(self, path: str, size: int | None = None) -> BinaryIO | str:
        """Something pyarrow can read ``path`` from (a local path or a random-access file).

        ``size``, when the caller knows it, spares a remote store the request that would look it up.
        """

    @abc.abstractmethod
    def local_copy(self, path: str) -> str:
        """A local filesystem path holding the content of ``path`` (DuckDB needs one)."""

    @abc.abstractmethod
    def staging_dir(self, path: str) -> str:
        """A local folder in which to build files that will be published below ``path``."""

    @abc.abstractmethod
    def lock(self, path: str) -> AbstractContextManager[bool]:
        """Hold an exclusive lock named ``path``; the context value says whether it was free.

        The lock dies with the process that holds it, so a crashed worker never
        leaves a stale lock behind.
        """

    @abc.abstractmethod
    def lock_is_held(self, path: str) -> bool:
        """Whether a live process holds ``lock(path)``, asked without taking it or writing anything (for a dry run)."""
