"""A path that names nothing usable fails with a PocaduckError that names it, not with a library's own error."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pocaduck import Ingestor, InvalidVolumeError, Query
from pocaduck.errors import StoreNotFoundError
from pocaduck.scan import open_volume


@pytest.mark.parametrize("name", ["missing.npy", "missing.zarr", "notes.txt", "not_really.npy", "group.zarr"])
def test_open_volume_names_a_path_that_holds_no_volume(tmp_path, name):
    (tmp_path / "notes.txt").write_text("not a volume")
    (tmp_path / "not_really.npy").write_bytes(b"not a volume either")
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    with pytest.raises(InvalidVolumeError, match=r"a \.npy file or a zarr array") as refused:
        open_volume(tmp_path / name)
    assert name in str(refused.value)


def test_open_volume_reads_a_zarr_array(tmp_path):
    array = zarr.create_array(str(tmp_path / "labels.zarr"), shape=(2, 3, 4), dtype="uint32", chunks=(2, 3, 4))
    array[...] = 7
    assert open_volume(tmp_path / "labels.zarr")[1, 2, 3] == 7


def test_a_store_path_that_is_a_file_is_refused_and_left_alone(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.write_text("someone's file")
    with pytest.raises(StoreNotFoundError, match="is a file, not a store folder"):
        Ingestor(str(occupied), 0).write(1, "b", np.zeros((1, 3), np.int64))
    with pytest.raises(StoreNotFoundError, match="is a file, not a store folder"):
        Query(str(occupied))
    assert occupied.read_text() == "someone's file"
