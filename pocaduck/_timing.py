"""Phase timings of reader calls (``timing=True``), shared by the readers of both store layouts."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("pocaduck")


class Timing(dict):
    """Phase durations of one call; filled on every call, returned when ``timing=True``."""

    def __init__(self, **fields: Any):
        super().__init__(total_time=0.0, index_lookup_time=0.0, data_read_time=0.0, **fields)
        self._started = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self[name] += time.perf_counter() - started

    def finish(self, result: Any, requested: bool) -> Any:
        self["total_time"] = time.perf_counter() - self._started
        return (result, dict(self)) if requested else result


def print_timing_info(timing_info: dict) -> None:
    """Print a ``timing=True`` result's phases, as the original library did.

    >>> print_timing_info({"label": 5, "points_returned": 2, "total_time": 0.0015, "cache_hit": False})
    label 5: 2 points
      total_time               1.500 ms
      cache_hit            False
    """
    print(f"label {timing_info.get('label')}: {timing_info.get('points_returned', 0):,} points")
    for key, value in timing_info.items():
        if key.endswith("_time"):
            print(f"  {key:<20} {value * 1e3:9.3f} ms")
        elif key not in ("label", "points_returned"):
            print(f"  {key:<20} {value}")


@contextmanager
def logged_phase(verb: str, name: str) -> Iterator[None]:
    """Log how long a phase of ``verb`` took, at DEBUG with ``phase`` and ``seconds`` fields (the benches read them)."""
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    logger.debug("%s: %s took %.3f s", verb, name, seconds, extra={"phase": name, "seconds": seconds})
