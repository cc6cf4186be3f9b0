"""Fakes in the style of each FF++ method, with their exact manipulated pixels and mask videos.

Every method builds a synthetic face (swapped, resynthesised, re-enacted or re-textured) and
blends it into the target's frames with a soft mask, as the real pipelines do. The ground
truth is where the blended uint8 fake differs from the original by more than
`DIFF_THRESHOLD` on some channel. Each method also shifts the colour of what it pastes
(several levels per channel, with mixed signs), as real blends do; that keeps the whole
blended area above the threshold, so the ground truth matches the region the mask video shows.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from ffjax.testing import scene as scene_lib
from ffjax.testing import subjects as subjects_lib
from ffjax.testing.regions import RegionTrack

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
# FF++ distributes no masks for these.
METHODS_WITHOUT_MASKS = ("FaceShifter",)
# A pixel is manipulated where some channel of the fake differs from the original by more.
DIFF_THRESHOLD = 6
# The face region FaceSwap / Face2Face track and blend (and their masks show), in face box
# fractions: from the brows down to the chin, inside the cheeks.
FACE_REGION = ((0.5, 0.55), (0.42, 0.45))
# NeuralTextures re-renders mostly the mouth.
MOUTH_REGION = (subjects_lib.MOUTH, (0.26, 0.13))
# The Deepfakes rectangle grows the face box by these fractions: left, top, right, bottom.
DEEPFAKES_MARGIN = (0.10, 0.06, 0.10, 0.10)
# Per-method (min, max) colour shift per channel and edge ramp width in pixels.
_SHIFT = {"Deepfakes": (12, 20), "Face2Face": (10, 16), "FaceSwap": (10, 18),
          "NeuralTextures": (10, 16), "FaceShifter": (8, 12)}
_RAMP = {"Deepfakes": 2.0, "Face2Face": 2.0, "FaceSwap": 2.0, "NeuralTextures": 4.0,
         "FaceShifter": 3.0}
# Binary masks paint where the blend weight exceeds this. The fake differs from the original
# by more than DIFF_THRESHOLD down to a weight of DIFF_THRESHOLD / |synthetic - original|:
# about 0.4 where only the colour shift differs, about 0.1 where a swapped face meets the
# old one. A quarter sits between, so the mask and the exact region differ by well under a
# pixel along the edge.
MASK_ALPHA = 0.25


@dataclasses.dataclass(frozen=True)
class Forgery:
    """One fake video before encoding.

    Attributes:
      frames: uint8 [T, H, W, 3] RGB.
      region: exact manipulated pixels per frame (|fake - original| > DIFF_THRESHOLD).
      mask_frames: uint8 [T, H, W] grey mask video in the method's FF++ style, or None.
      mask_region: the region the mask video paints (its non-black pixels), or None.
    """

    frames: np.ndarray
    region: RegionTrack
    mask_frames: np.ndarray | None
    mask_region: RegionTrack | None


def _colour_shift(rng: np.random.Generator, method: str) -> np.ndarray:
    """Per-channel shift of random magnitude whose signs are not all equal.

    Mixed signs matter: a swapped face can match the target's brightness by chance, but not
    a shift that raises one channel and lowers another.
    """
    lo, hi = _SHIFT[method]
    signs = rng.choice([-1.0, 1.0], 3)
    if abs(signs.sum()) == 3:
        signs[rng.integers(3)] *= -1
    return (signs * rng.uniform(lo, hi, 3)).astype(np.float32)


def _box_content(frame: np.ndarray, face: np.ndarray, box) -> np.ndarray:
    """`frame` (float32) with `face` resized into `box`, no blending."""
    out = frame.copy()
    x0, y0, x1, y1 = (int(v) for v in box)
    out[y0:y1, x0:x1] = scene_lib.resize(face.astype(np.float32), (x1 - x0, y1 - y0))
    return out


def _deepfakes_rect(box, shape) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    ml, mt, mr, mb = DEEPFAKES_MARGIN
    h, w = shape
    return (max(0, round(x0 - ml * bw)), max(0, round(y0 - mt * bh)),
            min(w, round(x1 + mr * bw)), min(h, round(y1 + mb * bh)))


def _expression_maps(box, window, t: int, params) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps that open the mouth, widen it and raise the brows (Face2Face's reenactment).

    The strength follows the source actor's expression over time (a sinusoid), so
    consecutive fake frames differ in expression too.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    rows, cols = window
    y, x = np.mgrid[rows, cols].astype(np.float32) + 0.5
    cycle = math.sin(2 * math.pi * t / params["period"] + params["phase"])
    e = params["open"] * (0.55 + 0.45 * cycle)
    mx, my = x0 + subjects_lib.MOUTH[0] * bw, y0 + subjects_lib.MOUTH[1] * bh
    g_mouth = np.exp(-(((x - mx) / (0.2 * bw)) ** 2 + ((y - my) / (0.12 * bh)) ** 2) / 2)
    # Sampling from nearer the centre magnifies: the mouth opens and widens.
    map_x = x - (x - mx) * (0.5 * e) * g_mouth
    map_y = y - (y - my) * e * g_mouth
    for eye in (subjects_lib.LEFT_EYE, subjects_lib.RIGHT_EYE):
        ex, ey = x0 + eye[0] * bw, y0 + (eye[1] - 0.06) * bh
        g_eye = np.exp(-(((x - ex) / (0.14 * bw)) ** 2 + ((y - ey) / (0.08 * bh)) ** 2) / 2)
        map_y = map_y + params["brow"] * e * bh * g_eye
    return map_x - 0.5, map_y - 0.5


def _forge_frame(method: str, frame: np.ndarray, box, t: int, params):
    """Manipulates one frame.

    Returns:
      (fake float32 frame, changed window, mask frame window content or None, mask window).
    """
    orig = frame.astype(np.float32)
    shape = frame.shape[:2]
    ramp, shift = _RAMP[method], params["shift"]
    if method == "Deepfakes":
        alpha, window = scene_lib.rect_alpha(_deepfakes_rect(box, shape), shape, ramp)
        face_alpha, face_window = scene_lib.ellipse_alpha(box, shape, ramp=1.5)
        synth = orig.copy()
        scene_lib.paste(synth, params["swap_face"], face_alpha, face_window, box)
        # The autoencoder sees the face at low resolution: detail is lost, colour drifts.
        roi = synth[window]
        h, w = roi.shape[:2]
        low = cv2.resize(roi, (max(2, w // 4), max(2, h // 4)), interpolation=cv2.INTER_AREA)
        synth_roi = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR) + shift
    elif method in ("FaceSwap", "FaceShifter"):
        alpha, window = scene_lib.ellipse_alpha(box, shape, *FACE_REGION, ramp=ramp)
        synth_roi = _box_content(orig, params["swap_face"], box)[window] + shift
        if method == "FaceSwap":
            # Graphics-based swap: the face model's texture is smoother than the skin it covers.
            synth_roi = cv2.GaussianBlur(synth_roi, (0, 0), 0.7)
    elif method == "Face2Face":
        alpha, window = scene_lib.ellipse_alpha(box, shape, *FACE_REGION, ramp=ramp)
        map_x, map_y = _expression_maps(box, window, t, params)
        warped = cv2.remap(orig, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        synth_roi = cv2.GaussianBlur(warped, (0, 0), 0.8) + shift
    elif method == "NeuralTextures":
        alpha, window = scene_lib.ellipse_alpha(box, shape, *MOUTH_REGION, ramp=ramp)
        rows, cols = window
        y, x = np.mgrid[rows, cols].astype(np.float32)
        # Rendering artefacts of the learned texture: a faint high-frequency pattern that
        # drifts from frame to frame.
        pattern = params["pattern_amp"] * np.sin(
            2 * math.pi * (params["fx"] * x + params["fy"] * y) + params["phase"] + 0.9 * t)
        synth_roi = cv2.GaussianBlur(orig[window], (0, 0), 1.2) + shift + pattern[..., None]
    else:
        raise ValueError(f"method={method!r} is not one of {METHODS}.")
    fake = orig.copy()
    a = alpha[..., None]
    fake[window] = orig[window] * (1 - a) + synth_roi * a
    mask, mask_window = _mask_content(method, box, shape, alpha, window)
    return fake, window, mask, mask_window


def _mask_content(method, box, shape, alpha, window):
    """The method's FF++ mask over its window: binary regions, or NeuralTextures' grey render."""
    if method in METHODS_WITHOUT_MASKS:
        return None, None
    if method == "NeuralTextures":
        # What FF++ ships for NeuralTextures is Face2Face's tracking mask: a shaded face render.
        face_alpha, face_window = scene_lib.ellipse_alpha(box, shape, *FACE_REGION, ramp=1.0)
        x0, y0, x1, y1 = (float(v) for v in box)
        (cx, cy), (ax, ay) = FACE_REGION
        cx, cy = x0 + cx * (x1 - x0), y0 + cy * (y1 - y0)
        ax, ay = ax * (x1 - x0), ay * (y1 - y0)
        rows, cols = face_window
        y, x = np.mgrid[rows, cols].astype(np.float32) + 0.5
        nx, ny = (x - cx) / ax, (y - cy) / ay
        nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
        lit = np.clip(-0.3 * nx - 0.4 * ny + 0.87 * nz, 0, 1)
        grey = np.where(face_alpha >= 0.5, 50 + 190 * lit, 0)
        return grey.astype(np.float32), face_window
    return np.where(alpha > MASK_ALPHA, 255.0, 0.0).astype(np.float32), window


def forgery_params(
    method: str, rng: np.random.Generator, target_face: np.ndarray, source_face: np.ndarray
) -> dict:
    """Draws the random settings of one fake (constant over its frames).

    Args:
      method: one of `METHODS`.
      rng: the fake's own generator.
      target_face: uint8 RGB face of the target (the video's own subject).
      source_face: uint8 RGB face of the source identity (swaps) or actor (reenactment).

    Returns:
      A dict of settings for `forge`.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}.")
    params = {"shift": _colour_shift(rng, method)}
    if method in ("Deepfakes", "FaceSwap", "FaceShifter"):
        # Swaps pull the source face's colour towards the target's: partly for the older
        # methods, fully for FaceShifter, whose blends are the cleanest.
        pull = {"Deepfakes": 0.7, "FaceSwap": 0.4, "FaceShifter": 1.0}[method]
        skin = subjects_lib.skin_colour
        offset = pull * (skin(target_face) - skin(source_face))
        params["swap_face"] = np.clip(source_face.astype(np.float32) + offset, 0, 255)
    elif method == "Face2Face":
        params.update(open=rng.uniform(0.3, 0.5), brow=rng.uniform(0.03, 0.05),
                      period=rng.uniform(6, 10), phase=rng.uniform(0, 2 * math.pi))
    elif method == "NeuralTextures":
        angle = rng.uniform(0, math.pi)
        freq = rng.uniform(0.2, 0.3)
        params.update(pattern_amp=rng.uniform(3, 5), fx=freq * math.cos(angle),
                      fy=freq * math.sin(angle), phase=rng.uniform(0, 2 * math.pi))
    return params


def forge(method: str, frames: np.ndarray, boxes: np.ndarray, params: dict) -> Forgery:
    """Makes the fake of one target video.

    Args:
      method: one of `METHODS`.
      frames: uint8 [T, H, W, 3] RGB frames of the target original.
      boxes: int32 [T, 4] the target's face boxes.
      params: from `forgery_params`.

    Returns:
      The `Forgery`: frames, exact manipulated region, and mask video (if the method has one).
    """
    shape = frames.shape[1:3]
    fakes, region_parts, mask_frames, mask_parts = [], [], [], []
    for t, (frame, box) in enumerate(zip(frames, boxes)):
        fake, window, mask, mask_window = _forge_frame(method, frame, box, t, params)
        fake = np.clip(np.rint(fake), 0, 255).astype(np.uint8)
        diff = np.abs(fake[window].astype(np.int16) - frame[window].astype(np.int16)).max(-1)
        region_parts.append((window, diff > DIFF_THRESHOLD))
        fakes.append(fake)
        if mask is not None:
            full = np.zeros(shape, np.uint8)
            full[mask_window] = np.clip(np.rint(mask), 0, 255).astype(np.uint8)
            mask_frames.append(full)
            mask_parts.append((mask_window, full[mask_window] > 0))
    has_mask = method not in METHODS_WITHOUT_MASKS
    return Forgery(
        frames=np.stack(fakes),
        region=RegionTrack.from_crops(shape, region_parts),
        mask_frames=np.stack(mask_frames) if has_mask else None,
        mask_region=RegionTrack.from_crops(shape, mask_parts) if has_mask else None,
    )
