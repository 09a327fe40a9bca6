"""Shared by the fault tests: components that must be present in CI, and a volume that stalls one reader.

The volume lives in an importable module because Dask worker processes,
started as separate programs, unpickle it by name (they get this folder on
PYTHONPATH).
"""

from __future__ import annotations

import importlib
import os
import time
from types import ModuleType

import numpy as np
import pytest


def require(module: str, why: str) -> ModuleType:
    """Import ``module``; skip without it on a developer machine, fail in CI (where a skip would hide the test)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        message = f"{module} is needed {why} ({error}); `make install` installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class StallingVolume:
    """A ``.npy`` volume whose first reader to reach its ``stall_on``-th read stops there until released.

    That reader claims ``<gate>/stalled`` (exclusive create) and writes its pid into it, so the test knows
    exactly which process is mid-scan and can kill it; every other reader, and every later read, passes.
    The stalled reader gives up after ``safety_seconds`` so a broken test never hangs its worker for good.
    """

    def __init__(self, path: str, gate: str, stall_on: int = 3, safety_seconds: float = 120.0):
        self.path, self.gate, self.stall_on, self.safety_seconds = path, gate, stall_on, safety_seconds
        header = np.load(path, mmap_mode="r")
        self.shape, self.dtype = header.shape, header.dtype
        self._reads = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reads": 0}

    @property
    def claim(self) -> str:
        return os.path.join(self.gate, "stalled")

    @property
    def release(self) -> str:
        return os.path.join(self.gate, "released")

    def __getitem__(self, key):
        self._reads += 1
        if self._reads == self.stall_on and self._claim():
            deadline = time.monotonic() + self.safety_seconds
            while not os.path.exists(self.release) and time.monotonic() < deadline:
                time.sleep(0.05)
        return np.load(self.path, mmap_mode="r")[key]

    def _claim(self) -> bool:
        try:
            descriptor = os.open(self.claim + ".partial", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(descriptor, str(os.getpid()).encode())
        os.close(descriptor)
        os.rename(self.claim + ".partial", self.claim)  # the test reads a complete pid or nothing
        return True


def executing_keys(dask_worker) -> list[str]:
    """The keys of the tasks a Dask worker is running now (call through ``client.run``)."""
    return [str(task.key) for task in dask_worker.state.executing]
