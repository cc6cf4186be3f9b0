"""Tests for ffjax.data.faces: the dlib detector wrapper on a real photo, one setting, the tracker."""

import inspect

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
        faces.detect_faces(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        faces.detect_faces(np.zeros((10, 10, 4), np.uint8))


def test_grey_frames_find_the_faces_colour_frames_do():
    """dlib runs on the grey image (as FF++'s detect_from_video.py): the same faces, faster."""
    from skimage import data

    image = data.astronaut()
    assert faces.detect_faces(image) == faces.detect_faces(faces.grey(image))
    assert len(faces.detect_faces(image)) == 1


def test_one_detector_setting_for_builder_and_predict():
    from ffjax.inference import predict

    assert faces.UPSAMPLE == 1 and predict.DEFAULT_UPSAMPLE == faces.UPSAMPLE
    assert inspect.signature(faces.detect_faces).parameters["upsample"].default == faces.UPSAMPLE


def test_tracker_finds_what_full_detection_finds_with_few_full_detections():
    from ffjax.bench import faces as faces_bench

    frames, boxes, _ = faces_bench.synthetic_clip(12, widths=(40, 80), size=(640, 360), seed=1)
    tracker = faces.FaceTracker(keyframe_every=5)
    tracked = [tracker(f) for f in frames]
    assert tracker.full_detections == 3  # frames 0, 5 and 10: no face was lost in between
    full = [faces.detect_faces(f) for f in frames]
    np.testing.assert_array_equal(faces_bench._score(tracked, boxes), faces_bench._score(full, boxes))
    assert faces_bench._score(tracked, boxes).tolist() == [1.0, 1.0]
    for a, b in zip(tracked, full):  # the same faces, boxes within a few pixels
        assert len(a) == len(b)
        for x, y in zip(sorted(a), sorted(b)):
            assert max(abs(p - q) for p, q in zip(x, y)) <= 0.25 * (y[2] - y[0])


def test_a_lost_face_triggers_a_full_detection_on_the_next_frame():
    from ffjax.bench import faces as faces_bench

    frames, _, _ = faces_bench.synthetic_clip(4, widths=(80,), size=(480, 360), seed=2)
    tracker = faces.FaceTracker(keyframe_every=100)
    assert len(tracker(frames[0])) == 1
    blank = np.full_like(frames[1], 128)
    assert tracker(blank) == [] and tracker.full_detections == 1  # tracked, not found
    assert len(tracker(frames[2])) == 1 and tracker.full_detections == 2  # found again in full
    with pytest.raises(ValueError, match="keyframe_every"):
        faces.FaceTracker(keyframe_every=0)


@pytest.mark.parametrize("widths", [(48, 200), (48,), (100,)])
def test_detect_largest_finds_the_largest_face_coarse_to_fine_as_a_full_scan_does(widths):
    """1080p: a 200 px face is found on the 4x-shrunk frame (and re-framed at full resolution),
    a 48 px one only by the full scan; either way the box is the full scan's largest face."""
    from ffjax.bench import faces as faces_bench

    frames, boxes, _ = faces_bench.synthetic_clip(1, widths=widths, size=(1920, 1080), seed=3)
    full = faces.detect_faces(frames[0])
    largest = faces.detect_largest(frames[0])
    assert full and largest is not None
    side = full[0][2] - full[0][0]
    assert max(abs(p - q) for p, q in zip(largest, full[0])) <= 0.25 * side
    truth = boxes[0][int(np.argmax(widths))]
    assert faces._iou(largest, truth) > 0.4
    assert faces.detect_largest(np.full((1080, 1920, 3), 128, np.uint8)) is None
