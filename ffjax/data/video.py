"""Video decoding: frame counts, evenly spaced frame indices, and reading only those frames."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np


class VideoError(RuntimeError):
    """A video file cannot be opened or holds no frames."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video.

    Attributes:
      num_frames: frame count from the container (may overstate what decodes).
      height: frame height in pixels.
      width: frame width in pixels.
      fps: frames per second (0.0 when the container does not say).
    """

    num_frames: int
    height: int
    width: int
    fps: float


def _open(path: Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: zero-byte file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: OpenCV cannot open it (corrupt or unsupported codec)")
    return cap


def probe_video(path: str | Path) -> VideoInfo:
    """Reads a video's frame count, size and frame rate without decoding frames.

    Args:
      path: the video file.

    Returns:
      Its `VideoInfo`. Raises `VideoError` if it cannot be opened or reports no frames.
    """
    cap = _open(Path(path))
    try:
        info = VideoInfo(
            num_frames=int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
        )
    finally:
        cap.release()
    if info.num_frames <= 0 or info.height <= 0 or info.width <= 0:
        raise VideoError(f"{path}: reports {info.num_frames} frames of {info.width}x{info.height}")
    return info


def sample_frame_indices(num_frames: int, count: int) -> np.ndarray:
    """`count` frame indices evenly spaced over a video, each at the centre of its interval.

    Centring keeps the first and last frames (fades, a last frame that a shorter fake or
    mask may lack) out of the sample while spacing stays even.

    Args:
      num_frames: frames in the video (> 0).
      count: how many to take (> 0); all frames when the video has fewer.

    Returns:
      Sorted, unique int64 indices in [0, num_frames).
    """
    if num_frames <= 0 or count <= 0:
        raise ValueError(f"need num_frames > 0 and count > 0, got {num_frames}, {count}")
    if count >= num_frames:
        return np.arange(num_frames, dtype=np.int64)
    return ((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)


def read_frames(path: str | Path, indices, rgb: bool = True) -> dict[int, np.ndarray]:
    """Decodes only the requested frames of a video, reading it once from the start.

    Skipped frames are `grab()`bed (demuxed and decoded but never converted or copied),
    which is exact where seeking with CAP_PROP_POS_FRAMES is not for inter-coded mp4.

    Args:
      path: the video file.
      indices: frame indices to return (any order, duplicates ignored).
      rgb: return RGB (True) or OpenCV's BGR (False).

    Returns:
      `{index: uint8 [H, W, 3] frame}` for every requested index that decoded; indices past
      the video's real end are absent, so callers can count them.
    """
    wanted = sorted({int(i) for i in indices})
    frames: dict[int, np.ndarray] = {}
    if not wanted:
        return frames
    cap = _open(Path(path))
    try:
        position = 0
        for index in wanted:
            while position < index:
                if not cap.grab():
                    return frames
                position += 1
            ok, frame = cap.read()
            position += 1
            if not ok or frame is None:
                return frames
            frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame
    finally:
        cap.release()
    return frames
