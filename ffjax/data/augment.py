"""Training augmentations, applied identically to a face crop and its mask.

They run on the host inside grain workers (numpy + OpenCV), each drawn from the generator that
grain derives from the dataset seed and the record's position, so a resumed run sees exactly
the same augmented examples as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """Applies the configured augmentations.

    Args:
      image: uint8 [S, S, 3] RGB face crop.
      mask: uint8 [S, S] 0/1 manipulation mask.
      rng: per-example generator.
      cfg: the `augment` block of the config (flip, scale_jitter, color_jitter, jpeg_prob,
        jpeg_quality, blur_prob, blur_sigma).

    Returns:
      (image, mask) of the same shapes and dtypes.
    """
    # Draw every random number up front, in a fixed order, so enabling one augmentation
    # never changes what another one draws.
    flip, scale, crop_u, crop_v, jitter, jpeg_u, quality_u, blur_u, sigma_u = rng.random(9)
    jitter3 = rng.uniform(-1.0, 1.0, size=3)
    size = image.shape[0]

    if cfg.flip and flip < 0.5:
        # OpenCV's flip writes a new contiguous array in one vectorised pass; numpy's
        # negative-stride view made the final copy cost 350 us per 256 px crop.
        image, mask = cv2.flip(image, 1), cv2.flip(mask, 1)

    if cfg.scale_jitter > 0:
        # A random square sub-window, resized back: the face's scale and position vary as
        # they would with another detector or crop factor. Nearest for the mask keeps it binary.
        side = int(round(size * (1.0 - cfg.scale_jitter * scale)))
        if side < size:
            y0 = int(crop_v * (size - side))
            x0 = int(crop_u * (size - side))
            image = cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_NEAREST)

    if cfg.color_jitter > 0:
        brightness, contrast, saturation = 1.0 + cfg.color_jitter * jitter3
        image = color_jitter(image, brightness, contrast, saturation)

    if cfg.blur_prob > 0 and blur_u < cfg.blur_prob:
        lo, hi = cfg.blur_sigma
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=lo + (hi - lo) * sigma_u)

    if cfg.jpeg_prob > 0 and jpeg_u < cfg.jpeg_prob:
        # Re-compression is the distribution shift between c23 and c40 that hurts detectors most.
        lo, hi = cfg.jpeg_quality
        quality = int(lo + (hi - lo) * quality_u)
        # cvtColor swaps the channels in one vectorised pass (numpy's [..., ::-1] then a
        # contiguous copy cost ~0.9 ms per 256 px crop).
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Brightness, then contrast about the image mean, then saturation about each pixel's grey.

    The three steps are linear, so they are one 3x4 colour matrix applied in a single pass
    (OpenCV, rounded and saturated to uint8): with x the pixel, g its channel mean and m the
    image mean, the result is b*c*(s*x + (1-s)*g) + (1-c)*b*m. The step-by-step float32 numpy
    form it replaces took ~10 passes over the image.

    Args:
      image: uint8 [S, S, 3].
      brightness, contrast, saturation: factors (1 leaves the image as it is).

    Returns:
      uint8 [S, S, 3].
    """
    b, c, s = float(brightness), float(contrast), float(saturation)
    mean = float(np.mean(cv2.mean(image)[:3]))
    matrix = np.full((3, 4), b * c * (1.0 - s) / 3.0, np.float64)
    matrix[:, :3] += np.eye(3) * b * c * s
    matrix[:, 3] = (1.0 - c) * b * mean
    return cv2.transform(np.ascontiguousarray(image), matrix)
