"""What the model is fed: a grid of training crops and their masks, before and after augmentation.

`ffjax bench --config C --augment_grid --out grid.png` takes a few records of the config's
built training split (fakes of different methods whose masks cover part of the crop, then an
original), and draws one row per record: the stored
crop, then `columns` augmented versions exactly as training makes them: the host's JPEG
re-compression, then the step's device augmentation (`augment.DeviceAugment`, jitted here), for
global positions 0, 1, ... The manipulated pixels
of each panel are outlined in red, so a flip or a crop visibly moves image and mask together.
Panels are drawn at 128 px.
"""

from __future__ import annotations

from typing import Any

import cv2
import jax
import numpy as np

from ffjax.data import augment as augment_lib
from ffjax.data import pipeline

OUTLINE = (255, 40, 40)


PANEL = 128  # px per panel in the grid


def _panel(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    shrink = image.shape[0] > PANEL
    out = cv2.resize(image, (PANEL, PANEL), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)
    edges = cv2.resize(mask, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours((edges > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.ascontiguousarray(out)
    cv2.drawContours(out, contours, -1, OUTLINE, 1)
    return out


def make_grid(config: Any, *, rows: int = 4, columns: int = 4, seed: int = 0) -> np.ndarray:
    """The grid as an RGB uint8 image.

    Args:
      config: the run config (its built training split and `augment` block).
      rows: records shown (fakes with the largest masks first, then originals).
      columns: augmented versions per record, beside the stored crop.
      seed: the augmentation seed (the training reader uses `config.seed`).

    Returns:
      uint8 [H, W, 3].
    """
    split = pipeline.open_split(config.dataset, config.dataset.train_split)
    candidates = [pipeline.to_example(split.source[i]) for i in np.linspace(0, len(split) - 1, min(len(split), 8 * rows)).astype(int)]
    # Fakes whose mask covers part of the crop (an outline inside the panel shows best), one per
    # method while there are several, then an original.
    fakes = sorted((e for e in candidates if e["label"] == 1), key=lambda e: abs(float(e["mask"].mean()) - 0.25))
    chosen: list[dict] = []
    for e in fakes:
        if int(e["method_id"]) not in {int(c["method_id"]) for c in chosen}:
            chosen.append(e)
    chosen += [e for e in fakes if not any(e is c for c in chosen)]
    chosen = chosen[: rows - 1]
    chosen.append(next((e for e in candidates if e["label"] == 0), candidates[-1]))
    on_device = augment_lib.from_config(config.augment, seed)
    on_device = jax.jit(on_device) if on_device is not None else None
    gap = np.full((PANEL, 4, 3), 255, np.uint8)
    lines = []
    for r, example in enumerate(chosen):
        panels = [_panel(example["image"], example["mask"])]
        first = r * columns
        images, masks = [], []
        for position in range(first, first + columns):
            image = example["image"]
            if augment_lib.host_enabled(config.augment):
                image = augment_lib.host_augment(image, np.random.default_rng([seed, position]), config.augment)
            images.append(image)
            masks.append(example["mask"])
        images, masks = np.stack(images), np.stack(masks)
        if on_device is not None:
            images, masks = on_device(images, masks, augment_lib.positions(first, columns))
            images = np.clip(np.rint(np.asarray(images)), 0, 255).astype(np.uint8)
            masks = np.asarray(masks)
        panels += [_panel(image, mask) for image, mask in zip(images, masks)]
        row = [p for panel in panels for p in (panel, gap)][:-1]
        lines += [np.concatenate(row, axis=1), np.full((4, sum(p.shape[1] for p in row), 3), 255, np.uint8)]
    return np.concatenate(lines[:-1], axis=0)


def write_grid(config: Any, out: str, **kwargs) -> str:
    """Writes `make_grid` as a PNG at `out`; returns the path."""
    grid = make_grid(config, **kwargs)
    if not cv2.imwrite(out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"--out {out}: OpenCV could not write the PNG there.")
    return out
