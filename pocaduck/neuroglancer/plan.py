"""What an export writes and where: the plan every task reads, the output folder's layout, and its state.

::

    OUT/
      info                          neuroglancer's metadata, written last: until then no viewer sees a half export
      by_id/<shard>.shard           annotation id -> the point, with its label
      label/<shard>.shard           label -> all its points (the relationship neuroglancer follows from a segment)
      spatial<l>/<shard>.shard      level l's grid cells -> their points
      pocaduck_export.json          what was exported (store, labels, settings): a re-run finds it done
      .pocaduck-export/             only while it runs (removed at the end):
        plan.json, labels.parquet   the plan and the labels with their point counts and first ids
        rows/ids-<i>.parquet        task ids-<i>'s points, grouped by the shard task that reads them
        done/<task>.json            a task's result, written after its files: a re-run skips that task
        update.json                 an update to another mapping version: its versions, what it touches

Annotation ids number the exported points ``0 .. N-1`` in label order, then in
the order ``Query.get_points`` returns a label's points. Task ``ids-<i>``
handles one ``by_id`` shard's id range (whole labels read, straddling ones
trimmed); each other task writes one shard of the label or a spatial index
from the rows the ``ids`` tasks left for it. Every file is published
atomically and every byte is a function of the plan, so a re-run after a kill
writes the missing files and ends with the same output as a run never killed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import StorageConfig, redact_url
from ..errors import ExportFolderError, ExportRangeError, InvalidArgumentError, UnknownLabelError
from ..keys import check_label
from ..layout import UNIFIED_INDEX
from ..mapping import MappedQuery
from ..query import Query
from ..storage import Storage, open_storage
from ..store import Store
from .annotations import RELATIONSHIP, by_id_size, property_columns, property_type, record_dtype
from .sharded import Sharding, bits_for, dense_sharding
from .spatial import Level, plan_levels

FORMAT = "pocaduck-neuroglancer-export"
FORMAT_VERSION = 1
INFO = "info"
RECORD = "pocaduck_export.json"
WORK = ".pocaduck-export"
UPDATE = f"{WORK}/update.json"  # only while an update to another mapping version runs
DEFAULT_SHARD_BYTES = 256 * 2**20  # 10**9 points make ~350 shard files in all
_IDS_PER_MINISHARD_BITS = 10  # neuroglancer scans a minishard's index for a key: keep them short
_CELLS_PER_MINISHARD_BITS = 6
_LABELS_PER_MINISHARD = 64
_SUPERVOXEL_PROPERTY = {"id": "supervoxel", "type": "uint32", "description": "the stored label the point is in"}


@dataclass(frozen=True)
class ExportPlan:
    """Everything a task needs to write its files, except the labels (``labels.parquet``, read once per process).

    The store's location is not in it: the output folder must not hold the store's credentials, so each task
    is given the store's config itself.
    """

    fingerprint: str
    frame: str  # the fingerprint without the mapping version: exports of one frame differ only in their bodies
    mapping: str | None  # the mapping version whose bodies are the segments, None for the stored labels
    supervoxel_property: bool
    point_count: int
    label_count: int  # segments: bodies under a mapping, else labels
    voxel_size: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    properties: tuple[str, ...]
    property_type: str
    by_id: Sharding
    relationship: Sharding
    levels: tuple[Level, ...]
    level_shardings: tuple[Sharding, ...]

    @property
    def rank(self) -> int:
        return len(self.lower)

    @property
    def record(self) -> np.dtype:
        return record_dtype(self.rank, len(self.properties), self.property_type, self.supervoxel_property)

    @property
    def ids_per_task(self) -> int:
        return 1 << (self.by_id.preshift_bits + self.by_id.minishard_bits)

    def id_tasks(self) -> list[str]:
        return [f"ids-{i:06d}" for i in range(math.ceil(self.point_count / self.ids_per_task))]

    def shard_tasks(self) -> list[str]:
        """The tasks that write one shard each of the label index and the spatial levels, from the ids tasks' rows."""
        names = [f"{RELATIONSHIP}-{shard:06d}" for shard in range(self.relationship.shards)]
        for level, sharding in enumerate(self.level_shardings):
            names += [f"spatial{level}-{shard:06d}" for shard in range(sharding.shards)]
        return names

    def sharding_of(self, index: str) -> Sharding:
        """The sharding of ``by_id``, ``label`` or ``spatial<l>``."""
        if index == "by_id":
            return self.by_id
        if index == RELATIONSHIP:
            return self.relationship
        return self.level_shardings[int(index.removeprefix("spatial"))]

    def info(self, largest_cells: Sequence[int]) -> dict:
        """Neuroglancer's ``info``; ``largest_cells`` is each level's most points in one cell (its ``limit``)."""
        names = ("x", "y", "z")[: self.rank]
        return {
            "@type": "neuroglancer_annotations_v1",
            "dimensions": {name: [size, "nm"] for name, size in zip(names, self.voxel_size, strict=True)},
            "lower_bound": list(self.lower),
            "upper_bound": list(self.upper),
            "annotation_type": "POINT",
            "properties": [
                *([_SUPERVOXEL_PROPERTY] if self.supervoxel_property else []),
                *(
                    {"id": name, "type": self.property_type, "description": f"column {name} of the pocaduck store"}
                    for name in self.properties
                ),
            ],
            "relationships": [{"id": RELATIONSHIP, "key": RELATIONSHIP, "sharding": self.relationship.to_json()}],
            "by_id": {"key": "by_id", "sharding": self.by_id.to_json()},
            "spatial": [
                {
                    "key": f"spatial{number}",
                    "grid_shape": list(level.grid_shape),
                    "chunk_size": list(level.chunk_size),
                    "limit": max(int(largest), 1),
                    "sharding": sharding.to_json(),
                }
                for number, (level, sharding, largest) in enumerate(
                    zip(self.levels, self.level_shardings, largest_cells, strict=True)
                )
            ],
        }

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()


def make_plan(
    store: Store,
    query: Query,
    labels: Iterable[int] | None,
    properties: Sequence[str] | None,
    shard_bytes: int,
    points_per_cell: int,
    mapped: MappedQuery | None = None,
) -> tuple[ExportPlan, pa.Table]:
    """The plan for exporting ``labels`` (all when None) of ``store`` (read by ``query``), and the labels table.

    With ``mapped`` (a Query of a mapping version) ``labels`` are bodies and the table lists their stored labels
    (supervoxels) with each one's ``body``. Everything but the segment ids is planned from the supervoxels alone
    (ids, sharding, spatial levels), so two versions' exports of the same supervoxels share their ``frame``.
    """
    schema = query.schema
    if schema.dimensions < 3:
        raise InvalidArgumentError(
            f"neuroglancer points need x, y and z: this store has only the columns {list(schema.columns)}"
        )
    table, lower, upper = _label_table(query, labels, mapped)
    counts = table["point_count"].to_numpy()
    point_count = int(counts.sum())
    if point_count == 0:
        raise InvalidArgumentError("there is nothing to export: the store holds no points for these labels")
    voxel_size = _voxel_size(schema.metadata.get("voxel_size"), store.path)
    columns = property_columns(schema, properties)
    kind = property_type(schema)
    supervoxel_property = mapped is not None and "supervoxel" not in columns and _fits_uint32(table["label"])
    record = record_dtype(3, len(columns), kind, supervoxel_property)
    by_id = dense_sharding(
        bits_for(point_count), _shard_bits(point_count * by_id_size(record), shard_bytes), _IDS_PER_MINISHARD_BITS
    )
    label_count = len(counts)  # supervoxels under a mapping: a bound on the bodies that no version changes
    several_bytes = point_count * (record.itemsize + 8) + label_count * 8
    relationship_shard_bits = min(_shard_bits(several_bytes, shard_bytes), bits_for(label_count))
    relationship = Sharding(
        0,
        bits_for(math.ceil(label_count / (_LABELS_PER_MINISHARD << relationship_shard_bits))),
        relationship_shard_bits,
    )
    levels = plan_levels(lower, upper, np.array(voxel_size), point_count, points_per_cell)
    shares = np.diff([0.0, *[min(level.hash_below / 2**64, 1.0) for level in levels]])
    level_shardings = tuple(
        dense_sharding(level.key_bits, _shard_bits(share * several_bytes, shard_bytes), _CELLS_PER_MINISHARD_BITS)
        for level, share in zip(levels, shares, strict=True)
    )
    settings = {
        "format_version": FORMAT_VERSION,
        "store": store.path,
        "index": store.storage.version(UNIFIED_INDEX),
        "labels": hashlib.sha256(table["label"].to_numpy().tobytes() + counts.tobytes()).hexdigest(),
        "properties": columns,
        "shard_bytes": shard_bytes,
        "points_per_cell": points_per_cell,
    }
    if mapped is not None:  # only then: an export without a mapping keeps the fingerprint it had before mappings
        settings.update(mapped=True, supervoxel_property=supervoxel_property)
    frame = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    mapping = None if mapped is None else mapped.mapping.name
    plan = ExportPlan(
        fingerprint=frame if mapping is None else hashlib.sha256(f"{frame}/{mapping}".encode()).hexdigest()[:20],
        frame=frame,
        mapping=mapping,
        supervoxel_property=supervoxel_property,
        point_count=point_count,
        label_count=label_count if mapped is None else len(np.unique(table["body"].to_numpy())),
        voxel_size=voxel_size,
        lower=tuple(lower.tolist()),
        upper=tuple(upper.tolist()),
        properties=tuple(columns),
        property_type=kind,
        by_id=by_id,
        relationship=relationship,
        levels=tuple(levels),
        level_shardings=level_shardings,
    )
    return plan, table


def _label_table(
    query: Query, labels: Iterable[int] | None, mapped: MappedQuery | None
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``label, point_count, first_id`` of the exported labels, sorted by label, and their points' bounding box;
    with ``mapped``, also each label's ``body``, and ``labels`` are bodies.

    Unknown labels are refused. The box is (x, y, z) as the float32 values neuroglancer stores, in float64.
    """
    spatial = query.schema.spatial_columns
    boxes = ", ".join([f"min_{c}" for c in spatial] + [f"max_{c}" for c in spatial])
    rows = query.sql(f"SELECT label, point_count, {boxes} FROM labels ORDER BY label", output="numpy")
    known = rows["label"].astype(np.uint64)
    segments = known if mapped is None else mapped.get_body(known)
    if labels is None:
        chosen = np.arange(len(known))
    else:
        asked = [check_label(label, "each of labels") for label in np.ravel(np.asarray(labels, object))]
        wanted = np.unique(np.array(asked, np.uint64))
        if not len(wanted):
            raise InvalidArgumentError("labels is empty: give the labels to export, or None for all of them")
        chosen = np.flatnonzero(np.isin(segments, wanted))
        missing = np.setdiff1d(wanted, segments[chosen])
        if len(missing):
            kind, lister = ("labels", "Query(store)") if mapped is None else ("bodies", "Query(store, mapping=...)")
            raise UnknownLabelError(
                f"{len(missing)} of the {kind} to export are not in the store: {_some(missing)}; "
                f"{lister}.get_labels() lists the {kind} it holds"
            )
    counts = rows["point_count"][chosen].astype(np.int64)
    columns = {
        "label": pa.array(known[chosen]),
        "point_count": pa.array(counts),
        "first_id": pa.array((np.cumsum(counts) - counts).astype(np.uint64)),
    }
    if mapped is not None:
        columns["body"] = pa.array(segments[chosen].astype(np.uint64))
    table = pa.table(columns)
    if not len(chosen):
        return table, np.zeros(3), np.zeros(3)
    _check_float32(rows, spatial, chosen)
    lower = np.array([rows[f"min_{c}"][chosen].min() for c in spatial], np.float64)
    upper = np.array([rows[f"max_{c}"][chosen].max() for c in spatial], np.float64)
    return table, lower.astype(np.float32).astype(np.float64), upper.astype(np.float32).astype(np.float64)


def _check_float32(rows: dict[str, np.ndarray], spatial: Sequence[str], chosen: np.ndarray) -> None:
    """Refuse coordinates that are not finite as float32: they would reach ``info`` as Infinity, which is not JSON."""
    for column in spatial:
        low, high = rows[f"min_{column}"][chosen].astype(np.float64), rows[f"max_{column}"][chosen].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            fits = np.isfinite(low.astype(np.float32)) & np.isfinite(high.astype(np.float32))
        if fits.all():
            continue
        labels = _some(rows["label"][chosen][~fits])
        raise ExportRangeError(
            f"column {column} holds values from {low.min():g} to {high.max():g}, beyond float32 (neuroglancer's "
            f"coordinates: finite, up to ±{np.finfo(np.float32).max:.4g}) in labels {labels}. Nothing was written: "
            f"export the other labels (labels=[...]), or rewrite those points within range"
        )


def _fits_uint32(labels: pa.Array) -> bool:
    """Whether every label fits neuroglancer's widest integer property (no 64-bit property types exist)."""
    return len(labels) == 0 or int(labels.to_numpy().max()) < 2**32


def _some(labels: np.ndarray) -> str:
    """The first few of ``labels``, for a message."""
    shown = ", ".join(map(str, labels[:5].astype(np.uint64).tolist()))
    return shown + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")


def _voxel_size(voxel_size: object, store: str) -> tuple[float, ...]:
    """The manifest's voxel size in nm (x, y, z), or 1 nm with a warning when it has none."""
    if voxel_size is None:
        warnings.warn(
            f"{store} records no voxel_size in its manifest: neuroglancer will show 1 nm voxels. Declare the real "
            f"size with create_store(..., voxel_size=[x, y, z]) before writing, or scan_volume(..., voxel_size=...)",
            UserWarning,
            stacklevel=4,
        )
        return (1.0, 1.0, 1.0)
    values = [float(v) for v in voxel_size] if isinstance(voxel_size, list | tuple) else [float(voxel_size)] * 3
    return tuple(values[:3])


def _shard_bits(total_bytes: float, shard_bytes: int) -> int:
    return bits_for(math.ceil(total_bytes / shard_bytes))


# -- the output folder ------------------------------------------------------------


def plan_path() -> str:
    return f"{WORK}/plan.json"


def labels_path() -> str:
    return f"{WORK}/labels.parquet"


def rows_path(task: str) -> str:
    return f"{WORK}/rows/{task}.parquet"


def done_path(task: str) -> str:
    return f"{WORK}/done/{task}.json"


def shard_path(plan: ExportPlan, index: str, shard: int) -> str:
    return f"{index}/{plan.sharding_of(index).file_name(shard)}"


def refuse_store_folder(store: StorageConfig, out: StorageConfig) -> None:
    """Refuse an ``out`` that is the store's folder or lies inside it: gc would delete the export with the
    store's unreferenced files, and consolidation and compaction would meet folders they do not expect."""
    if store.is_local != out.is_local:
        return
    if store.is_local:
        root, target = os.path.realpath(store.local_root), os.path.realpath(out.local_root)
        inside = os.path.commonpath([root, target]) == root
    else:
        root, target = store.base_path.rstrip("/"), out.base_path.rstrip("/")
        same_service = (store.storage_type, store.s3_endpoint_url) == (out.storage_type, out.s3_endpoint_url)
        inside = same_service and (target == root or target.startswith(root + "/"))
    if inside:
        raise ExportFolderError(
            f"{redact_url(out.base_path)} is inside the store {redact_url(store.base_path)}, where pocaduck gc "
            f"would delete it: nothing was written. Export into a folder outside the store"
        )


def output_state(storage: Storage, plan: ExportPlan) -> str:
    """``"new"``, ``"resume"`` (a killed run of this export), ``"done"`` or ``"update"`` (a finished export of
    the same supervoxels under another mapping version); anything else in ``out`` is refused.

    Nothing is deleted here: a folder holding other files, or another export, stays as it is.
    """
    names = storage.listdir("")
    if not names:
        return "new"
    for path, state in ((RECORD, "done"), (plan_path(), "resume")):
        if storage.exists(path):
            recorded = json.loads(storage.read_bytes(path))
            if recorded.get("fingerprint") == plan.fingerprint:
                # An update to another version killed half-way: the folder must be brought back to this one.
                unfinished = state == "done" and storage.exists(UPDATE)
                return "update" if unfinished and _fingerprint(storage, UPDATE) != plan.fingerprint else state
            if state == "done" and plan.mapping and recorded.get("mapping") and recorded.get("frame") == plan.frame:
                return "update"
            raise ExportFolderError(
                f"{storage.describe('')} holds {'an' if state == 'done' else 'an unfinished'} export of other "
                f"labels, settings or another version of the store: nothing was changed. Export into a new folder, "
                f"or delete this one first"
            )
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise ExportFolderError(
        f"{storage.describe('')} already holds {shown}, which is no export of this library: nothing was changed. "
        f"Export into a new or empty folder"
    )


def _fingerprint(storage: Storage, path: str) -> str | None:
    return json.loads(storage.read_bytes(path)).get("fingerprint")


def save_plan(storage: Storage, plan: ExportPlan, table: pa.Table) -> None:
    """Write the labels, then the plan: the plan's presence says the labels are there."""
    staging = storage.staging_dir(WORK)
    local = f"{staging}/labels.parquet.{plan.fingerprint}.tmp"
    pq.write_table(table, local)
    storage.publish(local, labels_path())
    storage.write_bytes(plan_path(), plan.to_json())


_loaded: dict[tuple[str, str], tuple[ExportPlan, pa.Table]] = {}
_loaded_lock = threading.Lock()


def load_plan(out: StorageConfig, fingerprint: str) -> tuple[ExportPlan, pa.Table]:
    """The plan and labels table a task works from; read once per process (tasks of one export share them).

    Two exports running in one process (threads) take turns in the cache: each task keeps the value it got,
    never a key another thread may have just cleared.
    """
    key = (out.base_path, fingerprint)
    with _loaded_lock:
        found = _loaded.get(key)
    if found is None:
        found = _read_plan(out, fingerprint)
        with _loaded_lock:
            _loaded.clear()  # keep only the latest export's labels in memory
            _loaded[key] = found
    return found


def _read_plan(out: StorageConfig, fingerprint: str) -> tuple[ExportPlan, pa.Table]:
    storage = open_storage(out)
    body = json.loads(storage.read_bytes(plan_path()))
    if body["fingerprint"] != fingerprint:
        raise ExportFolderError(f"{storage.describe('')} now holds another export: this task's export was replaced")
    body["by_id"] = Sharding(**body["by_id"])
    body["relationship"] = Sharding(**body["relationship"])
    body["levels"] = tuple(
        Level(tuple(level["grid_shape"]), tuple(level["chunk_size"]), level["hash_below"]) for level in body["levels"]
    )
    body["level_shardings"] = tuple(Sharding(**sharding) for sharding in body["level_shardings"])
    for name in ("voxel_size", "lower", "upper", "properties"):
        body[name] = tuple(body[name])
    table = pq.read_table(storage.open_input(labels_path()))
    return ExportPlan(**body), table
