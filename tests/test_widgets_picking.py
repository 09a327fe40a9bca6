"""A large cloud is drawn in pieces of neighbouring points, and a double-click on any piece names the right point."""

from __future__ import annotations

import numpy as np
import pytest
from pocaduck.widgets import PointCloudViewer, _pieces

from pocaduck import Ingestor, Query, consolidate, create_store

VOXEL = np.array([4.0, 4.0, 40.0])
LABEL = 2**64 - 2


@pytest.fixture(scope="module")
def query(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("picking") / "store")
    create_store(store, columns=["x", "y", "z", "supervoxel"], voxel_size=VOXEL.tolist())
    rng = np.random.default_rng(5)
    trunk = np.cumsum(rng.integers(-3, 4, size=(1000, 3)), axis=0) + 10_000  # a neurite-like path
    with Ingestor(store, "w0") as ingestor:
        for block, part in enumerate(np.array_split(trunk, 4)):
            ingestor.write(LABEL, f"b{block}", np.hstack([part, np.arange(len(part))[:, None] + 100 * block]))
        ingestor.write(7, "b0", rng.integers(0, 50, size=(30, 4)))
    consolidate(store)
    with Query(store) as query:
        yield query


@pytest.fixture
def viewer(query, monkeypatch):
    monkeypatch.setattr(_pieces, "PIECE_POINTS", 96)  # 1,000 points: 11 pieces
    monkeypatch.setattr(_pieces, "WHOLE_POINTS", 500)  # label 7's 30 points: one
    viewer = PointCloudViewer(query)
    viewer.show([LABEL, 7])
    return viewer


def piece_positions(piece) -> np.ndarray:
    return np.asarray(piece.geometry.attributes["position"].array)


def test_a_large_cloud_is_cut_into_compact_pieces_holding_each_point_once(viewer):
    shown = viewer._shown[LABEL]
    pieces = [piece for piece, _rows in shown.pieces]
    assert tuple(shown.cloud.children) == tuple(pieces) and len(pieces) == 11
    assert all(len(piece_positions(piece)) <= 96 for piece in pieces)
    every = np.concatenate([piece_positions(piece) for piece in pieces])
    assert sorted(map(tuple, every.tolist())) == sorted(map(tuple, viewer.positions(LABEL).tolist()))
    # Neighbours together: each piece spans a small part of the cloud's extent.
    whole = np.ptp(viewer.positions(LABEL), axis=0).prod()
    assert np.mean([np.ptp(piece_positions(piece), axis=0).prod() for piece in pieces]) < whole / 4
    assert viewer._shown[7].cloud is viewer._shown[7].pieces[0][0]  # a small cloud stays one Points
    assert viewer.shown_points == 1030 and "showing 1,030 of 1,030 points" in viewer._status.value


def test_a_pick_on_any_piece_names_the_point_drawn_there(viewer, query):
    every = {tuple(row) for row in query.get_points(LABEL).tolist()}
    for piece, _rows in viewer._shown[LABEL].pieces:
        for index in (0, len(piece_positions(piece)) - 1):
            with viewer._picker.hold_trait_notifications():  # what pythreejs's Picker sends after a double-click
                viewer._picker.object, viewer._picker.index = piece, index
            drawn = piece_positions(piece)[index] / VOXEL + viewer.origin
            picked = viewer.picked
            assert picked["label"] == LABEL and np.allclose(picked["point"], drawn, atol=1e-3)
            assert (*picked["point"], picked["supervoxel"]) in every  # the very row, its extra column too


def test_size_and_visibility_reach_every_piece(viewer):
    viewer.point_size = 5.0
    assert all(piece.material.size == 5.0 for piece, _rows in viewer._shown[LABEL].pieces)
    viewer.set_visible(LABEL, False)
    assert viewer._shown[LABEL].cloud.visible is False
    assert viewer._shown[LABEL].cloud not in viewer._cloud_group.children  # neither drawn nor picked
    assert viewer.shown_points == 30
