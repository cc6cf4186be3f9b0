"""Derived-mask quality by compression and threshold (`ffjax bench --derived_masks`).

Where FF++ ships no mask (FaceShifter, or a copy without the masks folders), the builder
derives one from |fake - original|. Real fakes and originals were x264-encoded separately, so
the difference carries compression noise everywhere; too low a threshold fires on it, too
high a threshold loses the soft edges of the blend. This measures that trade-off on a
generated tree whose c23 and c40 videos are x264 at CRF 23 and 40, each encoded on its own:
for each compression, method and threshold, the IoU between the builder's derived mask
(`masks.derive_mask`, bounded to the crop window of dlib's face box on the original, as the
builder does) and the exact manipulated pixels, both cut to that window (what training sees).
IoU is a ratio of sums over all frames of a method.
"""

from __future__ import annotations

import tempfile

import numpy as np

from ffjax.data import crops, faces, masks
from ffjax.testing import make_ffpp_tree, read_video

THRESHOLDS = (3, 5, 8, 10, 12, 15, 20)
COMPRESSIONS = ("raw", "c23", "c40")
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")


def measure(
    *, num_pairs: int = 3, num_frames: int = 6, frame_size=(320, 240), crop_scale: float = 1.3,
    thresholds=THRESHOLDS, compressions=COMPRESSIONS, seed: int = 0, root=None,
) -> dict:
    """IoU of derived masks with the exact manipulated region, per compression/method/threshold.

    Args:
      num_pairs: generated (a, b) pairs (each gives two fakes per method).
      num_frames: frames per video (all are measured).
      frame_size: (width, height) of the generated videos.
      crop_scale: the crop window is this times dlib's face box (the builder's default).
      thresholds: difference thresholds to try.
      compressions: generated compression levels to measure.
      seed: the tree's seed.
      root: where to write the tree (default: a temporary folder).

    Returns:
      `{"iou": {compression: {method: {threshold: iou}}}, "refused": {...same: frames whose
      difference lay mostly outside the face}, "frames": int, "chosen": masks.DIFF_THRESHOLDS,
      settings}`.
    """
    pairs = [(f"{2 * i:03d}", f"{2 * i + 1:03d}") for i in range(num_pairs)]
    with tempfile.TemporaryDirectory() as tmp:
        tree = make_ffpp_tree(
            root or tmp, pairs=pairs, methods=METHODS, compressions=compressions,
            num_frames=num_frames, frame_size=frame_size, seed=seed,
        )
        sums = {c: {m: {t: [0, 0] for t in thresholds} for m in METHODS} for c in compressions}
        refused = {c: {m: {t: 0 for t in thresholds} for m in METHODS} for c in compressions}
        frames_measured = 0
        for comp in compressions:
            for target in tree.ids:
                original = read_video(tree.video("original", comp, target).path)
                windows = {}
                for t, frame in enumerate(original):
                    found = faces.detect_faces(frame)
                    if found:
                        windows[t] = crops.square_window(found[0], crop_scale)
                for method in METHODS:
                    for video in tree.videos:
                        if video.method != method or video.compression != comp or video.target != target:
                            continue
                        fake = read_video(video.path)
                        truth = tree.region(method, video.name)
                        for t, window in windows.items():
                            frames_measured += 1
                            sl = crops.cut_window(truth[t].astype(np.uint8), window).astype(bool)
                            for thr in thresholds:
                                derived, inside = masks.derive_mask(fake[t], original[t], thr, window)
                                if inside < masks.MIN_INSIDE_FACE:
                                    refused[comp][method][thr] += 1
                                got = crops.cut_window(derived, window).astype(bool)
                                sums[comp][method][thr][0] += int((got & sl).sum())
                                sums[comp][method][thr][1] += int((got | sl).sum())
    iou = {
        c: {m: {t: (i / u if u else 0.0) for t, (i, u) in by_t.items()} for m, by_t in by_m.items()}
        for c, by_m in sums.items()
    }
    return {
        "iou": iou, "refused": refused, "frames": frames_measured,
        "chosen": dict(masks.DIFF_THRESHOLDS),
        "settings": {"num_pairs": num_pairs, "num_frames": num_frames, "frame_size": list(frame_size),
                     "crop_scale": crop_scale, "seed": seed},
    }


def table(result: dict) -> str:
    """A Markdown table: one row per compression and method, one column per threshold."""
    thresholds = list(next(iter(next(iter(result["iou"].values())).values())))
    lines = ["| compression | method | " + " | ".join(f"t={t}" for t in thresholds) + " |",
             "|---|---|" + "---|" * len(thresholds)]
    for comp, by_method in result["iou"].items():
        chosen = result["chosen"].get("raw" if comp == "c0" else comp)
        for method, by_t in by_method.items():
            cells = [f"**{v:.2f}**" if t == chosen else f"{v:.2f}" for t, v in by_t.items()]
            lines.append(f"| {comp} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
