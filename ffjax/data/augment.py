"""Training augmentations: JPEG re-compression on the host, the rest on the device.

Only the JPEG round trip needs a codec, so only it runs on the host (grain workers, OpenCV).
Flip, scale jitter, blur and colour jitter run inside the jitted training step
(`DeviceAugment`), where they cost well under 1 % of a step's FLOPs instead of most of a host
core's time per frame. Host JPEG comes first, as in real data: a video is compressed before
its face is cropped and resized.

Every random number is keyed by the example's global position in the training stream (host:
`np.random.default_rng([seed, position])`; device: `fold_in(key(seed), position)`), never by
its row, device or process. A resumed run, a 2-host run and a 1-host run therefore see the same
augmented batches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

# --------------------------------------------------------------------------- host (JPEG)


def host_enabled(cfg: Any) -> bool:
    """Whether `cfg` (the config's `augment` block) asks for host work (JPEG re-compression)."""
    return cfg.jpeg_prob > 0


def host_augment(image: np.ndarray, rng: np.random.Generator, cfg: Any) -> np.ndarray:
    """JPEG re-compression with probability `cfg.jpeg_prob` at a quality in `cfg.jpeg_quality`.

    Re-compression is the shift between c23 and c40 that hurts detectors most. The mask is
    unchanged: no pixel moves.

    Args:
      image: uint8 [S, S, 3] RGB face crop.
      rng: the example's generator (seeded by its global position).
      cfg: the `augment` block of the config.

    Returns:
      uint8 [S, S, 3].
    """
    apply_u, quality_u = rng.random(2)
    if not apply_u < cfg.jpeg_prob:
        return image
    lo, hi = cfg.jpeg_quality
    quality = int(lo + (hi - lo) * quality_u)
    # cvtColor swaps the channels in one vectorised pass (numpy's [..., ::-1] then a contiguous
    # copy cost ~0.9 ms per 256 px crop).
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode a {image.shape} crop at quality {quality}.")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- device


def positions(first: int, count: int) -> np.ndarray:
    """Global stream positions first..first+count-1 as uint32 [count, 2] (high, low words):
    batches carry them to key the device augmentations (JAX has no 64-bit ints by default)."""
    p = np.arange(first, first + count, dtype=np.uint64)
    return np.stack([p >> np.uint64(32), p & np.uint64(0xFFFFFFFF)], axis=1).astype(np.uint32)


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
    """Flip, scale jitter, blur and colour jitter of a batch, on the device, per example.

    Every spatial step is linear along each axis, so one example's resize, flip and blur are
    one [S, S] matrix per axis, applied as two matrix products (exact at full precision: with
    nothing drawn, the matrices are the identity and the crop comes back unchanged). The mask
    takes the same crop and flip by nearest-pixel gathers, so it stays 0/1, and no blur.

    Hashable (a static argument of the jitted step). Build with `from_config`.
    """

    seed: int
    flip: bool
    scale_jitter: float
    color_jitter: float
    blur_prob: float
    blur_sigma: tuple[float, float]

    def __call__(self, image: jax.Array, mask: jax.Array, position: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Augments a batch.

        Args:
          image: [B, S, S, 3] pixels in [0, 255] (uint8 or float).
          mask: [B, S, S] 0/1.
          position: uint32 [B, 2], each row's global stream position (`positions`).

        Returns:
          (float32 [B, S, S, 3] pixels in [0, 255], mask of `mask`'s shape and dtype).
        """
        base = jax.random.key(self.seed)
        keys = jax.vmap(lambda p: jax.random.fold_in(jax.random.fold_in(base, p[0]), p[1]))(position)
        return jax.vmap(self._one)(image, mask, keys)

    def _one(self, image: jax.Array, mask: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        size = image.shape[0]
        # Nine draws in a fixed order, so switching one augmentation on or off never changes
        # what another one draws.
        flip_u, scale_u, x_u, y_u, b_u, c_u, s_u, blur_u, sigma_u = jax.random.uniform(key, (9,))
        flip = jnp.logical_and(self.flip, flip_u < 0.5)

        # A random square window of side (1 - scale_jitter * u) * S, resized back to S: the
        # face's scale and position vary as with another detector or crop factor. Output pixel
        # i samples the window at its centre; pixel j covers [j, j + 1).
        side = size * (1.0 - self.scale_jitter * scale_u)
        centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) * (side / size)
        src_y = y_u * (size - side) + centres
        src_x = x_u * (size - side) + centres
        src_x = jnp.where(flip, src_x[::-1], src_x)
        along_y, along_x = _linear_weights(src_y - 0.5, size), _linear_weights(src_x - 0.5, size)
        if self.blur_prob > 0:
            lo, hi = self.blur_sigma
            blur = _gaussian_weights(size, lo + (hi - lo) * sigma_u, radius=math.ceil(3 * hi))
            blur = jnp.where(blur_u < self.blur_prob, blur, jnp.eye(size, dtype=jnp.float32))
            along_y, along_x = _matmul(blur, along_y), _matmul(blur, along_x)
        x = image.astype(jnp.float32)
        x = jnp.einsum("ij,jkc->ikc", along_y, x, precision=jax.lax.Precision.HIGHEST)
        x = jnp.einsum("ikc,lk->ilc", x, along_x, precision=jax.lax.Precision.HIGHEST)

        rows = jnp.clip(jnp.floor(src_y), 0, size - 1).astype(jnp.int32)
        cols = jnp.clip(jnp.floor(src_x), 0, size - 1).astype(jnp.int32)
        mask = mask[rows[:, None], cols[None, :]]

        if self.color_jitter > 0:
            factors = 1.0 + self.color_jitter * (2.0 * jnp.stack([b_u, c_u, s_u]) - 1.0)
            x = color_jitter(x, *factors)
        return x, mask


def from_config(cfg: Any, seed: int) -> DeviceAugment | None:
    """The device augmentations of `cfg` (the config's `augment` block); None if all are off."""
    if not (cfg.flip or cfg.scale_jitter > 0 or cfg.color_jitter > 0 or cfg.blur_prob > 0):
        return None
    if not 0 <= cfg.scale_jitter < 1:
        raise ValueError(f"config.augment.scale_jitter={cfg.scale_jitter} must be in [0, 1).")
    lo, hi = (float(v) for v in cfg.blur_sigma)
    if cfg.blur_prob > 0 and not 0 < lo <= hi:
        raise ValueError(f"config.augment.blur_sigma={tuple(cfg.blur_sigma)} must be (low, high) with 0 < low <= high.")
    return DeviceAugment(
        seed=int(seed), flip=bool(cfg.flip), scale_jitter=float(cfg.scale_jitter), color_jitter=float(cfg.color_jitter),
        blur_prob=float(cfg.blur_prob), blur_sigma=(lo, hi),
    )


def color_jitter(image: jax.Array, brightness: jax.Array, contrast: jax.Array, saturation: jax.Array) -> jax.Array:
    """Brightness, then contrast about the image mean, then saturation about each pixel's grey.

    The three steps are linear, so with x the pixel, g its channel mean and m the image mean
    the result is b*c*(s*x + (1-s)*g) + (1-c)*b*m, clipped to [0, 255].

    Args:
      image: float [S, S, 3] in [0, 255].
      brightness, contrast, saturation: factors (1 leaves the image as it is).
    """
    b, c, s = brightness, contrast, saturation
    grey = jnp.mean(image, axis=-1, keepdims=True)
    out = b * c * (s * image + (1.0 - s) * grey) + (1.0 - c) * b * jnp.mean(image)
    return jnp.clip(out, 0.0, 255.0)


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _linear_weights(src: jax.Array, size: int) -> jax.Array:
    """[S_out, S_in] bilinear weights of sampling at `src` (pixel centres at 0..S-1), edges clamped."""
    w = jnp.maximum(0.0, 1.0 - jnp.abs(src[:, None] - jnp.arange(size, dtype=jnp.float32)[None, :]))
    return w / jnp.sum(w, axis=1, keepdims=True)


def _gaussian_weights(size: int, sigma: jax.Array, radius: int) -> jax.Array:
    """[S, S] Gaussian blur weights, cut at `radius`, renormalised at the edges."""
    d = jnp.arange(size, dtype=jnp.float32)
    d = d[:, None] - d[None, :]
    w = jnp.where(jnp.abs(d) <= radius, jnp.exp(-0.5 * (d / sigma) ** 2), 0.0)
    return w / jnp.sum(w, axis=1, keepdims=True)
