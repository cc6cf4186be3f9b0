"""Writing and breaking video files: the generator's writer and helpers for bad-input tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

# FF++ encodes its c23 and c40 levels with x264 at CRF 23 and 40, each video on its own (a fake
# and its original carry different compression noise). The opencv wheel encodes no H.264, so
# `crf` goes through the ffmpeg binary imageio-ffmpeg ships (with libx264); OpenCV decodes it.
# 'mp4v' (MPEG-4 Part 2) is the lossy codec the opencv wheel writes itself (mask videos).
# FFV1 in an mp4 container is lossless and decodes with the same OpenCV build, which mirrors
# FF++'s raw level (x264 CRF 0, lossless).
LOSSY_CODEC = "mp4v"
LOSSLESS_CODEC = "FFV1"
H264_CODEC = "libx264"


def _as_rgb_frames(frames, path: Path) -> np.ndarray:
    """Checks frames and returns them as uint8 [T, H, W, 3]; grey frames are replicated."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8, got {frames.dtype}.")
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(
            f"{path}: frames must be uint8 [T, H, W, 3] RGB or [T, H, W] grey with T >= 1, "
            f"got shape {frames.shape}."
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        # OpenCV's FFmpeg writer silently drops the last odd row/column.
        raise ValueError(f"{path}: frame size {width}x{height} must be even in both dimensions.")
    return frames


def _write_h264(path: Path, frames: np.ndarray, fps: float, crf: int) -> Path:
    """x264 at a constant rate factor, yuv420p (what FF++'s c23/c40 videos are)."""
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise ImportError(
            f"{path}: writing H.264 (crf={crf}) needs the ffmpeg binary of imageio-ffmpeg "
            "(a dependency of ffjax): pip install imageio-ffmpeg."
        ) from e
    height, width = frames.shape[1:3]
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}",
        "-i", "-", "-c:v", H264_CODEC, "-preset", "medium", "-crf", str(int(crf)),
        "-pix_fmt", "yuv420p", "-threads", "1", str(path),
    ]
    done = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    if done.returncode != 0:
        raise OSError(f"{path}: ffmpeg failed ({' '.join(command)}): {done.stderr.decode()[-2000:]}")
    return path


def write_video(
    path, frames_rgb, fps: float = 10.0, *, lossless: bool = False, crf: int | None = None
) -> Path:
    """Writes frames to an mp4 file the way the generator does.

    Args:
      path: output file; parent folders are created.
      frames_rgb: uint8 [T, H, W, 3] RGB frames (or [T, H, W] grey), H and W even.
      fps: frame rate stored in the container.
      lossless: FFV1 (exact pixels) instead of the lossy 'mp4v' codec.
      crf: H.264 (x264) at this constant rate factor instead (FF++: 23 for c23, 40 for c40).

    Returns:
      The path written.
    """
    path = Path(path)
    frames = _as_rgb_frames(frames_rgb, path)
    if not fps > 0:
        raise ValueError(f"{path}: fps must be > 0, got {fps}.")
    if lossless and crf is not None:
        raise ValueError(f"{path}: lossless and crf={crf} exclude each other.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if crf is not None:
        return _write_h264(path, frames, fps, crf)
    height, width = frames.shape[1:3]
    codec = LOSSLESS_CODEC if lossless else LOSSY_CODEC
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV could not open a '{codec}' video writer for it.")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def read_video(path) -> np.ndarray:
    """Decodes every frame of a video (a plain reference reader for tests).

    Args:
      path: the video file.

    Returns:
      uint8 [T, H, W, 3] RGB frames.
    """
    path = Path(path)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"{path}: OpenCV cannot open it.")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise OSError(f"{path}: no frame decodes.")
    return np.stack(frames)


CORRUPTIONS = ("empty", "truncated", "garbage")


def corrupt_file(path, kind: str = "truncated", *, keep_fraction: float = 0.3) -> Path:
    """Breaks a file in place the ways downloads break, for bad-input tests.

    Args:
      path: an existing file (typically a video of a generated tree).
      kind: 'empty' leaves a zero-byte file; 'truncated' keeps only the first
        `keep_fraction` of its bytes (an interrupted download); 'garbage' overwrites it with
        deterministic random bytes of the same length (not a video at all).
      keep_fraction: fraction of bytes kept by 'truncated', in (0, 1).

    Returns:
      The path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file to corrupt.")
    if kind not in CORRUPTIONS:
        raise ValueError(f"kind={kind!r} is not one of {CORRUPTIONS}.")
    data = path.read_bytes()
    if kind == "empty":
        data = b""
    elif kind == "truncated":
        if not 0.0 < keep_fraction < 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1), got {keep_fraction}.")
        data = data[: max(1, int(len(data) * keep_fraction))]
    else:
        data = np.random.default_rng(len(data)).integers(0, 256, len(data), np.uint8).tobytes()
    path.write_bytes(data)
    return path


def truncate_mask_video(path, num_frames: int, fps: float = 10.0) -> Path:
    """Rewrites a (mask) video keeping only its first frames, as seen in some FF++ masks.

    Args:
      path: an existing video, e.g. `tree.mask_path(method, name)`.
      num_frames: frames to keep (>= 1, fewer than it has).
      fps: frame rate of the rewritten file.

    Returns:
      The path.
    """
    path = Path(path)
    frames = read_video(path)
    if not 1 <= num_frames < len(frames):
        raise ValueError(f"{path}: num_frames must be in [1, {len(frames) - 1}], got {num_frames}.")
    return write_video(path, frames[:num_frames], fps)
