"""FaceForensics++ facts: method names, compression levels, on-disk layout and official splits.

Everything here is about the dataset as its users have it on disk (see
docs/architecture.md for the contract); nothing decodes video.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from pathlib import Path

METHODS_WITH_MASKS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# Opt-in: FaceShifter ships no masks (they must be derived) and DeepFakeDetection has no
# official split and different originals (actors/), so neither is in the default set.
OPT_IN_METHODS = ("FaceShifter", "DeepFakeDetection")
ORIGINAL = "original"
# The fakes of the cross-dataset test sets (tfds_builders/celebdf_v2, dfdc): evaluated, never
# trained on; their reals are `original` too.
CROSS_DATASET_METHODS = ("Celeb-synthesis", "DFDC")
# `method_id` in a batch indexes this tuple: never reorder it, only append.
METHOD_NAMES = (ORIGINAL,) + METHODS_WITH_MASKS + OPT_IN_METHODS + CROSS_DATASET_METHODS
FAKE_METHODS = METHODS_WITH_MASKS + OPT_IN_METHODS
DEFAULT_METHODS = METHODS_WITH_MASKS
# Methods for which the FF++ download never contains a masks folder.
METHODS_WITHOUT_SHIPPED_MASKS = ("FaceShifter",)
DFD = "DeepFakeDetection"
COMPRESSIONS = ("raw", "c23", "c40")
# `compression_id` in a batch indexes this tuple: FF++'s levels, then the cross-dataset sets'
# videos as their authors released them.
AS_RELEASED = "as_released"
COMPRESSION_NAMES = COMPRESSIONS + (AS_RELEASED,)
SPLITS = ("train", "val", "test")
# At the root of a tree written by ffjax.testing.make_ffpp_tree (generated, not FF++): the
# builder records it, so a checkpoint says it was trained on generated data.
GENERATED_MARKER = "FFJAX_GENERATED_TREE.json"

# The download script writes `raw/`, the README and extraction script say `c0/`.
_COMPRESSION_DIRS = {"raw": ("raw", "c0"), "c23": ("c23",), "c40": ("c40",)}
_FFPP_FAKE_NAME = re.compile(r"^(\d+)_(\d+)$")
_DFD_FAKE_NAME = re.compile(r"^(\d+)_(\d+)__(.+)__([^_].*)$")
_DFD_ORIGINAL_NAME = re.compile(r"^(\d+)__(.+)$")
# DeepFakeDetection has no official split: actors are assigned by a fixed hash with the same
# 72/14/14 proportions as the official 360/70/70 pairs, so a given actor always lands in the
# same split whatever subset of the data is on disk. A fake shows two actors (the target's
# scene, the source's face): it belongs to a split only when both actors do.
_DFD_SPLIT_PERCENT = (("train", 72), ("val", 86), ("test", 100))

EXPECTED_LAYOUT = """\
<manual_dir>/
  original_sequences/youtube/<compression>/videos/000.mp4 ...
  original_sequences/actors/<compression>/videos/01__walking_outside.mp4 ...   (DeepFakeDetection)
  manipulated_sequences/<Method>/<compression>/videos/000_003.mp4 ...
  manipulated_sequences/<Method>/masks/videos/000_003.mp4 ...
where <compression> is raw (or c0), c23 or c40 and <Method> is one of
Deepfakes, Face2Face, FaceSwap, NeuralTextures, FaceShifter, DeepFakeDetection."""


class LayoutError(ValueError):
    """The FF++ root, a split file or a setting does not match what FF++ looks like."""


@dataclasses.dataclass(frozen=True)
class VideoRef:
    """One video of the FF++ tree.

    Attributes:
      method: `ORIGINAL` or a manipulation method folder name.
      compression: canonical compression name (`raw`, `c23`, `c40`).
      name: file stem, e.g. `000` or `000_003`.
      path: where the video is (or would be) on disk.
    """

    method: str
    compression: str
    name: str
    path: Path

    @property
    def video_id(self) -> str:
        """`method/compression/name`: unique across methods and compressions."""
        return f"{self.method}/{self.compression}/{self.name}"


def canonical_compression(compression: str) -> str:
    """Maps a compression name or folder alias (`c0`) to one of `COMPRESSIONS`.

    Args:
      compression: `raw`, `c0`, `c23` or `c40`.

    Returns:
      The canonical name.
    """
    if compression == "c0":
        return "raw"
    if compression not in COMPRESSIONS:
        raise LayoutError(
            f"compression={compression!r} is not an FF++ level; use one of {COMPRESSIONS} "
            "('c0' is accepted as 'raw')."
        )
    return compression


def validate_methods(methods) -> tuple[str, ...]:
    """Checks a method list and returns it as a tuple in `FAKE_METHODS` order.

    Args:
      methods: iterable of manipulation method names.

    Returns:
      The methods, de-duplicated and in canonical order.
    """
    methods = tuple(methods)
    unknown = [m for m in methods if m not in FAKE_METHODS]
    if unknown:
        raise LayoutError(f"unknown method(s) {unknown}; choose from {FAKE_METHODS}.")
    if not methods:
        raise LayoutError("methods is empty; name at least one of " f"{FAKE_METHODS}.")
    return tuple(m for m in FAKE_METHODS if m in methods)


def _compression_dir(parent: Path, compression: str) -> Path:
    """The existing folder for `compression` under `parent`, else its canonical name."""
    for alias in _COMPRESSION_DIRS[compression]:
        if (parent / alias).is_dir():
            return parent / alias
    return parent / _COMPRESSION_DIRS[compression][0]


def originals_dir(root: Path, compression: str, actors: bool = False) -> Path:
    """Folder of the real videos: youtube (FF++) or actors (DeepFakeDetection)."""
    parent = Path(root) / "original_sequences" / ("actors" if actors else "youtube")
    return _compression_dir(parent, compression) / "videos"


def method_dir(root: Path, method: str, compression: str) -> Path:
    """Folder of a manipulation method's videos at one compression level."""
    parent = Path(root) / "manipulated_sequences" / method
    return _compression_dir(parent, compression) / "videos"


def mask_dir(root: Path, method: str) -> Path:
    """Folder of a method's mask videos (one set for all compression levels)."""
    return Path(root) / "manipulated_sequences" / method / "masks" / "videos"


def video_ref(root: Path, method: str, compression: str, name: str) -> VideoRef:
    """The `VideoRef` of a named video, whether or not it exists on disk."""
    if method == ORIGINAL:
        folder = originals_dir(root, compression, actors=bool(_DFD_ORIGINAL_NAME.match(name)))
    else:
        folder = method_dir(root, method, compression)
    return VideoRef(method, compression, name, folder / f"{name}.mp4")


def mask_path(root: Path, ref: VideoRef) -> Path:
    """Where the shipped mask video of a fake would be."""
    return mask_dir(root, ref.method) / f"{ref.name}.mp4"


def target_of(method: str, name: str) -> str:
    """The original a video belongs to: its own name for originals, the target for fakes.

    Args:
      method: `ORIGINAL` or a method name.
      name: the video's file stem (`000_003`, `01_02__walking_outside__YVGY8LOK`).

    Returns:
      The target original's name (`000`, `01__walking_outside`).
    """
    if method == ORIGINAL:
        return name
    if method == DFD:
        match = _DFD_FAKE_NAME.match(name)
        if not match:
            raise LayoutError(
                f"DeepFakeDetection video {name!r} is not named "
                "<target>_<source>__<scene>__<id>.mp4."
            )
        return f"{match.group(1)}__{match.group(3)}"
    match = _FFPP_FAKE_NAME.match(name)
    if not match:
        raise LayoutError(f"{method} video {name!r} is not named <target>_<source>.mp4.")
    return match.group(1)


def default_split_dir() -> Path:
    """The official split files packaged with ffjax (copied unchanged from FF++)."""
    return Path(__file__).resolve().parent / "splits"


def load_split_pairs(split: str, split_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """Reads an official FF++ split file: a JSON list of `[target, source]` pairs.

    Args:
      split: `train`, `val` or `test`.
      split_dir: folder holding `<split>.json`; None for the packaged official files.

    Returns:
      The pairs, in file order.
    """
    if split not in SPLITS:
        raise LayoutError(f"split={split!r}; expected one of {SPLITS}.")
    path = Path(split_dir or default_split_dir()) / f"{split}.json"
    if not path.is_file():
        raise LayoutError(
            f"split file {path} not found: split_dir must hold train.json, val.json and "
            "test.json in the official FF++ format (a JSON list of two-string pairs)."
        )
    try:
        pairs = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LayoutError(f"split file {path} is not valid JSON: {e}") from e
    ok = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in pairs
    )
    if not ok:
        raise LayoutError(
            f"split file {path} must be a JSON list of two-string pairs like "
            '[["071", "054"], ...].'
        )
    return [(a, b) for a, b in pairs]


def split_members(pairs) -> tuple[list[str], list[str]]:
    """Videos named by a list of pairs: both originals and both fakes of each pair.

    Args:
      pairs: `(a, b)` pairs from `load_split_pairs`.

    Returns:
      `(originals, fakes)`: sorted names; fakes are `a_b` and `b_a` (for every method).
    """
    originals = sorted({v for pair in pairs for v in pair})
    fakes = sorted({f"{a}_{b}" for a, b in pairs} | {f"{b}_{a}" for a, b in pairs})
    return originals, fakes


def dfd_actor_split(actor: str) -> str:
    """The split of a DeepFakeDetection actor id (`01`): a fixed hash, 72/14/14 %."""
    bucket = zlib.crc32(actor.encode()) % 100
    return next(split for split, upper in _DFD_SPLIT_PERCENT if bucket < upper)


def dfd_split_of(target: str) -> str:
    """The split of a DeepFakeDetection target original (`01__walking_outside`) by actor."""
    match = _DFD_ORIGINAL_NAME.match(target)
    if not match:
        raise LayoutError(f"DeepFakeDetection original {target!r} is not named <actor>__<scene>.")
    return dfd_actor_split(match.group(1))


def dfd_fake_split(name: str) -> str | None:
    """The split of a DeepFakeDetection fake (`01_02__walking__AB12CD`): its actors' split
    when the target (01) and the source (02) are in the same one, else None (the fake would
    carry a face from another split's actor into this one)."""
    match = _DFD_FAKE_NAME.match(name)
    if not match:
        raise LayoutError(f"DeepFakeDetection video {name!r} is not named <target>_<source>__<scene>__<id>.mp4.")
    target, source = dfd_actor_split(match.group(1)), dfd_actor_split(match.group(2))
    return target if target == source else None


def check_root(root: str | Path) -> Path:
    """Checks that `root` looks like an FF++ download and returns it as a Path.

    Args:
      root: the folder the user passed as `manual_dir`.

    Returns:
      `root` as a Path.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LayoutError(
            f"manual_dir {root} does not exist: point it at the FF++ root, laid out as\n"
            f"{EXPECTED_LAYOUT}"
        )
    if not (root / "original_sequences").is_dir() and not (
        root / "manipulated_sequences"
    ).is_dir():
        raise LayoutError(
            f"manual_dir {root} has neither original_sequences/ nor manipulated_sequences/: "
            f"is it the FF++ root? Expected\n{EXPECTED_LAYOUT}"
        )
    return root
