"""A map-style dataset of label samples, for training loops such as PyTorch's ``DataLoader``.

It holds only what pickles cheaply (the store's configuration, the labels and
the sampling settings) and opens a :class:`~pocaduck.Query` on first use in
each process. A process forked from one that already used the dataset opens
its own: DuckDB connections and open files must not cross a fork. Torch is
never imported: any loader that calls ``len`` and ``[]`` works.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .arguments import optional_uint64, positive_int
from .errors import InvalidArgumentError
from .keys import check_label
from .query import Query
from .store import Store, open_store

# Readers a forked child inherited. They are never used, closed or collected there: tearing down a
# DuckDB connection whose threads stayed in the parent can hang; a pool worker ends with os._exit.
_inherited: list[Query] = []


class PointCloudDataset:
    """``ds[i]`` is ``(label, points)``: a uniform sample of ``sample`` points of the i-th label (all of a smaller one).

    ``labels`` defaults to every label of the store, sorted. ``seed=None`` takes
    each label's own sample, one range read on a compacted store; an integer
    seed draws another deterministic sample per seed from the whole label (see
    :meth:`Query.get_points`). ``columns`` picks and orders the columns returned
    (default: all). Items are the same in every process and on every call.

    >>> import tempfile
    >>> from pocaduck import Ingestor, consolidate
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write_block("b0", np.array([5, 5, 5, 9]), np.arange(12).reshape(4, 3))
    >>> _ = consolidate(store)
    >>> dataset = PointCloudDataset(store, sample=2, columns=["z", "x"])
    >>> len(dataset), dataset[0][0], dataset[0][1].shape, dataset[1]
    (2, 5, (2, 2), (9, array([[11,  9]])))
    """

    def __init__(
        self,
        store: Store | str | os.PathLike,
        labels: Iterable[int] | None = None,
        sample: int = 1024,
        seed: int | None = None,
        columns: Sequence[str] | None = None,
    ):
        self.sample = positive_int(sample, "sample", "how many points per item")
        self.seed = optional_uint64(seed, "seed")
        self.config = open_store(store).config
        self._query: Query | None = None
        self._pid: int | None = None
        if labels is None:
            self.labels = self._reader().get_labels()
        else:
            self.labels = np.array([check_label(label, "each of labels") for label in labels], dtype=np.uint64)
        schema_columns = list(self._reader().schema.columns)
        chosen = schema_columns if columns is None else list(columns)
        unknown = [name for name in chosen if name not in schema_columns]
        if unknown or not chosen or isinstance(columns, str):
            raise InvalidArgumentError(
                f"columns must be a non-empty list of the store's columns {schema_columns}, got {columns!r}"
            )
        self.columns = tuple(chosen)
        self._column_positions = np.array([schema_columns.index(name) for name in chosen])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        label = self._label_at(index)
        points = self._reader().get_points(label, use_cache=False, sample=self.sample, seed=self.seed)
        return label, self._columns_of(points)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[int, np.ndarray]]:
        """Several items in one read (PyTorch's DataLoader calls this for a batch when it exists)."""
        labels = [self._label_at(index) for index in indices]
        by_label = self._reader().get_points(labels, use_cache=False, sample=self.sample, seed=self.seed)
        return [(label, self._columns_of(by_label[label])) for label in labels]

    @staticmethod
    def collate(items: Sequence[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Stack a batch of items into ``(labels, points)``: a uint64 array and a (B, sample, D) array.

        PyTorch's default collate turns labels into int64 and fails on labels
        ≥ 2**63; this keeps them exact (``torch.from_numpy`` takes uint64).
        Every item must hold the same number of points: labels smaller than
        ``sample`` give shorter items, refused here with the labels named.

        >>> labels, points = PointCloudDataset.collate([(2**64 - 1, np.zeros((2, 3))), (7, np.ones((2, 3)))])
        >>> labels.tolist(), points.shape
        ([18446744073709551615, 7], (2, 2, 3))
        """
        sizes = {len(points) for _, points in items}
        if len(sizes) > 1:
            short = [label for label, points in items if len(points) < max(sizes)]
            raise InvalidArgumentError(
                f"items of a batch must hold the same number of points to stack, but labels {short} hold fewer "
                f"than the others ({sorted(sizes)}): pick labels with at least `sample` points, or keep the pairs "
                f"with collate_fn=list"
            )
        labels = np.array([label for label, _ in items], dtype=np.uint64)
        return labels, np.stack([points for _, points in items])

    def _label_at(self, index: object) -> int:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"dataset indices are integers, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} labels")
        return int(self.labels[index])

    def _columns_of(self, points: np.ndarray) -> np.ndarray:
        if (
            len(self._column_positions) == points.shape[1]
            and (self._column_positions == np.arange(points.shape[1])).all()
        ):
            return points
        return np.ascontiguousarray(points[:, self._column_positions])

    def _reader(self) -> Query:
        """This process's Query, opened on first use (and anew in a forked child)."""
        if self._query is None or self._pid != os.getpid():
            if self._query is not None:
                _inherited.append(self._query)
            self._query = Query(self.config, cache_size=0)
            self._pid = os.getpid()
        return self._query

    def close(self) -> None:
        """Close this process's Query (a later item opens a new one)."""
        if self._query is not None and self._pid == os.getpid():
            self._query.close()
        self._query = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_query"] = state["_pid"] = None  # each process opens its own
        return state

    def __repr__(self) -> str:
        return (
            f"PointCloudDataset({self.config.base_path!r}, {len(self)} labels, sample={self.sample}, "
            f"seed={self.seed}, columns={list(self.columns)})"
        )
