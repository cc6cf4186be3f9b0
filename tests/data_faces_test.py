"""Tests for ffjax.data.faces: dlib detector wrapper on a real photo."""

import numpy as np
import pytest
import skimage.data

from ffjax.data import faces


def test_detects_the_astronaut_face_largest_first():
    image = skimage.data.astronaut()  # 512x512 RGB, one face near (220, 125)
    boxes = faces.detect_faces(image)
    assert boxes, "dlib found no face in skimage's astronaut"
    x0, y0, x1, y1 = boxes[0]
    assert 150 < (x0 + x1) / 2 < 290 and 60 < (y0 + y1) / 2 < 200
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)


def test_no_face_in_a_flat_frame_and_bad_input_rejected():
    assert faces.detect_faces(np.full((120, 160, 3), 128, np.uint8)) == []
    with pytest.raises(ValueError, match="RGB"):
        faces.detect_faces(np.zeros((10, 10), np.uint8))
