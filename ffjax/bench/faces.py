"""Face detection speed and recall on generated full-HD video (`ffjax bench --face_detection`).

Real faces (scikit-image's LFW subjects) are pasted into a 1920x1080 clip at several face
widths, each drifting a little every frame. Two ways of finding them are timed (process CPU
time, so per core: dlib runs on one thread) and scored: dlib on every frame in full
(`detect_faces`), and `FaceTracker` (full detection every k frames, tracked in between). A
pasted face counts as found in a frame when a detected box's centre lies inside it.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from ffjax.data import faces
from ffjax.testing import default_real_subjects

FACE_WIDTHS = (40, 60, 80, 120, 200, 320)


def _face_fraction(subject: np.ndarray) -> tuple[float, float, float] | None:
    """(face width / image side, face centre x, y as fractions) of a subject image, by dlib."""
    big = cv2.resize(subject, (400, 400), interpolation=cv2.INTER_CUBIC)
    found = faces.detect_faces(big, 0)
    if not found:
        return None
    x0, y0, x1, y1 = found[0]
    return (x1 - x0) / 400, (x0 + x1) / 800, (y0 + y1) / 800


def synthetic_clip(num_frames: int = 30, widths=FACE_WIDTHS, size=(1920, 1080), seed: int = 0):
    """A clip with one face per width, drifting ~1-2 px per frame.

    Returns:
      (frames uint8 [N, H, W, 3], face boxes int [N, F, 4] of where each face is, widths).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    subjects = [s for s in default_real_subjects()[1:] if _face_fraction(s) is not None][: len(widths)]
    fractions = [_face_fraction(s) for s in subjects]
    base = cv2.resize(rng.integers(40, 200, (9, 16, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    images, starts = [], []
    x = 40
    for subject, (frac, _, _), w in zip(subjects, fractions, widths):
        side = int(round(w / frac))
        images.append(cv2.resize(subject, (side, side), interpolation=cv2.INTER_AREA if side < 250 else cv2.INTER_CUBIC))
        starts.append((x, (height - side) // 2 + int(rng.integers(-100, 100))))
        x += side + 40
    if x > width:
        raise ValueError(f"faces of widths {widths} do not fit side by side in {width} px")
    velocity = rng.uniform(-2, 2, (len(images), 2))
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    boxes = np.zeros((num_frames, len(images), 4), np.int64)
    for t in range(num_frames):
        frame = base.copy()
        for i, (image, (sx, sy), (frac, cx, cy)) in enumerate(zip(images, starts, fractions)):
            side = image.shape[0]
            px = int(np.clip(sx + velocity[i, 0] * t, 0, width - side))
            py = int(np.clip(sy + velocity[i, 1] * t, 0, height - side))
            frame[py : py + side, px : px + side] = image
            half = frac * side / 2
            boxes[t, i] = (px + cx * side - half, py + cy * side - half, px + cx * side + half, py + cy * side + half)
        frames[t] = frame
    return frames, boxes, tuple(widths)


def _score(found_per_frame, boxes) -> np.ndarray:
    """[F] fraction of frames where each pasted face was found."""
    hits = np.zeros(boxes.shape[1])
    for found, truth in zip(found_per_frame, boxes):
        for i, (x0, y0, x1, y1) in enumerate(truth):
            hits[i] += any(x0 <= (a + c) / 2 <= x1 and y0 <= (b + d) / 2 <= y1 for a, b, c, d in found)
    return hits / len(boxes)


def measure(num_frames: int = 100, keyframe_every: int = faces.KEYFRAME_EVERY, full_frames: int = 3, seed: int = 0,
            widths=FACE_WIDTHS) -> dict:
    """Times and scores full detection (on `full_frames` frames) and tracking (all frames).

    Returns:
      A JSON-able dict: frame size, face widths, and per method frames/s per core and recall
      per face width.
    """
    frames, boxes, widths = synthetic_clip(num_frames, widths, seed=seed)
    out = {"frame_size": list(frames.shape[1:3][::-1]), "face_widths": list(widths), "frames": num_frames}
    tick = time.process_time()
    full = [faces.detect_faces(f) for f in frames[:full_frames]]
    cpu = time.process_time() - tick
    out["full_every_frame"] = {
        "frames_per_second_per_core": full_frames / cpu,
        "recall": dict(zip(map(str, widths), _score(full, boxes[:full_frames]).round(3).tolist())),
        "upsample": faces.UPSAMPLE,
    }
    tracker = faces.FaceTracker(keyframe_every)
    tick = time.process_time()
    tracked = [tracker(f) for f in frames]
    cpu = time.process_time() - tick
    out["tracker"] = {
        "frames_per_second_per_core": num_frames / cpu,
        "recall": dict(zip(map(str, widths), _score(tracked, boxes).round(3).tolist())),
        "keyframe_every": keyframe_every,
        "full_detections": tracker.full_detections,
    }
    return out


def table(result: dict) -> str:
    """The result as a Markdown table."""
    widths = result["face_widths"]
    lines = [
        f"Face detection on {result['frame_size'][0]}x{result['frame_size'][1]} frames (per core, dlib is single-threaded)",
        "",
        "| method | frames/s per core | " + " | ".join(f"recall {w} px" for w in widths) + " |",
        "|---|---:|" + "---:|" * len(widths),
    ]
    for name, key in (("dlib every frame", "full_every_frame"), (f"tracker (full every {result['tracker']['keyframe_every']})", "tracker")):
        row = result[key]
        lines.append(f"| {name} | {row['frames_per_second_per_core']:.2f} | " + " | ".join(f"{row['recall'][str(w)]:.2f}" for w in widths) + " |")
    return "\n".join(lines)
