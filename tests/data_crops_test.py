"""Tests for ffjax.data.crops: exact window geometry, clamping, padding, identical crops."""

import numpy as np
import pytest

from ffjax.data import crops


def test_square_window_exact_geometry():
    # 40x20 box centred at (30, 40): side = 1.3 * 40 = 52, centred -> starts at 30 - 26, 40 - 26.
    assert crops.square_window((10, 30, 50, 50), 1.3) == (4, 14, 56, 66)
    # Odd side: 1.3 * 25 = 32.5 rounds to 33; centre 12.5 -> start 12.5 - 16.5 = -4.
    assert crops.square_window((0, 0, 25, 10), 1.3) == (-4, -11, 29, 22)
    with pytest.raises(ValueError, match="empty face box"):
        crops.square_window((5, 5, 5, 9), 1.3)


def test_clamp_shifts_inside_or_covers_frame():
    # Fits: shifted right/down into the frame, side kept.
    assert crops.clamp_window((-4, -11, 29, 22), 48, 64) == (0, 0, 33, 33)
    # Past the bottom-right corner: shifted back.
    assert crops.clamp_window((50, 40, 80, 70), 48, 64) == (34, 18, 64, 48)
    # Taller than the frame (side 60 > height 48): covers it, padding split by the box position.
    assert crops.clamp_window((2, -30, 62, 30), 48, 64) == (2, -12, 62, 48)


def test_crop_face_cuts_image_and_mask_identically():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    mask[20:30, 25:35] = 1
    # Box 20x20 at (20..40, 15..35): side 26 -> window (17, 12, 43, 38); resize to 26 = identity.
    crop = crops.crop_face(image, mask, (20, 15, 40, 35), 1.3, 26)
    assert crop.crop_box == (17, 12, 43, 38) == crop.clamped_box
    np.testing.assert_array_equal(crop.image, image[12:38, 17:43])
    np.testing.assert_array_equal(crop.mask, mask[12:38, 17:43])
    assert crop.mask.sum() == 100


def test_crop_face_pads_when_window_exceeds_frame_and_mask_stays_binary():
    image = np.full((20, 30, 3), 200, np.uint8)
    mask = np.ones((20, 30), np.uint8)
    crop = crops.crop_face(image, mask, (5, 0, 25, 20), 1.3, 13)
    assert crop.crop_box == (2, -3, 28, 23)
    assert crop.clamped_box == (2, -3, 28, 23)
    assert crop.image.shape == (13, 13, 3) and crop.mask.shape == (13, 13)
    assert set(np.unique(crop.mask)) == {0, 1}
    # Rows outside the frame are padding (zeros) in both the image and the mask.
    assert crop.image[0].max() == 0 and crop.mask[0].max() == 0
    assert crop.image[6].min() == 200 and crop.mask[6].min() == 1


def test_crop_face_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="differ in size"):
        crops.crop_face(np.zeros((10, 10, 3), np.uint8), np.zeros((9, 10), np.uint8),
                        (1, 1, 5, 5), 1.3, 8)
