"""Original videos: a textured background and a subject whose face moves smoothly over it."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from ffjax.testing import subjects as subjects_lib

# Face box height as a fraction of the frame height (before the per-frame scale wobble).
FACE_HEIGHT = 0.42
# Fraction of a full loop of the face's path travelled per frame: every frame moves the face
# by at least a couple of pixels, so frame indices matter, while the path stays in the frame.
LOOP_PER_FRAME = 1.0 / 24


@dataclasses.dataclass(frozen=True)
class Scene:
    """What an original video is made of; frames are rendered from it on demand.

    Attributes:
      background: float32 [H, W, 3] RGB, static.
      face: uint8 [h, w, 3] RGB content of the face box (canonical layout), resized per frame.
      boxes: int32 [T, 4] face box x0, y0, x1, y1 per frame (x1, y1 exclusive).
      clothing: float32 [3] RGB colour of the shoulders.
      skin: float32 [3] RGB colour of the neck.
    """

    background: np.ndarray
    face: np.ndarray
    boxes: np.ndarray
    clothing: np.ndarray
    skin: np.ndarray


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth textured room-like background: a gradient, soft blobs, a few blurred panels.

    Args:
      rng: source of its random look.
      width: frame width.
      height: frame height.

    Returns:
      float32 [height, width, 3] RGB in [0, 255].
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(angle) * x / width + math.sin(angle) * y / height + 1.0) / 2.0
    c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    img = c0 + (c1 - c0) * ramp[..., None]
    coarse = rng.normal(0, 14, (4, 5, 3)).astype(np.float32)
    img += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 5))):
        # Door or window-like panels: structure that stays put while the face moves.
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        pw = int(rng.integers(width // 8, width // 3))
        ph = int(rng.integers(height // 6, height // 2))
        panel = np.zeros((height, width), np.float32)
        panel[y0 : y0 + ph, x0 : x0 + pw] = 1.0
        panel = cv2.GaussianBlur(panel, (0, 0), 1.5)
        img += panel[..., None] * rng.uniform(-40, 40, 3).astype(np.float32)
    img += rng.normal(0, 1.5, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.float32)


def face_boxes(rng: np.random.Generator, num_frames: int, width: int, height: int) -> np.ndarray:
    """Face box per frame along a smooth elliptic path with a slight scale wobble.

    The path leaves at least 12 % of the box size between the box and the frame border, so
    larger regions around the face (the Deepfakes rectangle, a 1.3x crop) mostly fit too.

    Args:
      rng: source of the path's phase, direction and amplitude.
      num_frames: number of frames.
      width: frame width.
      height: frame height.

    Returns:
      int32 [num_frames, 4] boxes x0, y0, x1, y1 (x1, y1 exclusive).
    """
    t = np.arange(num_frames, dtype=np.float64)
    base_h = FACE_HEIGHT * height
    wobble = 2 * math.pi * LOOP_PER_FRAME * 1.5 * t + rng.uniform(0, 2 * math.pi)
    scale = 1.0 + 0.08 * np.sin(wobble)
    box_h = base_h * scale
    box_w = box_h * subjects_lib.FACE_ASPECT
    max_h, max_w = base_h * 1.08, base_h * 1.08 * subjects_lib.FACE_ASPECT
    # Room for the centre to move with the largest box and a 12 % margin on each side.
    room_x = max(0.0, (width - 1.24 * max_w) / 2)
    room_y = max(0.0, (height - 1.24 * max_h) / 2)
    amp_x, amp_y = room_x * rng.uniform(0.35, 0.6), room_y * rng.uniform(0.35, 0.6)
    cx0 = width / 2 + rng.uniform(-1, 1) * (room_x - amp_x)
    cy0 = height / 2 + rng.uniform(-1, 1) * (room_y - amp_y)
    phase = rng.uniform(0, 2 * math.pi) + rng.choice([-1.0, 1.0]) * 2 * math.pi * LOOP_PER_FRAME * t
    cx, cy = cx0 + amp_x * np.cos(phase), cy0 + amp_y * np.sin(phase)
    boxes = np.stack([cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2], axis=1)
    boxes = np.rint(boxes).astype(np.int32)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes


def make_scene(
    rng: np.random.Generator, face: np.ndarray, num_frames: int, width: int, height: int
) -> Scene:
    """Draws everything random about one original video.

    Args:
      rng: the video's own generator (seeded from the tree seed and the video id).
      face: uint8 RGB subject image.
      num_frames: number of frames.
      width: frame width.
      height: frame height.

    Returns:
      The `Scene`.
    """
    return Scene(
        background=background(rng, width, height),
        face=face,
        boxes=face_boxes(rng, num_frames, width, height),
        clothing=rng.uniform(20, 230, 3).astype(np.float32),
        skin=subjects_lib.skin_colour(face),
    )


def ellipse_alpha(box, shape, centre=(0.5, 0.5), axes=(0.5, 0.5), ramp: float = 1.5):
    """Soft ellipse given in fractions of a box: 1 inside, 0 outside, a linear edge.

    Pixel (i, j) has its centre at (j + 0.5, i + 0.5); the edge ramps from 0 to 1 over `ramp`
    pixels centred on the ellipse, so `alpha >= 0.5` is exactly the ellipse's interior.

    Args:
      box: x0, y0, x1, y1 in frame pixels.
      shape: (height, width) of the frame.
      centre: ellipse centre as fractions of the box width and height.
      axes: semi-axes as fractions of the box width and height.
      ramp: width of the soft edge in pixels.

    Returns:
      (alpha float32 [h, w] over the window, window as (rows, cols) slices of the frame).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    cx, cy = x0 + centre[0] * bw, y0 + centre[1] * bh
    ax, ay = max(axes[0] * bw, 0.5), max(axes[1] * bh, 0.5)
    window = _window(cx - ax - ramp, cy - ay - ramp, cx + ax + ramp, cy + ay + ramp, shape)
    y, x = np.mgrid[window[0], window[1]].astype(np.float32)
    dx, dy = (x + 0.5 - cx) / ax, (y + 0.5 - cy) / ay
    rho = np.sqrt(dx**2 + dy**2)
    # First-order distance to the ellipse: (1 - rho) / |grad rho|, good near the edge, which
    # is the only place it matters.
    grad = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2) / np.maximum(rho, 1e-6)
    dist = (1.0 - rho) / np.maximum(grad, 1e-6)
    return np.clip(0.5 + dist / ramp, 0.0, 1.0), window


def rect_alpha(rect, shape, ramp: float = 1.5):
    """Soft filled rectangle: like `ellipse_alpha`, `alpha >= 0.5` is exactly the rectangle.

    Args:
      rect: x0, y0, x1, y1 in frame pixels (integers; x1, y1 exclusive).
      shape: (height, width) of the frame.
      ramp: width of the soft edge in pixels.

    Returns:
      (alpha float32 [h, w] over the window, window as (rows, cols) slices of the frame).
    """
    x0, y0, x1, y1 = (float(v) for v in rect)
    window = _window(x0 - ramp, y0 - ramp, x1 + ramp, y1 + ramp, shape)
    y, x = np.mgrid[window[0], window[1]].astype(np.float32)
    x, y = x + 0.5, y + 0.5
    dist = np.minimum(np.minimum(x - x0, x1 - x), np.minimum(y - y0, y1 - y))
    return np.clip(0.5 + dist / ramp, 0.0, 1.0), window


def _window(x0, y0, x1, y1, shape) -> tuple[slice, slice]:
    height, width = shape
    c0, c1 = max(0, math.floor(x0)), min(width, math.ceil(x1) + 1)
    r0, r1 = max(0, math.floor(y0)), min(height, math.ceil(y1) + 1)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes to (width, height): area averaging to shrink, bilinear to enlarge.

    Area averaging is the right filter for shrinking but copies pixels in blocks when
    enlarging, which would give small subjects (LFW's 25x25 faces) a mosaic look.

    Args:
      image: [h, w, C] image.
      size: (width, height) wanted.

    Returns:
      The resized image, same dtype.
    """
    shrink = size[0] < image.shape[1] or size[1] < image.shape[0]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def paste(frame: np.ndarray, image: np.ndarray, alpha: np.ndarray, window, box) -> None:
    """Blends `image` (the content of `box`) into `frame` in place where `alpha` is set.

    Args:
      frame: float32 [H, W, 3] frame.
      image: float32 or uint8 [h, w, 3] content, resized to the box.
      alpha: float32 alpha over `window`.
      window: (rows, cols) slices of the frame.
      box: x0, y0, x1, y1 the image covers.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    content = resize(np.asarray(image, np.float32), (x1 - x0, y1 - y0))
    rows, cols = window
    canvas = frame[rows, cols].copy()
    # Only the part of the window the box covers gets new content; alpha is 0 elsewhere.
    r0, r1 = max(rows.start, y0), min(rows.stop, y1)
    c0, c1 = max(cols.start, x0), min(cols.stop, x1)
    canvas[r0 - rows.start : r1 - rows.start, c0 - cols.start : c1 - cols.start] = content[
        r0 - y0 : r1 - y0, c0 - x0 : c1 - x0
    ]
    a = alpha[..., None]
    frame[rows, cols] = frame[rows, cols] * (1 - a) + canvas * a


def render_frame(scene: Scene, t: int) -> np.ndarray:
    """Renders frame `t` of an original video: background, shoulders, neck, face.

    Args:
      scene: the video's `Scene`.
      t: frame index.

    Returns:
      uint8 [H, W, 3] RGB frame.
    """
    frame = scene.background.copy()
    x0, y0, x1, y1 = (int(v) for v in scene.boxes[t])
    bw, bh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    shoulders = (round(cx * 16), round((y1 + 0.85 * bh) * 16))
    cv2.ellipse(frame, shoulders, (round(1.15 * bw * 16), round(0.65 * bh * 16)), 0, 0, 360,
                tuple(float(v) for v in scene.clothing), -1, cv2.LINE_AA, 4)
    neck = np.array([[cx - 0.2 * bw, y1 - 0.2 * bh], [cx + 0.2 * bw, y1 - 0.2 * bh],
                     [cx + 0.2 * bw, y1 + 0.3 * bh], [cx - 0.2 * bw, y1 + 0.3 * bh]])
    neck_colour = tuple(float(v) for v in scene.skin * 0.85)
    cv2.fillPoly(frame, [np.rint(neck * 16).astype(np.int32)], neck_colour, cv2.LINE_AA, 4)
    alpha, window = ellipse_alpha(scene.boxes[t], frame.shape[:2], ramp=1.5)
    paste(frame, scene.face, alpha, window, scene.boxes[t])
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def render_video(scene: Scene) -> np.ndarray:
    """All frames of an original video: uint8 [T, H, W, 3] RGB."""
    return np.stack([render_frame(scene, t) for t in range(len(scene.boxes))])
