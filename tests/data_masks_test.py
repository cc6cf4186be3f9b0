"""Tests for ffjax.data.masks: binarising, sanity checks, derived masks and boxes."""

import numpy as np
import pytest

from ffjax.data import masks


def test_binarize_uses_brightest_channel_and_threshold():
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[0, 0] = (0, 0, 40)  # dim but coloured: on
    frame[1, 1] = (12, 12, 12)  # mp4 ringing: off at threshold 15
    frame[2, 2] = (90, 90, 90)  # NeuralTextures-style grey shading: on
    out = masks.binarize_mask(frame, 15)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(np.argwhere(out), [[0, 0], [2, 2]])


def test_check_mask_flags_empty_and_inverted():
    mask = np.zeros((20, 20), np.uint8)
    assert masks.check_mask(mask) == masks.MASK_EMPTY
    mask[5:10, 5:10] = 1
    assert masks.check_mask(mask) is None
    assert masks.check_mask(np.ones_like(mask)) == masks.MASK_ALL_ON
    # An inverted rectangle is only ~75 % on, but covers the whole frame outline.
    rect = np.zeros((20, 20), np.uint8)
    rect[5:15, 7:15] = 1
    assert masks.check_mask(rect) is None
    assert masks.check_mask(1 - rect) == masks.MASK_ALL_ON
    # A face region touching one edge is fine.
    rect[5:20, 0:15] = 1
    assert masks.check_mask(rect) is None


def test_mask_box_ignores_specks():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 12:30] = 1
    mask[35, 2] = 1  # a compression speck far away must not stretch the box
    assert masks.mask_box(mask) == (12, 10, 30, 20)
    assert masks.mask_box(np.zeros((5, 5), np.uint8)) is None


def test_derive_mask_recovers_the_changed_region_through_noise():
    rng = np.random.default_rng(0)
    original = rng.integers(60, 200, (64, 64, 3), dtype=np.uint8)
    fake = np.clip(original.astype(int) + rng.integers(-4, 5, original.shape), 0, 255)
    fake = fake.astype(np.uint8)  # re-encoding noise everywhere
    fake[16:44, 20:48] = 255 - original[16:44, 20:48]  # the swapped region
    derived, inside = masks.derive_mask(fake, original, threshold=20)
    assert inside == 1.0  # no face window: nothing is outside
    truth = np.zeros((64, 64), np.uint8)
    truth[16:44, 20:48] = 1
    iou = (derived & truth).sum() / (derived | truth).sum()
    assert iou > 0.9
    assert masks.mask_box(derived) == (20, 16, 48, 44)


def test_derived_mask_is_bounded_to_the_face_window_and_says_how_much_lay_outside():
    """Noise patches away from the face are cut off, and counted: mostly-outside means noise."""
    original = np.full((128, 128, 3), 100, np.uint8)
    fake = original.copy()
    fake[40:60, 40:60] = 160  # the manipulated region, inside the face window
    fake[100:124, 0:40] = 160  # a larger compression patch in the background
    mask, inside = masks.derive_mask(fake, original, 10, face_window=(30, 30, 70, 70))
    assert mask[100:, :40].sum() == 0 and mask[42:58, 42:58].all()  # corners: the opening rounds them
    assert 0.2 < inside < 0.5  # 400 of 1360 pixels: the caller refuses this frame
    only_face, inside = masks.derive_mask(fake, original, 10, face_window=(0, 0, 128, 128))
    assert inside == 1.0 and only_face[102:122, 2:38].all()


def test_diff_thresholds_per_compression():
    assert masks.diff_threshold("c0") == masks.diff_threshold("raw") == masks.DIFF_THRESHOLDS["raw"]
    assert masks.DIFF_THRESHOLDS["raw"] < masks.DIFF_THRESHOLDS["c23"] < masks.DIFF_THRESHOLDS["c40"]
    with pytest.raises(ValueError, match="c99"):
        masks.diff_threshold("c99")
