"""How a volume reaches the workers: by file name when it is on disk, by value only when it must be.

* a ``.npy`` opened with ``mmap_mode`` travels as its file name and is mapped
  again by each worker (no copy);
* an in-memory numpy array is written once to a temporary ``.npy`` in
  ``/dev/shm`` (RAM on Linux) for local worker processes, or cut into the
  slab each Dask task needs and sent with the task;
* anything else (zarr, tensorstore, ...) is pickled as it is: those objects
  describe where the data lives, and each worker reads only its blocks.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidVolumeError

_SHARED_MEMORY_DIR = "/dev/shm"


def check_volume(volume: Any) -> tuple[tuple[int, int, int], np.dtype]:
    """Shape and dtype of a 3D integer array-like, or :class:`InvalidVolumeError` saying what is missing.

    >>> check_volume(np.zeros((2, 3, 4), np.uint32))
    ((2, 3, 4), dtype('uint32'))
    """
    if not all(hasattr(volume, name) for name in ("shape", "dtype", "__getitem__")):
        raise InvalidVolumeError(
            f"a volume needs shape, dtype and slicing (numpy, zarr, tensorstore, ...); got {type(volume).__name__}"
        )
    shape = tuple(int(n) for n in volume.shape)
    dtype = np.dtype(getattr(volume.dtype, "numpy_dtype", volume.dtype))
    if len(shape) != 3 or min(shape) < 1:
        raise InvalidVolumeError(f"the volume must have 3 non-empty axes (z, y, x), got shape {shape}")
    if dtype.kind not in "ui":
        raise InvalidVolumeError(f"labels must be integers, the volume has dtype {dtype}")
    return shape, dtype


def open_volume(path: str | os.PathLike) -> Any:
    """Open a label volume file lazily: a ``.npy`` memory-mapped, anything else as a zarr array.

    A path that holds neither raises :class:`InvalidVolumeError` naming it.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.npy")
    >>> np.save(path, np.zeros((2, 3, 4), np.uint64))
    >>> open_volume(path).shape
    (2, 3, 4)
    """
    path = os.fspath(path)
    try:
        if path.endswith(".npy"):
            return np.load(path, mmap_mode="r")
        import zarr

        return zarr.open_array(path, mode="r")
    except (OSError, ValueError) as error:  # missing, unreadable, or another format (zarr's errors are ValueErrors)
        raise InvalidVolumeError(
            f"cannot open {path} as a label volume ({type(error).__name__}: {error}); give a .npy file or a zarr array"
        ) from error


@dataclass(frozen=True)
class NpyFile:
    """A ``.npy`` file (or a raw C-ordered mapping of one) that each worker maps read-only."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    def open(self) -> tuple[Any, tuple[int, ...]]:
        return np.memmap(self.path, self.dtype, "r", self.offset, self.shape), (0, 0, 0)


@dataclass(frozen=True)
class Cutout:
    """A slab of the volume, sent by value, starting at ``origin``."""

    data: np.ndarray
    origin: tuple[int, ...]

    def open(self) -> tuple[Any, tuple[int, ...]]:
        return self.data, self.origin


@dataclass(frozen=True)
class Pickled:
    """An array-like that pickles into a description of where its data lives (zarr, tensorstore, ...)."""

    volume: Any

    def open(self) -> tuple[Any, tuple[int, ...]]:
        return self.volume, (0, 0, 0)


VolumeSource = NpyFile | Cutout | Pickled


def mapped_file(volume: Any) -> NpyFile | None:
    """The file behind a whole, C-ordered ``np.memmap`` (as ``np.load(..., mmap_mode="r")`` returns), else None."""
    if isinstance(volume, np.memmap) and isinstance(volume.base, mmap.mmap) and volume.flags.c_contiguous:
        return NpyFile(os.fspath(volume.filename), int(volume.offset), volume.shape, volume.dtype.str)
    return None


def library_of(source: VolumeSource) -> str:
    """The top-level package a worker needs to open ``source`` (zarr for a zarr array), for a forkserver to preload.

    >>> library_of(Pickled(np.zeros(1)))
    'numpy'
    """
    return type(getattr(source, "volume", source)).__module__.split(".")[0]


def share_with_processes(volume: Any) -> tuple[VolumeSource, str | None]:
    """A source local worker processes can open, and a temporary file to delete after the scan (or None)."""
    on_disk = mapped_file(volume)
    if on_disk is not None:
        return on_disk, None
    if not isinstance(volume, np.ndarray):
        return Pickled(volume), None
    folder = _SHARED_MEMORY_DIR if os.path.isdir(_SHARED_MEMORY_DIR) else None
    handle, path = tempfile.mkstemp(prefix="pocaduck-scan-", suffix=".npy", dir=folder)
    os.close(handle)
    try:
        copy = np.lib.format.open_memmap(path, "w+", volume.dtype, volume.shape)
        copy[...] = volume
        copy.flush()
        shared = mapped_file(np.load(path, mmap_mode="r"))
        del copy
    except BaseException:
        os.unlink(path)
        raise
    return shared, path


def share_with_task(volume: Any, start: tuple[int, ...], stop: tuple[int, ...]) -> VolumeSource:
    """A source for one Dask task that reads ``[start, stop)``: in-memory arrays travel as that slab only."""
    if isinstance(volume, np.ndarray) and mapped_file(volume) is None:
        box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        return Cutout(np.ascontiguousarray(volume[box]), tuple(start))
    return mapped_file(volume) or Pickled(volume)
