"""Reading what `ffjax predict` is given (a video, a folder of frames, an image) and writing
its annotated copy in the same form.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ffjax.data import video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class Source:
    """What `--input` names.

    Attributes:
      kind: 'video', 'frames' (a folder of images, one per frame) or 'image'.
      path: the input path.
      fps: frame rate of a video (0 when unknown); 0 for frames and images.
      files: the frame files of a folder, in frame order; empty otherwise.
      skipped: `(name, reason)` of what a folder holds besides frame images (subfolders,
        videos, other files): listed in the prediction record, never silently dropped.
    """

    kind: str
    path: Path
    fps: float = 0.0
    files: tuple[Path, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()


def _natural_key(path: Path) -> list:
    # frame_2 before frame_10, as a video would order them.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def open_source(path) -> Source:
    """Classifies the input and checks that it can be read, naming it in every error.

    Args:
      path: a video file, a folder of frame images, or one image.

    Returns:
      The `Source`.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--input {path}: no such file or folder.")
    if path.is_dir():
        entries = sorted(path.iterdir(), key=_natural_key)
        files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        skipped = tuple((p.name, _why_not_a_frame(p)) for p in entries if p not in files)
        if not files:
            raise ValueError(
                f"--input {path}: the folder holds no frame images ({', '.join(IMAGE_EXTENSIONS)})"
                + (f"; it holds {', '.join(f'{n} ({r})' for n, r in skipped[:5])}" if skipped else "") + "."
            )
        return Source("frames", path, files=tuple(files), skipped=skipped)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        read_image(path)
        return Source("image", path)
    try:
        info = video.probe_video(path)
    except video.VideoError as e:
        raise ValueError(
            f"--input {path}: not a video or image OpenCV can read ({e}). Give a video "
            f"({', '.join(VIDEO_EXTENSIONS)}), an image or a folder of frames."
        ) from None
    return Source("video", path, fps=info.fps)


def _why_not_a_frame(path: Path) -> str:
    if path.is_dir():
        return "a folder: frames are read from one folder; give it as --input"
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return "a video: give it as --input on its own"
    return f"not an image ({', '.join(IMAGE_EXTENSIONS)})"


def read_image(path: Path) -> np.ndarray:
    """Decodes an image file to uint8 RGB, or fails naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: OpenCV cannot decode this image (corrupt or not an image).")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_sampling(every_n_frames: int, max_frames: int | None) -> None:
    """Fails naming the flag when the frame sampling settings make no sense."""
    if every_n_frames < 1:
        raise ValueError(f"--every_n_frames={every_n_frames} must be >= 1.")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max_frames={max_frames} must be >= 1.")


def iter_frames(
    source: Source, every_n_frames: int = 1, max_frames: int | None = None, skipped: list | None = None
) -> Iterator[tuple[int, str, np.ndarray]]:
    """Yields `(frame_index, name, rgb)` for every `every_n_frames`-th frame, in order.

    A video is read once from the start; skipped frames are only grabbed (not converted).
    Reading stops at the first frame that does not decode (containers may overstate counts).
    In a folder of frames, an image that does not decode is passed over and appended to
    `skipped` as `(name, reason)` (one bad file does not abort the folder).
    """
    check_sampling(every_n_frames, max_frames)
    if source.kind == "image":
        yield 0, source.path.name, read_image(source.path)
        return
    if source.kind == "frames":
        picked = source.files[::every_n_frames][:max_frames]
        for k, path in enumerate(picked):
            try:
                image = read_image(path)
            except ValueError:
                if skipped is None:
                    raise
                skipped.append((path.name, "does not decode (empty or corrupt image)"))
                continue
            yield k * every_n_frames, path.name, image
        return
    cap = cv2.VideoCapture(str(source.path))
    try:
        index = taken = 0
        while max_frames is None or taken < max_frames:
            if index % every_n_frames:
                ok = cap.grab()
            else:
                ok, frame = cap.read()
                if ok and frame is not None:
                    yield index, f"{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    taken += 1
            if not ok:
                break
            index += 1
    finally:
        cap.release()


# ----------------------------------------------------------------------------- outputs


def write_image(path, frame_rgb: np.ndarray, *, png_compression: int = 3) -> Path:
    """Writes an RGB frame as an image file (PNG keeps the overlay exact).

    Args:
      path: output file; its extension picks the format.
      frame_rgb: uint8 [H, W, 3] RGB.
      png_compression: zlib level 0-9 for PNG (9: smallest, slowest).

    Returns:
      The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)] if path.suffix.lower() == ".png" else []
    if not cv2.imwrite(str(path), cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"{path}: OpenCV could not write this image (check the folder and extension).")
    return path


class VideoSink:
    """An mp4 ('mp4v', the codec the OpenCV wheel can encode) written frame by frame.

    The writer opens on the first frame, so its size comes from the frames themselves.
    """

    def __init__(self, path, fps: float):
        self.path = Path(path)
        self._fps = float(fps) if fps and fps > 0 else 25.0
        self._writer = None
        self._size = None

    def write(self, frame_rgb: np.ndarray, name: str = "") -> None:
        height, width = frame_rgb.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # mp4v needs even sides; odd ones are padded by one black row/column below.
            self._size = (width + width % 2, height + height % 2)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self._fps, self._size)
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV could not open an mp4v video writer for it.")
        if (width + width % 2, height + height % 2) != self._size:
            raise ValueError(f"{self.path}: frame {name!r} is {width}x{height}, the video is {self._size[0]}x{self._size[1]}.")
        frame = cv2.copyMakeBorder(frame_rgb, 0, height % 2, 0, width % 2, cv2.BORDER_CONSTANT)
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


class FolderSink:
    """One PNG per frame in a folder, named after the input frame."""

    def __init__(self, folder):
        self.path = Path(folder)

    def write(self, frame_rgb: np.ndarray, name: str = "") -> None:
        write_image(self.path / f"{Path(name).stem}.png", frame_rgb)

    def close(self) -> None:
        pass


class ImageSink:
    """The single annotated image of an image input."""

    def __init__(self, path):
        self.path = Path(path)

    def write(self, frame_rgb: np.ndarray, name: str = "") -> None:
        write_image(self.path, frame_rgb)

    def close(self) -> None:
        pass
