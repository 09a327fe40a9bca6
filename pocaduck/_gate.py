"""How one reader serves many threads and still closes cleanly: calls in progress are counted.

A ``Query`` is shared by a ``ThreadPoolExecutor`` over labels and by the
widgets' background fetches. Each public call passes the reader's :class:`Gate`;
``close()`` shuts it (later calls raise :class:`ReaderClosedError`), waits for
the calls already in progress to finish, and only then releases what they use.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .errors import PocaduckError, ReaderClosedError

Method = TypeVar("Method", bound=Callable[..., Any])


class Gate:
    """Counts the calls in progress; :meth:`shut` refuses new ones and waits for those.

    >>> gate = Gate()
    >>> with gate.passing():
    ...     pass
    >>> gate.shut()
    True
    >>> with gate.passing():
    ...     pass
    Traceback (most recent call last):
    ...
    pocaduck.errors.ReaderClosedError: this Query was closed: open a new one, which is cheap
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._calls = 0
        self._shut = False
        self._mine = threading.local()  # calls in progress on this thread, which shut() must not wait for

    @property
    def is_shut(self) -> bool:
        return self._shut

    @contextmanager
    def passing(self) -> Iterator[None]:
        with self._changed:
            if self._shut:
                raise ReaderClosedError("this Query was closed: open a new one, which is cheap")
            self._calls += 1
        self._mine.calls = getattr(self._mine, "calls", 0) + 1
        try:
            yield
        finally:
            self._mine.calls -= 1
            with self._changed:
                self._calls -= 1
                self._changed.notify_all()

    def shut(self) -> bool:
        """Refuse new calls and wait for the others' to end; True the first time only."""
        own = getattr(self._mine, "calls", 0)  # a call that closes its own reader would wait for itself
        with self._changed:
            first = not self._shut
            self._shut = True
            self._changed.wait_for(lambda: self._calls <= own)
        return first


def gated(method: Method) -> Method:
    """Run ``method`` through its reader's gate (``self._gate``); its errors as the reader explains them."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._gate.passing():
            try:
                return method(self, *args, **kwargs)
            except PocaduckError as error:
                explained = self._explained(error)
                if explained is error:
                    raise
                raise explained from error

    return call  # type: ignore[return-value]


def gated_iterator(gate: Gate, items: Iterator[Any]) -> Iterator[Any]:
    """``items``, each one produced through ``gate``: a reader closed between two items ends the iteration with
    :class:`ReaderClosedError` rather than reading on from released files."""
    while True:
        with gate.passing():
            item = next(items, _END)
        if item is _END:
            return
        yield item
        del item  # else it would stay alive while the next one is made: two chunks of iter_points, not one


_END = object()
