"""Square face crops: window from a face box, clamping to the frame, identical image/mask crops.

Boxes and windows are `(x0, y0, x1, y1)` in pixel-edge coordinates: x1 and y1 are exclusive,
so a window's side is `x1 - x0`.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Crop:
    """A face crop and where it came from.

    Attributes:
      image: uint8 [S, S, 3] resized crop.
      mask: uint8 [S, S] resized crop of the mask (nearest neighbour), or None.
      crop_box: the square window centred on the face box, before clamping.
      clamped_box: the window actually cut out (shifted inside the frame, or covering it
        with padding when it is larger than the frame).
    """

    image: np.ndarray
    mask: np.ndarray | None
    crop_box: tuple[int, int, int, int]
    clamped_box: tuple[int, int, int, int]


def square_window(box, scale: float) -> tuple[int, int, int, int]:
    """The square of side `scale` x the box's longer side, centred on the box.

    Args:
      box: face box `(x0, y0, x1, y1)`.
      scale: side multiplier (1.3 in FF++).

    Returns:
      `(x0, y0, x1, y1)` of the square; it may extend past the frame.
    """
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty face box {tuple(box)}")
    if scale <= 0:
        raise ValueError(f"crop scale must be > 0, got {scale}")
    side = max(1, int(math.floor(scale * max(x1 - x0, y1 - y0) + 0.5)))
    sx = int(math.floor((x0 + x1 - side) / 2 + 0.5))
    sy = int(math.floor((y0 + y1 - side) / 2 + 0.5))
    return sx, sy, sx + side, sy + side


def _clamp_start(start: int, side: int, length: int) -> int:
    # Allowed starts: inside the frame when the side fits, else covering the whole frame
    # (the rest is padding); one rule for both cases.
    lo, hi = sorted((0, length - side))
    return min(max(start, lo), hi)


def clamp_window(window, height: int, width: int) -> tuple[int, int, int, int]:
    """Shifts a square window inside a frame, or over it when the side exceeds the frame.

    Args:
      window: `(x0, y0, x1, y1)` from `square_window`.
      height: frame height.
      width: frame width.

    Returns:
      The shifted window (same side).
    """
    x0, y0, x1, y1 = window
    side = x1 - x0
    sx = _clamp_start(x0, side, width)
    sy = _clamp_start(y0, side, height)
    return sx, sy, sx + side, sy + side


def cut_window(array: np.ndarray, window) -> np.ndarray:
    """Cuts `window` out of an image or mask, zero-padding what lies outside it.

    Args:
      array: [H, W] or [H, W, C].
      window: `(x0, y0, x1, y1)`.

    Returns:
      [y1 - y0, x1 - x0, ...] array of the same dtype.
    """
    x0, y0, x1, y1 = window
    height, width = array.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + array.shape[2:], dtype=array.dtype)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = array[iy0:iy1, ix0:ix1]
    return out


def crop_face(
    image: np.ndarray, mask: np.ndarray | None, box, scale: float, size: int
) -> Crop:
    """Crops the same square window from a frame and its mask and resizes both.

    Args:
      image: uint8 [H, W, 3] frame.
      mask: uint8 [H, W] 0/1 mask of the same frame, or None.
      box: face box `(x0, y0, x1, y1)` in frame pixels.
      scale: crop side as a multiple of the box's longer side.
      size: output side in pixels.

    Returns:
      A `Crop`; the image is resized with area averaging when shrinking and bilinear when
      enlarging, the mask with nearest neighbour so it stays 0/1.
    """
    height, width = image.shape[:2]
    if mask is not None and mask.shape[:2] != (height, width):
        raise ValueError(f"mask {mask.shape[:2]} and frame {(height, width)} differ in size")
    window = square_window(box, scale)
    clamped = clamp_window(window, height, width)
    side = clamped[2] - clamped[0]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    out_image = cv2.resize(cut_window(image, clamped), (size, size), interpolation=interpolation)
    out_mask = None
    if mask is not None:
        out_mask = cv2.resize(
            cut_window(mask, clamped), (size, size), interpolation=cv2.INTER_NEAREST
        )
    return Crop(out_image, out_mask, window, clamped)
