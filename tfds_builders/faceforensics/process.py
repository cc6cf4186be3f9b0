"""Turning one group (a target original and its fakes) into dataset examples.

Runs in worker processes: imports only numpy, OpenCV and ffjax.data. Every frame that is not
turned into an example is recorded under a reason, naming its file (`path@frame`).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ffjax.data import crops, faces, ffpp, masks, video
from tfds_builders.faceforensics import plan as plan_lib

# Where the one face box per (target, frame) comes from, best first: tracked face regions
# before the swap outputs, and the Deepfakes rectangle (much larger than the face) last.
BOX_PREFERENCE = (
    "Face2Face",
    "FaceSwap",
    "NeuralTextures",
    "DeepFakeDetection",
    "FaceShifter",
    "Deepfakes",
)
DETECTOR = "detector"
CROP_SOURCES = ("mask", "detector")
# The mask_source of a fake whose dataset ships no masks (Celeb-DF, DFDC): not a pixel label.
MASK_UNAVAILABLE = "unavailable"

# Manifest reasons decided while decoding.
VIDEO_UNREADABLE = "video_unreadable"
FRAME_UNREADABLE = "frame_unreadable"
FRAME_SIZE_MISMATCH = "frame_size_mismatch"
MASK_VIDEO_UNREADABLE = "mask_video_unreadable"
MASK_FRAME_MISSING = "mask_frame_missing"
MASK_SIZE_MISMATCH = "mask_size_mismatch"
NO_ORIGINAL_FRAME = "no_original_frame_to_derive_mask"
NO_FACE_BOX = "no_face_box"
CROP_NOT_A_FACE = "crop_not_a_face"
# A mask box frames a face when dlib's face on the original is centred inside it and the box
# is at most this many times the face's side (the Deepfakes rectangle is ~1-1.5x; a
# background-noise mask on real c23 NeuralTextures gave a ~5x window).
MAX_MASK_BOX_PER_FACE = 2.0


@dataclasses.dataclass(frozen=True)
class Options:
    """The build settings a worker needs (a picklable slice of the builder config)."""

    frames_per_video: int
    image_size: int
    crop_scale: float
    mask_threshold: int
    diff_threshold: int
    face_detector_fallback: bool
    crop_source: str = DETECTOR
    # False for the cross-dataset test sets (no masks ship): fakes get an all-zero mask with
    # mask_source 'unavailable', and a fake without its original is framed on its own frames.
    pixel_masks: bool = True


@dataclasses.dataclass
class GroupResult:
    """Examples of one group and the bookkeeping for the manifest.

    Attributes:
      target: the group's target original.
      examples: `(key, example)` pairs; keys are `video_id/frame` (6 digits).
      kept: video_id -> kept frame indices.
      skipped: reason -> `path` or `path@frame` entries.
      mask_pixels: method -> [mask pixels on, pixels] over the kept crops.
      mask_sources: `shipped`/`derived`/`none` -> examples.
      box_sources: method (or `detector`) the face box came from -> examples.
      box_sources_by_label: `real`/`fake` -> the same counts split by label (a source used
        for one label only would let the framing give the label away).
      frames_decoded: video and mask frames decoded.
    """

    target: str
    examples: list = dataclasses.field(default_factory=list)
    kept: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    skipped: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    mask_pixels: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    mask_sources: dict[str, int] = dataclasses.field(default_factory=dict)
    box_sources: dict[str, int] = dataclasses.field(default_factory=dict)
    box_sources_by_label: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    frames_decoded: int = 0

    def skip(self, reason: str, path, frame: int | None = None) -> None:
        """Records one skipped file (frame None) or one skipped frame of it."""
        entry = str(path) if frame is None else f"{path}@{int(frame)}"
        self.skipped.setdefault(reason, []).append(entry)


def _read(result: GroupResult, path, indices, reason: str) -> dict[int, np.ndarray] | None:
    """Reads frames, recording the whole file under `reason` if it cannot be decoded."""
    try:
        frames = video.read_frames(path, indices)
    except (video.VideoError, cv2.error):
        frames = {}
    if not frames:
        result.skip(reason, path)
        return None
    result.frames_decoded += len(frames)
    return frames


def _decode_videos(task: plan_lib.GroupTask, options: Options, result: GroupResult):
    """Decodes the same sampled frames of every video of the group.

    Returns:
      `{video_id: {frame_index: rgb frame}}` for the videos that decoded.
    """
    refs = ([task.original] if task.original else []) + [f.ref for f in task.fakes]
    infos = {}
    for ref in refs:
        try:
            infos[ref.video_id] = video.probe_video(ref.path)
        except (video.VideoError, cv2.error):
            result.skip(VIDEO_UNREADABLE, ref.path)
    if not infos:
        return {}
    # Fakes are rendered on their target's frames, so all share its size; one that does not
    # cannot share the group's boxes or be compared with the original.
    reference = next(iter(infos.values()))
    usable = []
    for ref in refs:
        info = infos.get(ref.video_id)
        if info is None:
            continue
        if (info.height, info.width) != (reference.height, reference.width):
            result.skip(FRAME_SIZE_MISMATCH, ref.path)
            continue
        usable.append(ref)
    # One set of indices for the whole group, within the shortest video, so a fake and its
    # original are sampled at exactly the same frames.
    num_frames = min(infos[ref.video_id].num_frames for ref in usable)
    indices = video.sample_frame_indices(num_frames, options.frames_per_video)
    decoded = {}
    for ref in usable:
        frames = _read(result, ref.path, indices, VIDEO_UNREADABLE)
        if frames is None:
            continue
        for index in indices:
            if int(index) not in frames:
                result.skip(FRAME_UNREADABLE, ref.path, index)
        decoded[ref.video_id] = frames
    return decoded


def _fake_masks(fake: plan_lib.FakeVideo, frames, original_frames, windows, options, result):
    """Binary masks of a fake's decoded frames, from its mask video or derived.

    `windows` maps frame index -> the crop window of the group's face box, when boxes come
    before masks (detector crops): a derived mask is bounded to it, and refused when most of
    the difference lies outside it.

    Returns:
      `({frame_index: uint8 0/1 mask}, source)` with only the frames whose mask is usable.
    """
    out = {}
    if fake.mask_path is not None:
        mask_frames = _read(result, fake.mask_path, sorted(frames), MASK_VIDEO_UNREADABLE)
        if mask_frames is None:
            return out, "shipped"
    for index, frame in sorted(frames.items()):
        if fake.mask_path is not None:
            # Never borrow another frame's mask: a mask video shorter than its video loses
            # exactly the frames it lacks.
            if index not in mask_frames:
                result.skip(MASK_FRAME_MISSING, fake.mask_path, index)
                continue
            if mask_frames[index].shape[:2] != frame.shape[:2]:
                result.skip(MASK_SIZE_MISMATCH, fake.mask_path, index)
                continue
            mask = masks.binarize_mask(mask_frames[index], options.mask_threshold)
        else:
            if index not in original_frames:
                result.skip(NO_ORIGINAL_FRAME, fake.ref.path, index)
                continue
            mask, inside = masks.derive_mask(
                frame, original_frames[index], options.diff_threshold, windows.get(index)
            )
            if inside < masks.MIN_INSIDE_FACE:
                result.skip(masks.MASK_OUTSIDE_FACE, fake.ref.path, index)
                continue
        problem = masks.check_mask(mask)
        if problem:
            result.skip(problem, fake.mask_path or fake.ref.path, index)
            continue
        out[index] = mask
    return out, "shipped" if fake.mask_path is not None else "derived"


# Sampled frames lie ~15 frames apart on FF++ videos: the face is searched for in a window
# this many times its side around where it was in the previous sampled frame (a few ms), and
# the whole frame is scanned (~0.1-0.7 s) only for the first frame and when it is not found.
SAMPLED_FRAME_WINDOW = 2.5


def _detector_boxes(original_frames) -> dict[int, tuple]:
    """Boxes from dlib on the original's frames: `{index: (box, 'detector')}`.

    The largest face of the first frame where there is one, followed through the sampled
    frames; every box gets the median side of the video's detections (a face does not change
    size between sampled frames; single detections jitter), centred where that frame's face
    is. Frames without a face get no box (the group skips them).
    """
    found, previous = {}, None
    for index, frame in sorted(original_frames.items()):
        image = faces.grey(frame)
        box = faces.detect_near(image, previous, SAMPLED_FRAME_WINDOW) if previous else None
        if box is None:
            box = faces.detect_largest(image)
        if box is not None:
            found[index] = previous = box
    if not found:
        return {}
    side = float(np.median([max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in found.values()]))
    boxes = {}
    for index, (x0, y0, x1, y1) in found.items():
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        box = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
        boxes[index] = (box, DETECTOR)
    return boxes


def _mask_boxes(fake_masks, methods, original_frames, options) -> dict[int, tuple]:
    """`crop_source='mask'` (studies): one box per frame index from the group's fake masks."""
    boxes = {}
    order = sorted(fake_masks, key=lambda vid: (BOX_PREFERENCE.index(methods[vid]), vid))
    for vid in order:
        for index, mask in fake_masks[vid].items():
            if index not in boxes:
                box = masks.mask_box(mask)
                if box is not None:
                    boxes[index] = (box, methods[vid])
    # The detector frames faces differently from masks; using it next to mask boxes in one
    # group would let the crop itself tell originals from fakes, so only a group with no
    # usable fake mask at all falls back to it.
    if not boxes and options.face_detector_fallback:
        for index, frame in original_frames.items():
            found = faces.detect_faces(frame)
            if found:
                boxes[index] = (found[0], DETECTOR)
    return boxes


def frames_a_face(box, face) -> bool:
    """Whether a mask box frames the face dlib found: centred on it and not much larger."""
    x0, y0, x1, y1 = box
    f0, g0, f1, g1 = face
    cx, cy = (f0 + f1) / 2, (g0 + g1) / 2
    inside = x0 <= cx < x1 and y0 <= cy < y1
    return inside and max(x1 - x0, y1 - y0) <= MAX_MASK_BOX_PER_FACE * max(f1 - f0, g1 - g0)


def _drop_misframed(boxes, original_frames) -> tuple[dict, set]:
    """`crop_source='mask'`: mask boxes that do not frame the original's face are dropped.

    Returns:
      (boxes kept, frame indices whose mask box framed no face). Frames with no face found
      keep their box: a study of mask crops may want faces dlib misses.
    """
    faces_found = _detector_boxes(original_frames) if original_frames else {}
    bad = {
        index for index, (box, source) in boxes.items()
        if source != DETECTOR and index in faces_found and not frames_a_face(box, faces_found[index][0])
    }
    return {i: b for i, b in boxes.items() if i not in bad}, bad


def process_group(task: plan_lib.GroupTask, options: Options) -> GroupResult:
    """Decodes, masks, boxes and crops every sampled frame of one group.

    Args:
      task: the target original and its fakes.
      options: build settings.

    Returns:
      The group's examples and manifest bookkeeping.
    """
    result = GroupResult(task.target)
    decoded = _decode_videos(task, options, result)
    original_frames = decoded.get(task.original.video_id, {}) if task.original else {}
    box_frames = original_frames
    if not task.original and not options.pixel_masks and task.fakes:
        # A lone fake of a test set without originals: framed as `ffjax predict` frames it.
        box_frames = decoded.get(task.fakes[0].ref.video_id, {})
    boxes, windows = {}, {}
    if options.crop_source == DETECTOR:
        # The same detector and crop rule as `ffjax predict`, on the original: its fakes
        # share the box, so the framing cannot tell them apart, and derived masks are bounded
        # to the window the crop shows.
        boxes = _detector_boxes(box_frames)
        windows = {i: crops.square_window(box, options.crop_scale) for i, (box, _) in boxes.items()}
    fake_masks, sources, methods = {}, {}, {}
    for fake in task.fakes:
        vid = fake.ref.video_id
        if vid not in decoded:
            continue
        if options.pixel_masks:
            fake_masks[vid], sources[vid] = _fake_masks(
                fake, decoded[vid], original_frames, windows, options, result
            )
        else:
            fake_masks[vid] = {i: np.zeros(f.shape[:2], np.uint8) for i, f in decoded[vid].items()}
            sources[vid] = MASK_UNAVAILABLE
        methods[vid] = fake.ref.method
    misframed = set()
    if options.crop_source != DETECTOR:
        boxes = _mask_boxes(fake_masks, methods, original_frames, options)
        boxes, misframed = _drop_misframed(boxes, original_frames)
    refs = ([task.original] if task.original else []) + [f.ref for f in task.fakes]
    for ref in refs:
        if ref.video_id not in decoded:
            continue
        is_fake = ref.method != ffpp.ORIGINAL
        for index, frame in sorted(decoded[ref.video_id].items()):
            if is_fake and index not in fake_masks[ref.video_id]:
                continue  # recorded when its mask was rejected
            if index not in boxes:
                result.skip(CROP_NOT_A_FACE if index in misframed else NO_FACE_BOX, ref.path, index)
                continue
            box, box_source = boxes[index]
            mask = fake_masks[ref.video_id][index] if is_fake else np.zeros(frame.shape[:2], np.uint8)
            crop = crops.crop_face(frame, mask, box, options.crop_scale, options.image_size)
            mask_source = sources[ref.video_id] if is_fake else "none"
            result.examples.append(
                (
                    f"{ref.video_id}/{index:06d}",
                    {
                        "image": np.ascontiguousarray(crop.image),
                        "mask": crop.mask,
                        "label": int(is_fake),
                        "method": ref.method,
                        "compression": ref.compression,
                        "video_id": ref.video_id,
                        "frame_index": np.int32(index),
                        "face_box": np.asarray(box, np.int32),
                        "crop_box": np.asarray(crop.crop_box, np.int32),
                        "mask_source": mask_source,
                    },
                )
            )
            result.kept.setdefault(ref.video_id, []).append(int(index))
            pixels = result.mask_pixels.setdefault(ref.method, [0, 0])
            pixels[0] += int(crop.mask.sum())
            pixels[1] += int(crop.mask.size)
            result.mask_sources[mask_source] = result.mask_sources.get(mask_source, 0) + 1
            result.box_sources[box_source] = result.box_sources.get(box_source, 0) + 1
            by_label = result.box_sources_by_label.setdefault("fake" if is_fake else "real", {})
            by_label[box_source] = by_label.get(box_source, 0) + 1
    return result
