"""How one reader serves many threads and still closes cleanly: calls in progress are counted.

A ``Query`` is shared by a ``ThreadPoolExecutor`` over labels and by the
widgets' background fetches. Each public call passes the reader's :class:`Gate`;
``close()`` shuts it (later calls raise :class:`ReaderClosedError`), waits for
the calls already in progress to finish, and only then releases what they use.

A reader that started from what the process remembered gives its gate an
``opening`` step: the first call to pass runs it (with that call's own first
reads, to send together), the others wait for it, and none reads before it ends.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .errors import PocaduckError, ReaderClosedError

Method = TypeVar("Method", bound=Callable[..., Any])
Reads = Callable[[], object]


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

    An opening step runs once, in the first call to pass, given that call's first reads:

    >>> opened, reads = [], lambda: None
    >>> gate = Gate(opening=opened.append)
    >>> with gate.passing(reads):
    ...     pass
    >>> with gate.passing():
    ...     pass
    >>> opened == [reads], gate.opening
    (True, False)
    """

    def __init__(self, opening: Callable[[Reads | None], None] | None = None) -> None:
        self._changed = threading.Condition()
        self._calls = 0
        self._shut = False
        self._mine = threading.local()  # calls in progress on this thread, which shut() must not wait for
        self._opening = opening  # None once it has run to its end
        self._opening_lock = threading.Lock()

    @property
    def is_shut(self) -> bool:
        return self._shut

    @property
    def opening(self) -> bool:
        """Whether the opening step is still to run: the next call to pass runs it."""
        return self._opening is not None

    @contextmanager
    def passing(self, first_reads: Reads | None = None) -> Iterator[None]:
        """Pass the gate; the first call runs the opening step, given ``first_reads`` (what it reads first)."""
        with self._changed:
            if self._shut:
                raise ReaderClosedError("this Query was closed: open a new one, which is cheap")
            self._calls += 1
        self._mine.calls = getattr(self._mine, "calls", 0) + 1
        try:
            if self._opening is not None:
                self._open(first_reads)
            yield
        finally:
            self._mine.calls -= 1
            with self._changed:
                self._calls -= 1
                self._changed.notify_all()

    def _open(self, first_reads: Reads | None) -> None:
        with self._opening_lock:  # the others wait: what they read depends on what the opening finds
            if self._opening is not None:
                self._opening(first_reads)
                self._opening = None  # only once it succeeded: after an error the next call tries again

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
    return gated_reading(None)(method)


def gated_reading(first_reads: Callable[..., object] | None) -> Callable[[Method], Method]:
    """:func:`gated`, where ``first_reads(self, *args, **kwargs)`` reads what the method will read first: a gate's
    opening step may send it together with its own requests.

    Example: ``@gated_reading(lambda self, label, *args, **kwargs: self._pages_of(label))``.
    """

    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            gate = self._gate
            reads = functools.partial(first_reads, self, *args, **kwargs) if first_reads and gate.opening else None
            with gate.passing(reads):
                try:
                    return method(self, *args, **kwargs)
                except PocaduckError as error:
                    explained = self._explained(error)
                    if explained is error:
                        raise
                    raise explained from error

        return call  # type: ignore[return-value]

    return decorate


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
