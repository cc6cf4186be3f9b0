"""Where a training frame's host time goes: each input stage timed alone, on one core.

`ffjax bench --pipeline_stages` reads records of the config's built training split and times,
per frame and in this one process (so the figures are per core): reading the record, parsing
it, making the batch row, the host's augmentation (JPEG re-compression; its expected cost per
frame is its time times how often it is applied), stacking a batch, and the copy onto one
device. The sum is the host time of one augmented frame; 1 / sum is what one core can feed.
The augmentations that run in the training step (flip, scale, blur, colour) are timed apart,
on the first local device.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import jax
import numpy as np

from ffjax.data import augment as augment_lib
from ffjax.data import pipeline
from ffjax.data import records as records_lib


def _per_frame_us(fn: Callable[[int], Any], count: int, repeats: int = 3) -> float:
    """Best of `repeats` passes of `fn(i)` over `count` frames, in microseconds per frame."""
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        for i in range(count):
            fn(i)
        best = min(best, (time.perf_counter() - tick) / count)
    return best * 1e6


def measure_stages(config: Any, *, frames: int = 64, batch: int = 32) -> dict[str, Any]:
    """Per-stage host microseconds per training frame on this core.

    Args:
      config: the run config (its built training split and `augment` block).
      frames: records timed (the first ones of the split).
      batch: rows per stacked batch in the stacking and device-copy stages.

    Returns:
      {'stages': [{'stage', 'us_per_frame', 'applied_per_frame', 'expected_us_per_frame'}],
       'total_us_per_frame', 'frames_per_s_per_core', 'image_size', ...}.
    """
    split = pipeline.open_split(config.dataset, config.dataset.train_split)
    frames = min(frames, len(split))
    source = split.source
    rows: list[dict[str, Any]] = []

    def add(stage: str, us: float, applied: float = 1.0) -> None:
        rows.append({"stage": stage, "us_per_frame": round(us, 1), "applied_per_frame": applied,
                     "expected_us_per_frame": round(us * applied, 1)})

    if isinstance(source, records_lib.Records):
        raws = [source.raw(i) for i in range(frames)]
        add("read record (array_record: zstd decompression)", _per_frame_us(source.raw, frames))
        add("parse record (protobuf; crop and mask as views)", _per_frame_us(lambda i: source.parse(raws[i]), frames))
    else:  # a dataset this reader leaves to TFDS (crops stored as PNG: dataset 2.0.0)
        add("read + parse + decode record (TFDS data source)", _per_frame_us(lambda i: source[i], frames))
    parsed = [source[i] for i in range(frames)]
    add("to_example (ids, dtypes)", _per_frame_us(lambda i: pipeline.to_example(parsed[i]), frames))
    images = [np.asarray(r["image"]) for r in parsed]
    size = int(images[0].shape[0])
    if augment_lib.host_enabled(config.augment):
        always = copy.deepcopy(config.augment)
        with always.unlocked():
            always.jpeg_prob = 1.0
        # Timed where it applies; it runs on a `jpeg_prob` share of the frames.
        add("augment on the host: JPEG re-compression", _per_frame_us(
            lambda i: augment_lib.host_augment(images[i], np.random.default_rng([0, i]), always), frames),
            float(config.augment.jpeg_prob))
    examples = [pipeline.to_example(parsed[i % frames]) for i in range(batch)]
    add("stack a batch", _per_frame_us(
        lambda i: {k: np.stack([e[k] for e in examples]) for k in pipeline.BATCH_KEYS}, 8) / batch)
    stacked = {k: np.stack([e[k] for e in examples]) for k in pipeline.BATCH_KEYS}
    stacked["position"] = augment_lib.positions(0, batch)
    device = jax.local_devices()[0]
    add("copy onto one device", _per_frame_us(lambda i: jax.block_until_ready(jax.device_put(stacked, device)), 8) / batch)
    total = sum(r["expected_us_per_frame"] for r in rows)
    return {
        "device_augment_us_per_frame": _device_augment_us(config, stacked),
        "dataset": split.path,
        "split": split.name,
        "image_size": size,
        "frames": frames,
        "augment": {k: v for k, v in config.augment.to_dict().items()},
        "stages": rows,
        "total_us_per_frame": round(total, 1),
        "frames_per_s_per_core": round(1e6 / total, 1),
    }


def _device_augment_us(config: Any, stacked: dict[str, np.ndarray]) -> float | None:
    """Microseconds per frame of the step's device augmentation on the first local device
    (None when the config has none)."""
    on_device = augment_lib.from_config(config.augment, config.seed)
    if on_device is None:
        return None
    device = jax.local_devices()[0]
    args = jax.device_put((stacked["image"], stacked["mask"], stacked["position"]), device)
    fn = jax.jit(on_device)
    jax.block_until_ready(fn(*args))
    count = len(stacked["image"])
    return round(_per_frame_us(lambda i: jax.block_until_ready(fn(*args)), 4) / count, 1)


def stages_table(result: dict) -> str:
    """The stage breakdown as a Markdown table."""
    lines = [f"Host time per training frame, one core, {result['image_size']} px "
             f"({result['frames']} frames of {result['split']}):", "",
             "| stage | us per call | applied per frame | us per frame | share |", "|---|---:|---:|---:|---:|"]
    total = result["total_us_per_frame"]
    for r in result["stages"]:
        lines.append(f"| {r['stage']} | {r['us_per_frame']:.0f} | {r['applied_per_frame']:.2f} | "
                     f"{r['expected_us_per_frame']:.0f} | {100 * r['expected_us_per_frame'] / total:.0f} % |")
    lines.append(f"| **total** | | | **{total:.0f}** | {result['frames_per_s_per_core']:.0f} frames/s per core |")
    if result.get("device_augment_us_per_frame") is not None:
        lines += ["", f"In the training step, on {jax.local_devices()[0].platform}: flip, scale, blur and colour "
                  f"jitter, {result['device_augment_us_per_frame']:.0f} us per frame (not host time)."]
    return "\n".join(lines)
