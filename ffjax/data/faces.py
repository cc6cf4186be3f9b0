"""Face detection with dlib's frontal HOG detector, the one FF++'s official code uses.

One setting for every user (the builder's fallback and `ffjax predict`): `UPSAMPLE = 1`, as
FF++'s official detect_from_video.py, which finds faces down to ~40 px wide (upsample 0
misses everything under ~80 px). On a video, `FaceTracker` runs that full-frame detection on
every k-th frame only and, between, re-detects each known face inside a small window around
it, scaled so the face is ~`TRACK_FACE_PX` wide: full detection costs ~0.8 s on a 1080p
frame, a tracked face a few ms (measured by `ffjax bench --face_detection`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

UPSAMPLE = 1
# Full-frame detections on a video: every this many frames (2 s at 25 fps). A full 1080p scan
# for 40-px faces costs ~0.65 s and a tracked face ~2 ms, so at 25 the keyframes alone take
# ~27 ms of every frame and six tracked faces fall under 25 frames/s per core; at 50 they hold
# ~30 (`ffjax bench --face_detection`). The price: a face that enters between keyframes is
# found up to 49 frames late (a lost face triggers a full detection on the next frame).
KEYFRAME_EVERY = 50
# Tracking: the search window is this many times the face's side, resized so the face is
# about TRACK_FACE_PX wide (dlib's frontal detector finds faces from ~80 px without upsampling).
TRACK_WINDOW = 1.5
TRACK_FACE_PX = 85


@functools.cache
def _detector():
    # Imported and built on first use: loading dlib costs time nobody should pay at import.
    import dlib

    return dlib.get_frontal_face_detector()


def grey(frame_rgb: np.ndarray) -> np.ndarray:
    """The grey image dlib is run on (FF++'s detect_from_video.py does the same).

    dlib's HOG takes the strongest gradient over the channels of a colour image; on one grey
    channel it finds the same faces in 2/3 of the time (0.64 s against 0.99 s on a 1080p frame,
    upsample 1).

    Args:
      frame_rgb: uint8 [H, W, 3] RGB frame, or an [H, W] grey one (returned as it is).

    Returns:
      uint8 [H, W], C-contiguous.
    """
    if frame_rgb.dtype != np.uint8 or not (
        frame_rgb.ndim == 2 or (frame_rgb.ndim == 3 and frame_rgb.shape[2] == 3)
    ):
        raise ValueError(
            f"face detection needs a uint8 [H, W, 3] RGB or [H, W] grey frame, got "
            f"{frame_rgb.dtype} {frame_rgb.shape}"
        )
    if frame_rgb.ndim == 2:
        return np.ascontiguousarray(frame_rgb)
    return cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)


def detect_faces(frame_rgb: np.ndarray, upsample: int = UPSAMPLE) -> list[tuple[int, int, int, int]]:
    """Finds frontal faces in a frame.

    Args:
      frame_rgb: uint8 [H, W, 3] RGB frame (or its `grey` image).
      upsample: times dlib upsamples the image first (finds smaller faces, ~4x slower each).

    Returns:
      Face boxes `(x0, y0, x1, y1)` (x1, y1 exclusive), clipped to the frame, largest area
      first; empty if there is none.
    """
    image = grey(frame_rgb)
    height, width = image.shape[:2]
    boxes = []
    for rect in _detector()(image, upsample):
        x0, y0 = max(rect.left(), 0), max(rect.top(), 0)
        x1, y1 = min(rect.right() + 1, width), min(rect.bottom() + 1, height)
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1, y1))
    boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return boxes


# `detect_largest` looks at a frame shrunk by these factors first (coarsest first).
COARSE_SCALES = (4, 2)
# ... only while the shrunk frame's short side keeps at least this many pixels.
MIN_COARSE_SIDE = 200


def detect_largest(frame_rgb: np.ndarray, upsample: int = UPSAMPLE) -> tuple[int, int, int, int] | None:
    """The largest frontal face of a frame, or None: `detect_faces(...)[0]` for a fraction of
    the time on large frames.

    dlib's cost grows with the pixels scanned, and a face found on a frame shrunk by k is one
    at least k times dlib's smallest face: it is larger than every face that a finer scan
    alone could add. So the frame is scanned coarsest first (shrunk 4x, then 2x, then whole),
    stopping at the first scale that finds a face, whose box is then re-detected at full
    resolution around it (`detect_near`, the tracker's step), so it is framed as the tracked
    frames around it are. On a 1080p frame (measured): a 200 px face costs 41 ms instead of
    647 ms, a 100 px face 220 ms instead of 585; a frame whose largest face is 48 px pays the
    coarse scans on top of the full one (878 ms instead of 565).

    Args:
      frame_rgb: uint8 [H, W, 3] RGB frame (or its `grey` image).
      upsample: as `detect_faces`, at every scale.

    Returns:
      `(x0, y0, x1, y1)` of the largest face, or None when there is none.
    """
    image = grey(frame_rgb)
    height, width = image.shape[:2]
    for k in COARSE_SCALES:
        if min(height, width) // k < MIN_COARSE_SIDE:
            continue
        small = cv2.resize(image, (width // k, height // k), interpolation=cv2.INTER_AREA)
        found = detect_faces(small, upsample)
        if found:
            x0, y0, x1, y1 = found[0]
            coarse = (x0 * k, y0 * k, min(width, x1 * k), min(height, y1 * k))
            return detect_near(image, coarse) or coarse
    found = detect_faces(image, upsample)
    return found[0] if found else None


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detect_near(image: np.ndarray, box, window: float = TRACK_WINDOW) -> tuple[int, int, int, int] | None:
    """Re-detects a known face in a window around where it was.

    The window is resized so the face is ~`TRACK_FACE_PX` wide, where dlib finds it without
    upsampling (upsample 1 if not): a few ms instead of a full-frame scan.

    Args:
      image: uint8 [H, W] grey frame (`grey`) or RGB frame.
      box: the face's box `(x0, y0, x1, y1)` in an earlier frame.
      window: the search window's side as a multiple of the box's longer side.

    Returns:
      The found box overlapping `box` most (IoU > 0.1), in frame pixels, or None.
    """
    image = grey(image)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    half = window * side / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    wx0, wy0 = max(0, int(cx - half)), max(0, int(cy - half))
    wx1, wy1 = min(width, int(math.ceil(cx + half))), min(height, int(math.ceil(cy + half)))
    if wx1 - wx0 < 8 or wy1 - wy0 < 8:
        return None
    scale = TRACK_FACE_PX / side
    window = image[wy0:wy1, wx0:wx1]
    size = (max(1, round((wx1 - wx0) * scale)), max(1, round((wy1 - wy0) * scale)))
    window = cv2.resize(window, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    found = detect_faces(window, upsample=0)
    if not found:
        found = detect_faces(window, upsample=1)  # a face that shrank below ~80 px here
    if not found:
        return None
    mapped = [
        (wx0 + int(a / scale), wy0 + int(b / scale), min(width, wx0 + int(math.ceil(c / scale))), min(height, wy0 + int(math.ceil(d / scale))))
        for a, b, c, d in found
    ]
    best = max(mapped, key=lambda m: _iou(m, box))
    return best if _iou(best, box) > 0.1 else None


@dataclasses.dataclass
class FaceTracker:
    """Faces of consecutive video frames: full detection every `keyframe_every` frames (and
    whenever a face is lost), each known face re-detected near where it was in between.

    A face that appears between keyframes is found at the next keyframe (at most
    `keyframe_every - 1` frames late); a face that is lost triggers a full detection on the
    next frame. `keyframe_every=1` detects every frame in full.
    """

    keyframe_every: int = KEYFRAME_EVERY
    upsample: int = UPSAMPLE
    frames: int = 0
    full_detections: int = 0
    _boxes: list = dataclasses.field(default_factory=list)
    _force_full: bool = True

    def __post_init__(self):
        if self.keyframe_every < 1:
            raise ValueError(f"keyframe_every={self.keyframe_every} must be >= 1.")

    def __call__(self, frame_rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The faces of the next frame, largest first (as `detect_faces`)."""
        full = self._force_full or not self._boxes or self.frames % self.keyframe_every == 0
        self.frames += 1
        image = grey(frame_rgb)  # once per frame, for every window
        if full:
            self.full_detections += 1
            self._boxes = detect_faces(image, self.upsample)
            self._force_full = False
            return list(self._boxes)
        tracked = [detect_near(image, box) for box in self._boxes]
        self._force_full = any(t is None for t in tracked)
        self._boxes = [t for t in tracked if t is not None]
        self._boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return list(self._boxes)
