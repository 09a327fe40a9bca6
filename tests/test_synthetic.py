"""The demo volume: deterministic, neuron-like, with the label ids real segmentations have."""

from __future__ import annotations

import numpy as np

from pocaduck import make_demo_volume


def test_same_seed_gives_the_same_volume_and_another_seed_does_not():
    first = make_demo_volume((40, 48, 56), seed=5)
    assert np.array_equal(first, make_demo_volume((40, 48, 56), seed=5))
    assert not np.array_equal(first, make_demo_volume((40, 48, 56), seed=6))


def test_labels_are_uint64_over_background_with_ids_above_two_to_the_63():
    volume = make_demo_volume(64, seed=0)
    labels = np.unique(volume)
    assert volume.dtype == np.uint64 and volume.shape == (64, 64, 64)
    assert labels[0] == 0
    assert (labels > 2**63).sum() >= 5
    assert 20 <= len(labels) - 1 <= 60
    assert 0.1 < (volume != 0).mean() < 0.6


def test_neurites_touch_each_other_without_background_between():
    volume = make_demo_volume(64, seed=0)
    left, right = volume[:, :, :-1], volume[:, :, 1:]
    touching = (left != right) & (left != 0) & (right != 0)
    assert touching.sum() > 100


def test_requested_label_count_and_non_cubic_shape():
    volume = make_demo_volume((30, 70, 50), n_labels=12, seed=3)
    assert volume.shape == (30, 70, 50)
    assert len(np.unique(volume)) - 1 <= 12
