"""Face detection with dlib's frontal HOG detector, the one FF++'s official code uses.

Used where no mask locates the face: originals with no fake at hand while building, and every
frame of a user's own video at prediction time.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _detector():
    # Imported and built on first use: loading dlib costs time nobody should pay at import.
    import dlib

    return dlib.get_frontal_face_detector()


def detect_faces(frame_rgb: np.ndarray, upsample: int = 0) -> list[tuple[int, int, int, int]]:
    """Finds frontal faces in a frame.

    Args:
      frame_rgb: uint8 [H, W, 3] RGB frame.
      upsample: times dlib upsamples the image first (finds smaller faces, ~4x slower each).

    Returns:
      Face boxes `(x0, y0, x1, y1)` (x1, y1 exclusive), clipped to the frame, largest area
      first; empty if there is none.
    """
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(
            f"detect_faces needs a uint8 [H, W, 3] RGB frame, got {frame_rgb.dtype} "
            f"{frame_rgb.shape}"
        )
    height, width = frame_rgb.shape[:2]
    boxes = []
    for rect in _detector()(np.ascontiguousarray(frame_rgb), upsample):
        x0, y0 = max(rect.left(), 0), max(rect.top(), 0)
        x1, y1 = min(rect.right() + 1, width), min(rect.bottom() + 1, height)
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1, y1))
    boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return boxes
