"""Tests for ffjax.data.video: sampling and decoding only the requested frames."""

import cv2
import numpy as np
import pytest

from ffjax.data import video


def _write_numbered_video(path, num_frames, height=32, width=48):
    """A video whose frame i is uniformly grey level 10 * i (so each frame is identifiable)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    for i in range(num_frames):
        writer.write(np.full((height, width, 3), 10 * i, np.uint8))
    writer.release()
    return path


def test_sample_frame_indices_even_and_centred():
    np.testing.assert_array_equal(video.sample_frame_indices(100, 4), [12, 37, 62, 87])
    np.testing.assert_array_equal(video.sample_frame_indices(3, 8), [0, 1, 2])
    idx = video.sample_frame_indices(301, 32)
    assert len(np.unique(idx)) == 32 and idx.min() > 0 and idx.max() < 300
    with pytest.raises(ValueError):
        video.sample_frame_indices(0, 4)


def test_probe_and_read_only_requested_frames(tmp_path):
    path = _write_numbered_video(tmp_path / "v.mp4", 20)
    info = video.probe_video(path)
    assert (info.num_frames, info.height, info.width) == (20, 32, 48)
    frames = video.read_frames(path, [17, 3, 3, 9])
    assert sorted(frames) == [3, 9, 17]
    for index, frame in frames.items():
        assert frame.shape == (32, 48, 3)
        # Lossy mp4: each frame is within a few levels of its own grey and far from neighbours'.
        assert abs(float(frame.mean()) - 10 * index) < 4


def test_indices_past_the_end_are_absent(tmp_path):
    path = _write_numbered_video(tmp_path / "short.mp4", 5)
    frames = video.read_frames(path, [1, 4, 5, 12])
    assert sorted(frames) == [1, 4]


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 10])
def test_unreadable_files_raise_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(video.VideoError, match="bad.mp4"):
        video.probe_video(path)
    with pytest.raises(video.VideoError, match="bad.mp4"):
        video.read_frames(path, [0])


def test_missing_file_raises(tmp_path):
    with pytest.raises(video.VideoError, match="no such file"):
        video.probe_video(tmp_path / "nope.mp4")
