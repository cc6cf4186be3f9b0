"""Manipulation masks: binarising shipped mask frames, deriving masks, checking them, boxes.

FF++ ships masks as lossy mp4 (NeuralTextures' is a shaded grey render), so a mask frame is
binarised with a small fixed threshold on its brightest channel, then checked for nonsense.
"""

from __future__ import annotations

import cv2
import numpy as np

# Fractions of frame pixels outside which a fake's mask is treated as broken.
MAX_ON_FRACTION = 0.9  # nearly all on: a blank-white mask
MIN_ON_FRACTION = 1e-4  # nothing on: no manipulated pixels to learn from or to box
# A face region may touch a frame edge, never most of the frame's outline; an inverted mask
# (reported in FF++ copies) covers it. The on-fraction alone misses inversions: an inverted
# Deepfakes rectangle is ~85 % on.
MAX_BORDER_ON_FRACTION = 0.5

# Why a mask frame is rejected (manifest reasons).
MASK_EMPTY = "mask_empty"
MASK_ALL_ON = "mask_inverted_or_all_on"
MASK_OUTSIDE_FACE = "derived_mask_outside_face"

# Derived-mask thresholds per compression (|fake - original| on the brightest channel, after a
# 3x3 median), chosen from measurements (docs/protocol.md, "Masks"): raw from official FF++
# example frames (2-3 best: IoU 0.80-0.84 with the shipped Deepfakes mask, 10 gives 0.60);
# c23 and c40 from generated trees whose fake and original were x264-encoded separately
# (`python -m ffjax.bench.derived_masks`): below these, compression noise fires; above, the
# edges of the blend fall off.
DIFF_THRESHOLDS = {"raw": 3, "c23": 8, "c40": 12}
# A derived mask is kept only inside the face's crop window; a frame whose thresholded
# difference lies mostly outside it is compression noise, not a manipulation, and is refused.
MIN_INSIDE_FACE = 0.5


def _max_channel(image: np.ndarray) -> np.ndarray:
    """Per-pixel maximum over channels; numpy's max(axis=-1) over 3 channels is ~20x slower."""
    if image.ndim == 2:
        return image
    out = image[..., 0]
    for c in range(1, image.shape[-1]):
        out = cv2.max(out, image[..., c])
    return out


def binarize_mask(frame: np.ndarray, threshold: int) -> np.ndarray:
    """Binarises a mask frame: a pixel is on where its brightest channel exceeds `threshold`.

    The brightest channel (rather than luma) keeps coloured or dim grey renders on, and a
    threshold well above 0 drops mp4 ringing around the region.

    Args:
      frame: uint8 [H, W] or [H, W, C] mask frame.
      threshold: 0-255; pixels strictly above it are on.

    Returns:
      uint8 [H, W] with values 0/1.
    """
    return (_max_channel(frame) > threshold).view(np.uint8)


def check_mask(mask: np.ndarray) -> str | None:
    """Says why a fake's binary mask is nonsense, or None if it is plausible.

    Args:
      mask: uint8 [H, W] 0/1 mask of a fake frame.

    Returns:
      `MASK_EMPTY`, `MASK_ALL_ON` or None.
    """
    fraction = float(mask.mean()) if mask.size else 0.0
    if fraction < MIN_ON_FRACTION:
        return MASK_EMPTY
    border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    if fraction > MAX_ON_FRACTION or float(border.mean()) > MAX_BORDER_ON_FRACTION:
        return MASK_ALL_ON
    return None


def keep_large_components(mask: np.ndarray, min_relative_area: float = 0.1) -> np.ndarray:
    """Drops connected components smaller than a fraction of the largest one.

    Args:
      mask: uint8 [H, W] 0/1.
      min_relative_area: components below this fraction of the largest are removed.

    Returns:
      uint8 [H, W] 0/1 with only the large components.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= min_relative_area * areas.max()) + 1
    return np.isin(labels, keep).astype(np.uint8)


def diff_threshold(compression: str) -> int:
    """The derived-mask threshold for an FF++ compression level (`raw`/`c0`, `c23`, `c40`)."""
    key = "raw" if compression in ("raw", "c0") else compression
    if key not in DIFF_THRESHOLDS:
        raise ValueError(f"no derived-mask threshold for compression {compression!r}; "
                         f"known: {sorted(DIFF_THRESHOLDS)} (or give diff_threshold).")
    return DIFF_THRESHOLDS[key]


def _window(shape, box) -> tuple[slice, slice]:
    x0, y0, x1, y1 = box
    height, width = shape
    return slice(max(0, int(y0)), min(height, int(y1))), slice(max(0, int(x0)), min(width, int(x1)))


def derive_mask(
    fake: np.ndarray, original: np.ndarray, threshold: int, face_window=None
) -> tuple[np.ndarray, float]:
    """Derives a mask from the difference between a fake frame and its target original's.

    Fake and original were encoded separately, so the raw difference is noisy everywhere;
    a 3x3 median (drops isolated noisy pixels without moving edges), a threshold and an
    opening (removes specks) leave candidate regions. Bounded to the face's window, a closing
    (fills the region) and keeping the large components leave the manipulated region.

    Args:
      fake: uint8 [H, W, 3] fake frame.
      original: uint8 [H, W, 3] the same frame index of the target original.
      threshold: 0-255 on the median-filtered per-pixel max channel difference.
      face_window: `(x0, y0, x1, y1)` the mask is bounded to (the crop window of the face),
        or None for the whole frame.

    Returns:
      `(mask, inside)`: uint8 [H, W] 0/1 mask (zero outside `face_window`), and the fraction of
      the opened difference that lay inside the window (1.0 without a window or without any
      difference). A low `inside` means the difference is mostly noise elsewhere.
    """
    if fake.shape != original.shape:
        raise ValueError(f"fake {fake.shape} and original {original.shape} frames differ in size")
    diff = cv2.medianBlur(_max_channel(cv2.absdiff(fake, original)), 3)
    mask = (diff > threshold).astype(np.uint8)
    # Kernels scale with the frame so a 64-px test frame and a 1080p frame behave alike.
    k = max(3, (min(mask.shape) // 64) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    inside = 1.0
    if face_window is not None:
        total = int(cv2.countNonZero(mask))
        bounded = np.zeros_like(mask)
        window = _window(mask.shape, face_window)
        bounded[window] = mask[window]
        inside = int(cv2.countNonZero(bounded)) / total if total else 1.0
        mask = bounded
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=2)
    return keep_large_components(mask), inside


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The bounding box of a mask's large components.

    Args:
      mask: uint8 [H, W] 0/1.

    Returns:
      `(x0, y0, x1, y1)` in pixel-edge coordinates (x1, y1 exclusive), or None if empty.
    """
    mask = keep_large_components(mask)
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
