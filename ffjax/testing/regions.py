"""Per-frame binary regions stored as small windows (a whole-frame array per fake is wasteful)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class RegionTrack:
    """A binary region per frame of a video, kept as the window around it.

    Attributes:
      shape: (height, width) of the frames.
      windows: int32 [T, 4] x0, y0, x1, y1 (exclusive) of each frame's window.
      crops: T bool arrays, crop t of shape [y1 - y0, x1 - x0]; outside it nothing is set.
    """

    shape: tuple[int, int]
    windows: np.ndarray
    crops: tuple[np.ndarray, ...]

    @classmethod
    def from_crops(cls, shape, parts) -> "RegionTrack":
        """Builds a track from (window as (rows, cols) slices, bool crop) per frame.

        Args:
          shape: (height, width) of the frames.
          parts: sequence of ((rows, cols), crop) pairs, one per frame.

        Returns:
          The `RegionTrack`.
        """
        windows, crops = [], []
        for (rows, cols), crop in parts:
            crop = np.asarray(crop, bool)
            if crop.shape != (rows.stop - rows.start, cols.stop - cols.start):
                raise ValueError(f"crop of shape {crop.shape} does not fill window {rows}, {cols}.")
            windows.append((cols.start, rows.start, cols.stop, rows.stop))
            crops.append(crop)
        return cls(tuple(shape), np.asarray(windows, np.int32).reshape(-1, 4), tuple(crops))

    def __len__(self) -> int:
        return len(self.crops)

    def frame(self, t: int) -> np.ndarray:
        """The region of frame `t` as bool [H, W]."""
        out = np.zeros(self.shape, bool)
        x0, y0, x1, y1 = self.windows[t]
        out[y0:y1, x0:x1] = self.crops[t]
        return out

    def to_array(self) -> np.ndarray:
        """All frames as bool [T, H, W]."""
        if not len(self):
            return np.zeros((0, *self.shape), bool)
        return np.stack([self.frame(t) for t in range(len(self))])

    def areas(self) -> np.ndarray:
        """Pixels set per frame: int64 [T]."""
        return np.array([int(c.sum()) for c in self.crops], np.int64)

    def bounding_box(self, t: int) -> tuple[int, int, int, int] | None:
        """Tight x0, y0, x1, y1 (exclusive) of frame `t`'s region, or None if it is empty."""
        crop = self.crops[t]
        rows, cols = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
        if rows.size == 0:
            return None
        x0, y0 = self.windows[t][:2]
        x0, y0 = int(x0), int(y0)
        left, top = x0 + int(cols[0]), y0 + int(rows[0])
        return (left, top, x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
