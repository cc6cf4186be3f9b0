"""`make_ffpp_tree`: a small FaceForensics++ tree in the official layout, with its ground truth."""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ffjax.data import ffpp
from ffjax.testing import forgeries
from ffjax.testing import scene as scene_lib
from ffjax.testing import subjects as subjects_lib
from ffjax.testing.regions import RegionTrack
from ffjax.testing.videos import write_video

ORIGINAL = "original"
# Written at the root of every generated tree: the builder records it, so a checkpoint says it
# was trained on generated data and `ffjax predict` warns (its scores on real faces mean nothing).
GENERATED_MARKER = ffpp.GENERATED_MARKER
SPLITS = ("train", "val", "test")
DEFAULT_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# raw (alias c0) is lossless like FF++'s CRF 0; c23 and c40 are x264 at CRF 23 and 40, as
# FF++ encodes them, every video on its own.
COMPRESSIONS = ("raw", "c0", "c23", "c40")
CRF = {"c23": 23, "c40": 40}
_ID = re.compile(r"[A-Za-z0-9]+")


@dataclasses.dataclass(frozen=True)
class FakeVideo:
    """One video of a generated tree.

    Attributes:
      method: `'original'` or the method folder name.
      compression: the compression folder name it was written under.
      name: file stem: `'071'` or `'071_054'`.
      target: id whose frames (and face boxes) the video has.
      source: id of the source face/actor for fakes, None for originals.
      split: `'train'`, `'val'` or `'test'`.
      path: the video file.
      mask_path: the fake's mask video (shared by all compressions), None if none is written.
    """

    method: str
    compression: str
    name: str
    target: str
    source: str | None
    split: str
    path: Path
    mask_path: Path | None


@dataclasses.dataclass(frozen=True)
class FakeTree:
    """What `make_ffpp_tree` wrote, and the exact ground truth of every video.

    Attributes:
      root: the tree's root (the FF++ `manual_dir`).
      pairs: every (a, b) pair, in generation order.
      split_pairs: split name -> its pairs (all three splits present, maybe empty).
      methods: manipulation methods written.
      compressions: compression folder names written.
      masks_for: methods that got a `masks/videos` folder.
      num_frames: frames per video.
      frame_size: (width, height) of every frame.
      fps: frame rate of every video.
      videos: every video written, originals first.
      face_boxes: id -> int32 [T, 4] face box x0, y0, x1, y1 (exclusive) per frame, in frame
        pixels; fakes `a_b` share the boxes of their target `a`.
      regions: (method, name) -> exact manipulated pixels of each fake frame, before encoding:
        where some channel differs from the original by more than `DIFF_THRESHOLD`.
      mask_regions: (method, name) -> the pixels each mask frame paints (non-black before
        encoding); for NeuralTextures a shaded face render's support, larger than `regions`.
    """

    root: Path
    pairs: tuple[tuple[str, str], ...]
    split_pairs: dict[str, tuple[tuple[str, str], ...]]
    methods: tuple[str, ...]
    compressions: tuple[str, ...]
    masks_for: tuple[str, ...]
    num_frames: int
    frame_size: tuple[int, int]
    fps: float
    videos: tuple[FakeVideo, ...]
    face_boxes: dict[str, np.ndarray]
    regions: dict[tuple[str, str], RegionTrack]
    mask_regions: dict[tuple[str, str], RegionTrack]

    DIFF_THRESHOLD = forgeries.DIFF_THRESHOLD

    @property
    def ids(self) -> tuple[str, ...]:
        """Every original id, in order of first appearance in `pairs`."""
        return tuple(self.face_boxes)

    @functools.cached_property
    def _by_key(self) -> dict[tuple[str, str, str], FakeVideo]:
        return {(v.method, v.compression, v.name): v for v in self.videos}

    def video(self, method: str, compression: str, name: str) -> FakeVideo:
        """The `FakeVideo` for a method (or `'original'`), compression folder and name."""
        try:
            return self._by_key[(method, compression, name)]
        except KeyError:
            where = f"{method}/{compression}/{name}"
            raise KeyError(f"no video {where} in the tree at {self.root}.") from None

    def face_box(self, name: str, frame: int) -> tuple[int, int, int, int]:
        """Face box x0, y0, x1, y1 (exclusive) of a video (`'a'` or `'a_b'`) at a frame."""
        return tuple(int(v) for v in self.face_boxes[name.split("_")[0]][frame])

    def region(self, method: str, name: str) -> np.ndarray:
        """Exact manipulated pixels of a video as bool [T, H, W]; all False for originals."""
        if method == ORIGINAL:
            width, height = self.frame_size
            return np.zeros((self.num_frames, height, width), bool)
        return self.regions[(method, name)].to_array()

    def write_splits(self, directory) -> dict[str, Path]:
        """Writes `train.json`, `val.json`, `test.json` for the tree's pairs (FF++ format).

        Args:
          directory: folder to write into; created.

        Returns:
          Split name -> file written.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {}
        for split in SPLITS:
            paths[split] = directory / f"{split}.json"
            pairs = [list(p) for p in self.split_pairs[split]]
            paths[split].write_text(json.dumps(pairs, indent=2))
        return paths


def load_official_splits() -> dict[str, list[tuple[str, str]]]:
    """The official FF++ split files shipped in `ffjax/data/splits`: split -> pairs."""
    folder = importlib.resources.files("ffjax.data").joinpath("splits")
    return {
        s: [tuple(p) for p in json.loads(folder.joinpath(f"{s}.json").read_text())]
        for s in SPLITS
    }


def official_pairs(train: int = 3, val: int = 1, test: int = 1) -> dict[str, list[tuple[str, str]]]:
    """The first pairs of each official split, to pass as `pairs` (official splits then apply).

    Args:
      train: pairs taken from the start of train.json (at most 360).
      val: pairs taken from val.json (at most 70).
      test: pairs taken from test.json (at most 70).

    Returns:
      Split -> pairs.
    """
    official = load_official_splits()
    counts = {"train": train, "val": val, "test": test}
    for split, n in counts.items():
        if not 0 <= n <= len(official[split]):
            raise ValueError(f"{split}={n}: the official split has {len(official[split])} pairs.")
    return {s: official[s][: counts[s]] for s in SPLITS}


def _normalise_pairs(pairs) -> dict[str, list[tuple[str, str]]]:
    """Split -> pairs from `make_ffpp_tree`'s `pairs` argument, checked."""
    if pairs is None:
        by_split = official_pairs()
    elif isinstance(pairs, Mapping):
        unknown = set(pairs) - set(SPLITS)
        if unknown:
            raise ValueError(f"pairs has unknown split(s) {sorted(unknown)}; use {SPLITS}.")
        by_split = {s: [tuple(p) for p in pairs.get(s, ())] for s in SPLITS}
    elif isinstance(pairs, Sequence) and not isinstance(pairs, str):
        # A plain list keeps each official pair in its official split; others go to train.
        where = {frozenset(p): s for s, ps in load_official_splits().items() for p in ps}
        by_split = {s: [] for s in SPLITS}
        for p in pairs:
            p = tuple(p)
            by_split[where.get(frozenset(p), "train")].append(p)
    else:
        raise ValueError(
            "pairs must be None, a list of (a, b) pairs or a split -> pairs dict, "
            f"got {type(pairs)}."
        )
    seen = set()
    for split, ps in by_split.items():
        for p in ps:
            if len(p) != 2 or not all(isinstance(i, str) and _ID.fullmatch(i) for i in p):
                raise ValueError(
                    f"pair {p!r} ({split}): ids must be two alphanumeric strings "
                    "like ('071', '054')."
                )
            if p[0] == p[1]:
                raise ValueError(f"pair {p!r} ({split}): a video cannot be its own source.")
            if frozenset(p) in seen:
                raise ValueError(f"pair {p!r} appears twice (in either order).")
            seen.add(frozenset(p))
    if not seen:
        raise ValueError("pairs is empty: give at least one (a, b) pair.")
    return by_split


def _check_settings(methods, compressions, masks_for, num_frames, frame_size, fps):
    unknown = [m for m in methods if m not in forgeries.METHODS]
    if unknown or not methods:
        raise ValueError(f"methods={methods!r}: name one or more of {forgeries.METHODS}.")
    bad = [c for c in compressions if c not in COMPRESSIONS]
    if bad or not compressions:
        raise ValueError(f"compressions={compressions!r}: name one or more of {COMPRESSIONS}.")
    if {"raw", "c0"} <= set(compressions):
        raise ValueError("compressions has both 'raw' and 'c0': they are the same FF++ level.")
    if masks_for is None:
        masks_for = tuple(m for m in methods if m not in forgeries.METHODS_WITHOUT_MASKS)
    masks_for = tuple(masks_for)
    if not set(masks_for) <= set(methods):
        raise ValueError(f"masks_for={masks_for!r} must be a subset of methods={methods!r}.")
    no_masks = [m for m in masks_for if m in forgeries.METHODS_WITHOUT_MASKS]
    if no_masks:
        raise ValueError(f"masks_for={masks_for!r}: FF++ ships no masks for {no_masks}.")
    return masks_for, _check_video_settings(num_frames, frame_size, fps)


def _check_video_settings(num_frames, frame_size, fps) -> tuple[int, int]:
    """Checks what every generated tree shares; returns (width, height) as ints."""
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    width, height = (int(v) for v in frame_size)
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(
            f"frame_size={frame_size!r}: (width, height) must be even and at least 32."
        )
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}.")
    return width, height


def _seed(*parts) -> list[int]:
    """Entropy for numpy from the tree seed and names: stable across runs and processes."""
    return [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]


def _write_marker(root: Path, generator: str, seed: int, **info) -> None:
    """Creates `root` and marks it as generated (before any video is written)."""
    root.mkdir(parents=True, exist_ok=True)
    record = {"generator": f"ffjax.testing.{generator}", "seed": int(seed), **info}
    (root / GENERATED_MARKER).write_text(json.dumps(record) + "\n")


def _drawn_face(seed: int, key: str) -> np.ndarray:
    """The procedurally drawn face of subject `key`."""
    return subjects_lib.draw_face(np.random.default_rng(_seed(seed, "face", key)))


def _scene(seed: int, key: str, face: np.ndarray, num_frames: int, frame_size) -> scene_lib.Scene:
    """The scene of video `key`: its own background, path and clothes around `face`."""
    rng = np.random.default_rng(_seed(seed, "scene", key))
    return scene_lib.make_scene(rng, face, num_frames, *frame_size)


def _forge(
    seed: int, method: str, name: str, target: scene_lib.Scene, source_face, target_frames
) -> forgeries.Forgery:
    """The fake `name` of a target video in a method's style, its randomness keyed by name."""
    rng = np.random.default_rng(_seed(seed, "fake", method, name))
    params = forgeries.forgery_params(method, rng, target.face, source_face)
    return forgeries.forge(method, target_frames, target.boxes, params)


def _write(path: Path, frames: np.ndarray, compression: str, fps: float) -> Path:
    if compression in CRF:
        return write_video(path, frames, fps, crf=CRF[compression])
    return write_video(path, frames, fps, lossless=True)


def _paths(root: Path, method: str, compression: str, name: str) -> Path:
    if method == ORIGINAL:
        return root / "original_sequences" / "youtube" / compression / "videos" / f"{name}.mp4"
    return root / "manipulated_sequences" / method / compression / "videos" / f"{name}.mp4"


def _mask_path(root: Path, method: str, name: str) -> Path:
    return root / "manipulated_sequences" / method / "masks" / "videos" / f"{name}.mp4"


def make_ffpp_tree(
    root,
    *,
    pairs=None,
    methods=DEFAULT_METHODS,
    compressions=("c23",),
    num_frames: int = 12,
    frame_size=(160, 120),
    fps: float = 10.0,
    subjects=None,
    masks_for=None,
    seed: int = 0,
) -> FakeTree:
    """Writes a small FaceForensics++-shaped tree of synthetic videos with exact ground truth.

    Each original shows a face moving smoothly over a textured background; each fake `a_b`
    has the frames of `a` with the face manipulated in the method's style (Deepfakes: a
    blurred, colour-drifted swap of `b` in a rectangle; FaceSwap / FaceShifter: `b`'s face
    pasted into `a`'s face region; Face2Face: `a`'s mouth and brows re-enacted;
    NeuralTextures: the mouth re-textured), blended with a soft edge, plus a mask video in
    the method's FF++ style. Everything is deterministic for a seed; a video's content
    depends only on the seed, its ids and its method, not on what else is generated.

    Args:
      root: folder to write the tree into (created; existing files are overwritten).
      pairs: None for the first 3 train, 1 val and 1 test pairs of the official splits; a list
        of (a, b) id pairs (official pairs keep their split, others go to train); or a dict
        split -> pairs.
      methods: manipulation methods to write, from
        ('Deepfakes', 'Face2Face', 'FaceSwap', 'NeuralTextures', 'FaceShifter').
      compressions: compression folder names among 'raw', 'c0' (lossless FFV1, like FF++'s
        CRF 0), 'c23' and 'c40' (H.264, x264 at CRF 23 and 40, each video encoded on its own
        as in FF++).
      num_frames: frames per video.
      frame_size: (width, height), both even and >= 32.
      fps: frame rate written in every video.
      subjects: None for procedurally drawn faces, or RGB uint8 face images (any size, in
        the canonical layout of `subjects.py`); the i-th distinct id gets subjects[i % n].
      masks_for: methods that get a `masks/videos` folder; default every method but
        FaceShifter (for which FF++ ships none, so it is never allowed).
      seed: seed of everything random.

    Returns:
      The `FakeTree` describing every file and its ground truth.
    """
    root = Path(root)
    methods, compressions = tuple(methods), tuple(compressions)
    masks_for, frame_size = _check_settings(
        methods, compressions, masks_for, num_frames, frame_size, fps
    )

    by_split = _normalise_pairs(pairs)
    if subjects is not None:
        subjects = [subjects_lib.as_subject(s, i) for i, s in enumerate(subjects)]
        if not subjects:
            raise ValueError("subjects is empty: give at least one face image, or None.")
    # Everything is checked: mark the tree as generated before writing any video.
    _write_marker(root, "make_ffpp_tree", seed, methods=list(methods))
    ordered = [(s, p) for s in SPLITS for p in by_split[s]]
    ids = list(dict.fromkeys(i for _, p in ordered for i in p))

    def scene_of(vid: str) -> scene_lib.Scene:
        if subjects is None:
            face = _drawn_face(seed, vid)
        else:
            face = subjects[ids.index(vid) % len(subjects)]
        return _scene(seed, vid, face, num_frames, frame_size)

    originals, fakes = [], []
    face_boxes, regions, mask_regions = {}, {}, {}
    for split, (a, b) in ordered:
        scenes = {vid: scene_of(vid) for vid in (a, b)}
        frames = {vid: scene_lib.render_video(sc) for vid, sc in scenes.items()}
        for vid in (a, b):
            if vid in face_boxes:
                continue
            face_boxes[vid] = scenes[vid].boxes
            for comp in compressions:
                path = _write(_paths(root, ORIGINAL, comp, vid), frames[vid], comp, fps)
                originals.append(FakeVideo(ORIGINAL, comp, vid, vid, None, split, path, None))
        for target, source in ((a, b), (b, a)):
            name = f"{target}_{source}"
            for method in methods:
                fake = _forge(
                    seed, method, name, scenes[target], scenes[source].face, frames[target]
                )
                regions[(method, name)] = fake.region
                mask_file = None
                if method in masks_for:
                    mask_file = _mask_path(root, method, name)
                    write_video(mask_file, fake.mask_frames, fps)
                    mask_regions[(method, name)] = fake.mask_region
                for comp in compressions:
                    path = _write(_paths(root, method, comp, name), fake.frames, comp, fps)
                    video = FakeVideo(method, comp, name, target, source, split, path, mask_file)
                    fakes.append(video)
    return FakeTree(
        root=root,
        pairs=tuple(p for _, p in ordered),
        split_pairs={s: tuple(by_split[s]) for s in SPLITS},
        methods=methods,
        compressions=compressions,
        masks_for=masks_for,
        num_frames=int(num_frames),
        frame_size=frame_size,
        fps=float(fps),
        videos=tuple(originals + fakes),
        face_boxes=face_boxes,
        regions=regions,
        mask_regions=mask_regions,
    )
