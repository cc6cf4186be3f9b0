"""Tests for ffjax.data.masks: binarising, sanity checks, derived masks and boxes."""

import numpy as np

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
    derived = masks.derive_mask(fake, original, threshold=20)
    truth = np.zeros((64, 64), np.uint8)
    truth[16:44, 20:48] = 1
    iou = (derived & truth).sum() / (derived | truth).sum()
    assert iou > 0.9
    assert masks.mask_box(derived) == (20, 16, 48, 44)
