"""Synthetic blockwise workloads that look like neuron segmentations, identical in every process.

A volume is cut into ``GRID**3`` blocks of ``BLOCK_SIZE`` voxels a side. Each
label is a neuron-like path: it starts in a random block and walks to a
neighbouring block at every step (always forward along one axis, so it never
revisits a block). In each block it touches, its points form a blob around a
random centre inside that block. Writes are ordered block by block, as a
worker scanning the volume would produce them.

Everything is derived from a seed, so the three implementations measured in
separate processes see exactly the same data. Labels cover the whole uint64
range (every other one is >= 2**63); ``below_2_63=True`` clears the top bit for
the original library, which overflows on larger labels.

>>> writes = small_writes(seed=1).writes
>>> len(writes), writes[0].points.shape
(10000, (100, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK_SIZE = 256
GRID = 64
DTYPE = np.dtype("int32")
PROBE_SPANS = (1, 10, 100)
PROBE_LABELS_PER_SPAN = 20
PROBE_POINTS_PER_BLOCK = 100
_TOP_BIT = np.uint64(1 << 63)


@dataclass(frozen=True)
class Write:
    """One ``Ingestor.write`` call: a label's points inside one block."""

    label: int
    block_id: str
    points: np.ndarray
    block: tuple[int, int, int]


@dataclass
class Workload:
    """Writes in block order, plus the probe labels to query, by the number of blocks they span."""

    writes: list[Write]
    probes: dict[int, list[int]] = field(default_factory=dict)

    @property
    def point_count(self) -> int:
        return sum(len(w.points) for w in self.writes)


def _labels(rng: np.random.Generator, count: int, below_2_63: bool) -> np.ndarray:
    """Distinct random labels; every other one has its top bit set unless ``below_2_63``."""
    values = np.unique(rng.integers(1, 2**63 - 1, size=count * 2, dtype=np.int64))
    values = rng.permutation(values)[:count].astype(np.uint64)
    if not below_2_63:
        values[1::2] |= _TOP_BIT
    return values


def _paths(rng: np.random.Generator, label_count: int, span: int) -> np.ndarray:
    """Block coordinates (label_count, span, 3) of forward walks through the grid."""
    start = rng.integers(0, GRID, size=(label_count, 1, 3))
    axis = rng.integers(0, 3, size=(label_count, span - 1))
    steps = np.zeros((label_count, span, 3), dtype=np.int64)
    steps[:, 1:, :] = np.eye(3, dtype=np.int64)[axis]
    return (start + np.cumsum(steps, axis=1)) % GRID


def _blobs(rng: np.random.Generator, blocks: np.ndarray, points_per_write: int) -> np.ndarray:
    """Points (writes, points_per_write, 3) clustered around a random centre inside each block."""
    points = np.empty((len(blocks), points_per_write, 3), dtype=DTYPE)
    chunk = max(1, 2**22 // points_per_write)  # bounds the float temporaries of big workloads
    for start in range(0, len(blocks), chunk):
        origin = (blocks[start : start + chunk] * BLOCK_SIZE)[:, None, :].astype(np.float32)
        centre = origin + rng.uniform(BLOCK_SIZE * 0.2, BLOCK_SIZE * 0.8, size=origin.shape).astype(np.float32)
        spread = rng.standard_normal((len(origin), points_per_write, 3), dtype=np.float32) * (BLOCK_SIZE / 10)
        blob = np.clip(np.rint(centre + spread), origin, origin + (BLOCK_SIZE - 1))
        points[start : start + chunk] = blob
    return points


def _block_order(blocks: np.ndarray) -> np.ndarray:
    return np.lexsort((blocks[:, 2], blocks[:, 1], blocks[:, 0]))


def build(seed: int, groups: list[tuple[int, int, int]], below_2_63: bool = False, probe_groups: int = 0) -> Workload:
    """Writes for ``groups`` of (label_count, blocks_per_label, points_per_write), in block order.

    The first ``probe_groups`` groups are the probe labels, listed by span.
    """
    rng = np.random.default_rng(seed)
    labels = _labels(rng, sum(count for count, _, _ in groups), below_2_63)
    writes: list[Write] = []
    probes: dict[int, list[int]] = {}
    first = 0
    for number, (count, span, points_per_write) in enumerate(groups):
        group_labels = labels[first : first + count]
        first += count
        if number < probe_groups:
            probes.setdefault(span, []).extend(int(label) for label in group_labels)
        blocks = _paths(rng, count, span).reshape(-1, 3)
        points = _blobs(rng, blocks, points_per_write)
        write_labels = np.repeat(group_labels, span)
        writes.extend(
            Write(int(label), f"{x}_{y}_{z}", block_points, (int(x), int(y), int(z)))
            for label, (x, y, z), block_points in zip(write_labels, blocks.tolist(), points, strict=True)
        )
    order = _block_order(np.array([w.block for w in writes]))
    return Workload([writes[i] for i in order], probes)


def _probe_groups(points_per_block: int = PROBE_POINTS_PER_BLOCK) -> list[tuple[int, int, int]]:
    return [(PROBE_LABELS_PER_SPAN, span, points_per_block) for span in PROBE_SPANS]


def small_writes(seed: int, below_2_63: bool = False, write_count: int = 10_000) -> Workload:
    """``write_count`` writes of 100 points: the probe labels (1, 10, 100 blocks) plus 10-block filler labels."""
    probe_groups = _probe_groups()
    probe_writes = sum(count * span for count, span, _ in probe_groups)
    filler_labels = max(0, write_count - probe_writes) // 10
    return build(seed, [*probe_groups, (filler_labels, 10, 100)], below_2_63, probe_groups=len(probe_groups))


def large_writes(seed: int, write_count: int, points_per_write: int = 100_000, below_2_63: bool = False) -> Workload:
    """``write_count`` writes of ``points_per_write`` points, each a different label in one block."""
    return build(seed, [(write_count, 1, points_per_write)], below_2_63)


def scale_store(seed: int, point_count: int, below_2_63: bool = False) -> Workload:
    """The probe labels inside a store of about ``point_count`` points (10-block labels, 1,000 points a block)."""
    filler_points_per_write = 1_000
    filler_labels = max(1, point_count // (10 * filler_points_per_write))
    groups = [*_probe_groups(), (filler_labels, 10, filler_points_per_write)]
    return build(seed, groups, below_2_63, probe_groups=len(PROBE_SPANS))


def probes_first(workload: Workload, write_count: int) -> Workload:
    """A smaller store with the same probe labels: their writes first, then filler, kept in block order.

    Lets a slow implementation build a store that can still answer the probe
    queries; probe labels that do not fit entirely are dropped from ``probes``.
    """
    probe_labels = {label for labels in workload.probes.values() for label in labels}
    ranked = sorted(range(len(workload.writes)), key=lambda i: workload.writes[i].label not in probe_labels)
    kept = sorted(ranked[:write_count])
    writes = [workload.writes[i] for i in kept]
    written = {}
    for write in writes:
        written[write.label] = written.get(write.label, 0) + 1
    probes = {
        span: [label for label in labels if written.get(label) == span] for span, labels in workload.probes.items()
    }
    return Workload(writes, {span: labels for span, labels in probes.items() if labels})


def split_by_worker(writes: list[Write], worker_count: int) -> list[list[Write]]:
    """Give each worker a slab of blocks along x, as a blockwise job would."""
    slabs: list[list[Write]] = [[] for _ in range(worker_count)]
    for write in writes:
        slabs[write.block[0] * worker_count // GRID].append(write)
    return slabs


def tiny_index_rows(seed: int, worker: int, row_count: int) -> list[Write]:
    """``row_count`` one-point writes for one worker: labels shared with neighbouring workers, 4 blocks each.

    Used to build many large worker indexes quickly, for the consolidation figure.
    """
    rng = np.random.default_rng([seed, worker])
    label_count = row_count // 4
    labels = (np.arange(label_count, dtype=np.uint64) + np.uint64(worker * label_count // 2)) | _TOP_BIT
    blocks = rng.integers(0, GRID, size=(row_count, 3))
    points = (blocks * BLOCK_SIZE + rng.integers(0, BLOCK_SIZE, size=(row_count, 3))).astype(DTYPE)[:, None, :]
    write_labels = np.repeat(labels, 4)
    return [
        Write(int(label), f"{x}_{y}_{z}", point, (x, y, z))
        for label, (x, y, z), point in zip(write_labels, blocks.tolist(), points, strict=True)
    ]
