"""Generated cross-dataset test sets in their real layouts: Celeb-DF v2 and DFDC.

Videos are made as in `make_ffpp_tree` (a drawn face moving over a textured background,
fakes forged in FF++ methods' styles) and written where, and named as, the real datasets
have them, with their real label files, so a builder reads them exactly as it reads the
downloads. `bad` plants the faults real downloads have; the result names what was planted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ffjax.testing.scene import render_video
from ffjax.testing.tree import (
    CRF,
    _check_video_settings,
    _drawn_face,
    _forge,
    _scene,
    _seed,
    _write_marker,
)
from ffjax.testing.videos import corrupt_file, write_video

# Celeb-DF v2's folders and its test list; in the list 1 means real and 0 fake.
CELEB_REAL = "Celeb-real"
YOUTUBE_REAL = "YouTube-real"
CELEB_SYNTHESIS = "Celeb-synthesis"
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"
CELEBDF_BAD = ("missing", "corrupt", "malformed_line")
# DFDC: training parts with a metadata.json each, and the public test set with labels.csv.
DFDC_PART = "dfdc_train_part_{}"
DFDC_TEST = "test"
DFDC_METADATA = "metadata.json"
DFDC_LABELS = "labels.csv"
DFDC_BAD = ("missing", "unknown_label", "corrupt", "metadata_unreadable")
DFDC_UNKNOWN_LABEL = "UNSURE"
# Celeb-DF's fakes are face swaps; DFDC's come from several methods, swaps and reenactments.
# Of forgeries' styles, these keep the face findable by dlib (measured on 10 pairs, H.264, 6
# frames each: FaceShifter 100 %, NeuralTextures 97 % of frames, but FaceSwap 67 % and
# Face2Face 47 %), as the real sets' fakes mostly are; both change the face region only.
# FaceShifter is a swap with a clean, colour-matched blend, like Celeb-DF's improved
# synthesis; NeuralTextures is a reenactment that re-renders the mouth.
SWAP = "FaceShifter"
REENACT = "NeuralTextures"
# Both sets were released as H.264, each video encoded on its own: as FF++'s c23 level here
# (write_video's own lossy codec, mp4v, blurs the small faces enough to miss more detections).
CODING = "c23"
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


@dataclasses.dataclass(frozen=True)
class CelebDFTree:
    """What `make_celebdf_tree` wrote. Paths are relative to `root`, with '/'.

    Attributes:
      root: the tree's root (where Celeb-real/, YouTube-real/, Celeb-synthesis/ are).
      test_list: the `List_of_testing_videos.txt` written.
      test_videos: every well-formed entry of the test list (planted missing and corrupt ones
        included) -> label in ffjax's convention: 1 fake, 0 real (the list says the opposite).
      not_listed: videos on disk that the test list leaves out (at least one real, one fake).
      planted: bad case -> what was planted: 'missing' and 'corrupt' give paths,
        'malformed_line' the lines themselves.
      originals: every fake -> the Celeb-real video it was made from.
      face_boxes: every video written -> int32 [T, 4] face box x0, y0, x1, y1 per frame
        (a fake's are its original's).
    """

    root: Path
    test_list: Path
    test_videos: dict[str, int]
    not_listed: list[str]
    planted: dict[str, list[str]]
    originals: dict[str, str]
    face_boxes: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DFDCTree:
    """What `make_dfdc_tree` wrote. Paths are relative to `root`, with '/'.

    Attributes:
      root: the tree's root (where dfdc_train_part_*/ and test/ are).
      train: every well-formed entry of a readable metadata.json (planted missing and corrupt
        ones included) -> (label 1 fake / 0 real, the fake's original or None).
      test: every row of test/labels.csv -> label (1 fake, 0 real).
      planted: bad case -> paths planted ('metadata_unreadable': the metadata.json broken).
      originals: every fake, train and test -> the real clip of its folder it was made from.
      methods: every fake -> the forgery style it was made in (`SWAP` or `REENACT`).
      face_boxes: every clip written -> int32 [T, 4] face boxes (a fake's are its original's).
    """

    root: Path
    train: dict[str, tuple[int, str | None]]
    test: dict[str, int]
    planted: dict[str, list[str]]
    originals: dict[str, str]
    methods: dict[str, str]
    face_boxes: dict[str, np.ndarray]


def _check_bad(bad, allowed) -> tuple[str, ...]:
    bad = (bad,) if isinstance(bad, str) else tuple(bad)
    unknown = [b for b in bad if b not in allowed]
    if unknown:
        raise ValueError(f"bad={bad!r}: {unknown} not among {allowed}.")
    return tuple(dict.fromkeys(bad))


class _Writer:
    """Renders, forges and writes the videos of one tree, keeping their face boxes."""

    def __init__(self, root: Path, seed: int, frames: int, frame_size, fps):
        self.root, self.seed = root, seed
        self.frames, self.frame_size, self.fps = frames, frame_size, float(fps)
        self.face_boxes: dict[str, np.ndarray] = {}
        # Scenes, not frames: rendering again is cheap, holding every video's frames is not.
        self._scenes = {}

    def real(self, rel: str, face: np.ndarray) -> None:
        """Writes the original video `rel` of a subject's face (its own scene)."""
        scene = self._scenes[rel] = _scene(self.seed, rel, face, self.frames, self.frame_size)
        self._write(rel, render_video(scene), scene.boxes)

    def fake(self, rel: str, method: str, original: str, source_face: np.ndarray) -> None:
        """Writes the fake `rel` of the video `original` written before, encoded on its own."""
        scene = self._scenes[original]
        forgery = _forge(self.seed, method, rel, scene, source_face, render_video(scene))
        self._write(rel, forgery.frames, scene.boxes)

    def face(self, rel: str) -> np.ndarray:
        """The face of the subject of video `rel`."""
        return self._scenes[rel].face

    def _write(self, rel: str, frames: np.ndarray, boxes: np.ndarray) -> None:
        write_video(self.root / rel, frames, self.fps, crf=CRF[CODING])
        self.face_boxes[rel] = boxes


def make_celebdf_tree(
    root,
    *,
    num_subjects: int = 3,
    videos_per_subject: int = 1,
    num_youtube: int = 2,
    num_fakes: int = 3,
    frames: int = 12,
    width: int = 160,
    height: int = 120,
    fps: float = 10,
    seed: int = 0,
    bad=(),
) -> CelebDFTree:
    """Writes a small Celeb-DF v2-shaped tree of synthetic videos.

    `Celeb-real/id{i}_{k:04d}.mp4` are videos of celebrity `i` (one face, a new scene per
    video), `YouTube-real/{n:05d}.mp4` videos of other people, and
    `Celeb-synthesis/id{t}_id{s}_{k:04d}.mp4` the video `id{t}_{k:04d}` with subject `s`'s
    face swapped in (a FaceShifter-style swap: only the face region changes). The test list
    `List_of_testing_videos.txt` has lines `<label> <folder>/<file>` where, as in Celeb-DF,
    1 means real and 0 fake; one real and one fake video stay out of it (Celeb-DF's training
    videos are not in the list). Deterministic for a seed.

    Args:
      root: folder to write into (created; existing files are overwritten).
      num_subjects: celebrities (>= 2: a fake needs a second face).
      videos_per_subject: Celeb-real videos per celebrity.
      num_youtube: YouTube-real videos.
      num_fakes: Celeb-synthesis videos (>= 2, at most every (target, source, video) choice).
      frames: frames per video.
      width: frame width (even, >= 32).
      height: frame height (even, >= 32).
      fps: frame rate written in every video.
      seed: seed of everything random.
      bad: faults to plant, among 'missing' (a listed file that does not exist), 'corrupt' (a
        listed file truncated) and 'malformed_line' (a line with label 2 and one without a
        label, naming videos that exist but are otherwise unlisted).

    Returns:
      The `CelebDFTree`.
    """
    root = Path(root)
    frame_size = _check_video_settings(frames, (width, height), fps)
    bad = _check_bad(bad, CELEBDF_BAD)
    if num_subjects < 2 or videos_per_subject < 1 or num_youtube < 0:
        raise ValueError(
            f"num_subjects={num_subjects}, videos_per_subject={videos_per_subject}, "
            f"num_youtube={num_youtube}: need >= 2 subjects, >= 1 video each, youtube >= 0."
        )
    choices = [
        (t, s, k)
        for t in range(num_subjects)
        for s in range(num_subjects)
        if s != t
        for k in range(videos_per_subject)
    ]
    if not 2 <= num_fakes <= len(choices):
        raise ValueError(
            f"num_fakes={num_fakes}: need 2 (one listed, one not) to {len(choices)} "
            f"(every target, source and video of {num_subjects} subjects)."
        )
    _write_marker(root, "make_celebdf_tree", seed, dataset="Celeb-DF-v2")
    rng = np.random.default_rng(_seed(seed, "celebdf", "layout"))
    writer = _Writer(root, seed, frames, frame_size, fps)
    celebs = [_drawn_face(seed, f"celebdf/id{i}") for i in range(num_subjects)]
    reals = []
    for i in range(num_subjects):
        for k in range(videos_per_subject):
            reals.append(f"{CELEB_REAL}/id{i}_{k:04d}.mp4")
            writer.real(reals[-1], celebs[i])
    for n in range(num_youtube):
        reals.append(f"{YOUTUBE_REAL}/{n:05d}.mp4")
        writer.real(reals[-1], _drawn_face(seed, reals[-1]))
    originals = {}
    for index in sorted(rng.choice(len(choices), num_fakes, replace=False)):
        t, s, k = choices[index]
        fake = f"{CELEB_SYNTHESIS}/id{t}_id{s}_{k:04d}.mp4"
        originals[fake] = f"{CELEB_REAL}/id{t}_{k:04d}.mp4"
        writer.fake(fake, SWAP, originals[fake], celebs[s])
    fakes = list(originals)

    not_listed = [reals[rng.integers(len(reals))], fakes[rng.integers(len(fakes))]]
    listed = [v for v in reals + fakes if v not in not_listed]
    listed = [listed[i] for i in rng.permutation(len(listed))]  # the real list mixes folders
    test_videos = {v: int(v in originals) for v in listed}
    lines = [f"{1 - test_videos[v]} {v}" for v in listed]
    planted = {}
    if "corrupt" in bad:
        planted["corrupt"] = [listed[rng.integers(len(listed))]]
        corrupt_file(root / planted["corrupt"][0], "truncated")
    if "missing" in bad:
        # The next YouTube number: a well-formed line whose file was never downloaded.
        planted["missing"] = [f"{YOUTUBE_REAL}/{num_youtube:05d}.mp4"]
        test_videos[planted["missing"][0]] = 0
        lines.insert(len(lines) // 2, f"1 {planted['missing'][0]}")
    if "malformed_line" in bad:
        # They name videos that exist but are unlisted: a lenient parser would add them.
        planted["malformed_line"] = [f"2 {not_listed[0]}", not_listed[1]]
        lines.insert(1, planted["malformed_line"][0])
        lines.append(planted["malformed_line"][1])
    test_list = root / CELEBDF_TEST_LIST
    test_list.write_text("".join(line + "\n" for line in lines))
    return CelebDFTree(
        root=root,
        test_list=test_list,
        test_videos=test_videos,
        not_listed=not_listed,
        planted=planted,
        originals=originals,
        face_boxes=writer.face_boxes,
    )


def make_dfdc_tree(
    root,
    *,
    parts: int = 2,
    clips_per_part: int = 4,
    test_clips: int = 4,
    frames: int = 12,
    width: int = 160,
    height: int = 120,
    fps: float = 10,
    seed: int = 0,
    bad=(),
) -> DFDCTree:
    """Writes a small DFDC-shaped tree of synthetic clips.

    Each training part `dfdc_train_part_{p}/` holds clips named like DFDC's (10 random
    lowercase letters + '.mp4') and a `metadata.json` mapping each clip to
    `{"label": "REAL"|"FAKE", "split": "train"}`, plus `"original": "<clip>.mp4"` for fakes.
    The public test set `test/` holds clips and `labels.csv` (`filename,label`, 1 fake).
    In every folder about half the clips are fakes, each made from a real clip of the same
    folder, alternately by a face swap with another clip's subject (FaceShifter style) and
    by a reenactment (NeuralTextures style: the mouth re-rendered). Deterministic for a
    seed; planting faults changes no other clip.

    Args:
      root: folder to write into (created; existing files are overwritten).
      parts: training parts (>= 2 when planting 'metadata_unreadable').
      clips_per_part: clips per part (>= 1), floor(half) of them fakes.
      test_clips: clips in test/ (>= 1), floor(half) of them fakes.
      frames: frames per clip.
      width: frame width (even, >= 32).
      height: frame height (even, >= 32).
      fps: frame rate written in every clip.
      seed: seed of everything random.
      bad: faults to plant, among 'missing' (a REAL metadata entry in part 0 and a labels.csv
        row whose clips do not exist), 'unknown_label' (a clip in part 0 whose metadata label
        is 'UNSURE'), 'corrupt' (a clip of part 0 and one of test/ truncated) and
        'metadata_unreadable' (the last part's metadata.json cut in half: not valid JSON).

    Returns:
      The `DFDCTree`.
    """
    root = Path(root)
    frame_size = _check_video_settings(frames, (width, height), fps)
    bad = _check_bad(bad, DFDC_BAD)
    if parts < 1 or clips_per_part < 1 or test_clips < 1:
        raise ValueError(
            f"parts={parts}, clips_per_part={clips_per_part}, test_clips={test_clips}: "
            "each must be >= 1."
        )
    if "metadata_unreadable" in bad and parts < 2:
        raise ValueError("bad='metadata_unreadable' needs parts >= 2: one part stays readable.")
    _write_marker(root, "make_dfdc_tree", seed, dataset="DFDC")
    name_rng = np.random.default_rng(_seed(seed, "dfdc", "names"))
    used: set[str] = set()

    def new_name() -> str:
        while True:
            name = "".join(name_rng.choice(_LETTERS, 10)) + ".mp4"
            if name not in used:
                used.add(name)
                return name

    writer = _Writer(root, seed, frames, frame_size, fps)
    originals, methods = {}, {}

    def fill(folder: str, count: int) -> dict[str, str | None]:
        """Writes a folder's clips: name -> its original's name (None for reals)."""
        rng = np.random.default_rng(_seed(seed, "dfdc", folder))
        names = [new_name() for _ in range(count)]
        reals, fakes = names[: count - count // 2], names[count - count // 2 :]
        for name in reals:
            writer.real(f"{folder}/{name}", _drawn_face(seed, f"dfdc/{name}"))
        made = dict.fromkeys(reals)
        for j, name in enumerate(fakes):
            original = reals[rng.integers(len(reals))]
            others = [r for r in reals if r != original]
            method = SWAP if j % 2 == 0 else REENACT
            if method == REENACT:
                source = writer.face(f"{folder}/{original}")
            elif others:
                source = writer.face(f"{folder}/{others[rng.integers(len(others))]}")
            else:
                source = _drawn_face(seed, f"dfdc/{name}/source")
            rel = f"{folder}/{name}"
            originals[rel], methods[rel] = f"{folder}/{original}", method
            writer.fake(rel, method, originals[rel], source)
            made[name] = original
        return made

    part_clips = [fill(DFDC_PART.format(p), clips_per_part) for p in range(parts)]
    test_clips_made = fill(DFDC_TEST, test_clips)
    metadata = [
        {
            name: {"label": "REAL", "split": "train"}
            if original is None
            else {"label": "FAKE", "split": "train", "original": original}
            for name, original in clips.items()
        }
        for clips in part_clips
    ]
    test = {f"{DFDC_TEST}/{name}": int(o is not None) for name, o in test_clips_made.items()}
    planted = {}
    part0 = DFDC_PART.format(0)
    if "missing" in bad:
        train_name, test_name = new_name(), new_name()
        metadata[0][train_name] = {"label": "REAL", "split": "train"}
        test[f"{DFDC_TEST}/{test_name}"] = 0
        planted["missing"] = [f"{part0}/{train_name}", f"{DFDC_TEST}/{test_name}"]
    if "unknown_label" in bad:
        name = new_name()
        writer.real(f"{part0}/{name}", _drawn_face(seed, f"dfdc/{name}"))
        metadata[0][name] = {"label": DFDC_UNKNOWN_LABEL, "split": "train"}
        planted["unknown_label"] = [f"{part0}/{name}"]
    if "corrupt" in bad:
        planted["corrupt"] = [
            f"{part0}/{min(part_clips[0])}",
            f"{DFDC_TEST}/{min(test_clips_made)}",
        ]
        for rel in planted["corrupt"]:
            corrupt_file(root / rel, "truncated")
    train = {}
    for p, meta in enumerate(metadata):
        folder = DFDC_PART.format(p)
        text = json.dumps(dict(sorted(meta.items())))
        if "metadata_unreadable" in bad and p == parts - 1:
            # A download cut short: the part's clips are there, their labels are not.
            (root / folder / DFDC_METADATA).write_text(text[: len(text) // 2])
            planted["metadata_unreadable"] = [f"{folder}/{DFDC_METADATA}"]
            continue
        (root / folder / DFDC_METADATA).write_text(text)
        for name, entry in meta.items():
            if entry["label"] in ("REAL", "FAKE"):
                original = entry.get("original")
                train[f"{folder}/{name}"] = (
                    int(entry["label"] == "FAKE"),
                    None if original is None else f"{folder}/{original}",
                )
    rows = "".join(f"{rel.split('/', 1)[1]},{label}\n" for rel, label in sorted(test.items()))
    (root / DFDC_TEST / DFDC_LABELS).write_text("filename,label\n" + rows)
    return DFDCTree(
        root=root,
        train=dict(sorted(train.items())),
        test=dict(sorted(test.items())),
        planted=planted,
        originals=originals,
        methods=methods,
        face_boxes=writer.face_boxes,
    )
