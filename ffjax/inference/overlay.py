"""Drawing predictions onto frames, and writing the annotated copy of a video, folder or image.

A segmentation model's probability map lives in the face crop; it is pasted back into the
frame at the crop window it came from, so the heatmap sits on the pixels the model judged.
"""

from __future__ import annotations

import cv2
import numpy as np

# Colours (RGB) of a face judged fake / real, and of a frame without a face.
FAKE_COLOUR = (230, 40, 40)
REAL_COLOUR = (40, 200, 60)
NO_FACE_COLOUR = (200, 200, 200)
# Opacity of the heatmap where the model is certain; it scales with the probability, so the
# pixels it calls real stay visible instead of being tinted blue.
HEATMAP_ALPHA = 0.65


def paste_heatmap(frame: np.ndarray, probs: np.ndarray, window, alpha: float = HEATMAP_ALPHA) -> np.ndarray:
    """Blends a crop's fake-probability map into the frame at the window it was cut from.

    Args:
      frame: uint8 [H, W, 3] RGB frame (not modified).
      probs: float [S, S] fake probabilities of the crop, in [0, 1].
      window: `(x0, y0, x1, y1)` square window the crop was cut from (after clamping); it may
        extend past the frame where the crop was padded.
      alpha: opacity at probability 1.

    Returns:
      A new uint8 [H, W, 3] frame.
    """
    x0, y0, x1, y1 = (int(v) for v in window)
    side = x1 - x0
    if side <= 0 or y1 - y0 != side:
        raise ValueError(f"crop window {tuple(window)} is not a non-empty square")
    height, width = frame.shape[:2]
    probs = np.clip(np.asarray(probs, np.float32), 0.0, 1.0)
    full = cv2.resize(probs, (side, side), interpolation=cv2.INTER_LINEAR)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    out = frame.copy()
    if ix1 <= ix0 or iy1 <= iy0:
        return out
    part = full[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    colours = cv2.applyColorMap(np.rint(part * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).astype(np.float32)
    weight = (alpha * part)[..., None]
    region = out[iy0:iy1, ix0:ix1].astype(np.float32)
    out[iy0:iy1, ix0:ix1] = np.clip(np.rint(region * (1 - weight) + colours * weight), 0, 255).astype(np.uint8)
    return out


def _font_scale(frame: np.ndarray) -> float:
    # Readable on a 120 px test frame and on 1080p alike; from the shorter side, so a portrait
    # frame gets the size a landscape one of its width would.
    return max(0.3, min(frame.shape[:2]) / 600.0)


def _label(frame: np.ndarray, text: str, origin: tuple[int, int], colour, *, below: int = 0) -> tuple[int, int]:
    """Writes text on a dark box (readable over any background), in place.

    The text shrinks until it fits the frame's width; its box is kept inside the frame and
    below the row `below` (the header's bottom: labels never cover it).

    Returns:
      (top, bottom) rows of the box drawn.
    """
    scale = _font_scale(frame)
    thickness = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if tw + 4 > frame.shape[1]:
        scale *= (frame.shape[1] - 4) / (tw + 4)
        thickness = max(1, int(round(scale * 1.5)))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = origin
    x = min(max(x, 0), max(frame.shape[1] - tw - 2, 0))
    y = min(max(y, th + 2 + below), frame.shape[0] - base - 1)
    cv2.rectangle(frame, (x, y - th - 2), (x + tw + 2, y + base), (0, 0, 0), -1)
    cv2.putText(frame, text, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return y - th - 2, y + base


def annotate(frame: np.ndarray, faces, frame_score: float | None, threshold: float, header: str = "") -> np.ndarray:
    """Draws each face box with its score, and the frame's score (or 'no face') at the top.

    Args:
      frame: uint8 [H, W, 3] RGB frame, heatmaps already pasted (modified copy returned).
      faces: sequence of `(box, score)` with box `(x0, y0, x1, y1)`, x1/y1 exclusive.
      frame_score: the frame's fake probability, or None when no face was found.
      threshold: scores at or above it are drawn as fake.
      header: text put before the score (e.g. the frame index).

    Returns:
      The annotated uint8 [H, W, 3] RGB frame.
    """
    out = np.ascontiguousarray(frame.copy())
    thickness = max(1, min(out.shape[:2]) // 240)
    for box, score in faces:
        colour = FAKE_COLOUR if score >= threshold else REAL_COLOUR
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thickness)
    if frame_score is None:
        text, colour = f"{header}no face found", NO_FACE_COLOUR
    else:
        verdict = "FAKE" if frame_score >= threshold else "real"
        colour = FAKE_COLOUR if frame_score >= threshold else REAL_COLOUR
        text = f"{header}score {frame_score:.2f} {verdict}"
    # The header first: the face labels are then kept below it.
    _, header_bottom = _label(out, text, (2, 0), colour)
    for box, score in faces:
        colour = FAKE_COLOUR if score >= threshold else REAL_COLOUR
        _label(out, f"{score:.2f}", (int(box[0]), int(box[1]) - 2), colour, below=header_bottom + 2)
    return out
