"""Where a training frame's host time goes: each input stage timed alone, on one core.

`ffjax bench --pipeline_stages` reads records of the config's built training split and times,
per frame and in this one process (so the figures are per core): reading and parsing the
record without decoding, decoding the PNG crop and the zlib mask, each augmentation of
`config.augment` applied on its own (and its expected cost per frame: its time times how often
it is applied), stacking a batch, and the copy onto one device. The sum is the host time of one
augmented frame; 1 / sum is what one core can feed.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import jax
import numpy as np

from ffjax.data import augment as augment_lib
from ffjax.data import pipeline


def _per_frame_us(fn: Callable[[int], Any], count: int, repeats: int = 3) -> float:
    """Best of `repeats` passes of `fn(i)` over `count` frames, in microseconds per frame."""
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        for i in range(count):
            fn(i)
        best = min(best, (time.perf_counter() - tick) / count)
    return best * 1e6


def _only(cfg: Any, name: str) -> Any:
    """`cfg` (the augment block) with only augmentation `name` switched on, always applied."""
    one = copy.deepcopy(cfg)
    with one.unlocked():
        one.flip, one.scale_jitter, one.color_jitter, one.jpeg_prob, one.blur_prob = False, 0.0, 0.0, 0.0, 0.0
        if name == "flip":
            one.flip = True
        elif name == "scale_jitter":
            one.scale_jitter = cfg.scale_jitter
        elif name == "color_jitter":
            one.color_jitter = cfg.color_jitter
        elif name == "blur":
            one.blur_prob = 1.0
        elif name == "jpeg":
            one.jpeg_prob = 1.0
    return one


# How often each augmentation runs per frame, from the config.
def _rates(cfg: Any) -> dict[str, float]:
    return {
        "flip": 0.5 if cfg.flip else 0.0,
        "scale_jitter": 1.0 if cfg.scale_jitter > 0 else 0.0,
        "color_jitter": 1.0 if cfg.color_jitter > 0 else 0.0,
        "blur": float(cfg.blur_prob),
        "jpeg": float(cfg.jpeg_prob),
    }


def _stored_as(feature: Any) -> str:
    """How a TFDS feature stores its array: PNG (dataset 2.0.0 images), zlib, raw bytes."""
    if type(feature).__name__ == "Image":
        return "PNG"
    encoding = getattr(getattr(feature, "_encoding", None), "value", "none")  # tfds keeps it private
    return {"bytes": "raw bytes", "zlib": "zlib"}.get(encoding, encoding)


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
    import tensorflow_datasets as tfds

    split = pipeline.open_split(config.dataset, config.dataset.train_split)
    frames = min(frames, len(split))
    builder = tfds.builder_from_directory(split.path)
    raw = builder.as_data_source(
        split=split.name, decoders={"image": tfds.decode.SkipDecoding(), "mask": tfds.decode.SkipDecoding()}
    )
    image_feature, mask_feature = builder.info.features["image"], builder.info.features["mask"]
    records = [raw[i] for i in range(frames)]
    images = [image_feature.decode_example_np(r["image"]) for r in records]
    masks = [mask_feature.decode_example_np(r["mask"]) for r in records]
    size = int(images[0].shape[0])
    rows: list[dict[str, Any]] = []

    def add(stage: str, us: float, applied: float = 1.0) -> None:
        rows.append({"stage": stage, "us_per_frame": round(us, 1), "applied_per_frame": applied,
                     "expected_us_per_frame": round(us * applied, 1)})

    add("read + parse record (no decoding)", _per_frame_us(lambda i: raw[i], frames))
    add(f"decode image ({_stored_as(image_feature)})", _per_frame_us(lambda i: image_feature.decode_example_np(records[i]["image"]), frames))
    add(f"decode mask ({_stored_as(mask_feature)})", _per_frame_us(lambda i: mask_feature.decode_example_np(records[i]["mask"]), frames))
    add("to_example (the whole decoded record)", _per_frame_us(lambda i: pipeline.to_example(split.source[i]), frames)
        - rows[0]["us_per_frame"] - rows[1]["us_per_frame"] - rows[2]["us_per_frame"])
    rates = _rates(config.augment)
    for name, rate in rates.items():
        if rate == 0.0:
            continue
        one = _only(config.augment, name)
        rngs = [np.random.default_rng([0, i]) for i in range(frames)]
        if name == "flip":
            # Flip draws below 0.5 to apply: find draws that do, so the applied cost is timed.
            rngs = [np.random.default_rng([0, i]) for i in range(frames * 4) if np.random.default_rng([0, i]).random() < 0.5][:frames]
        add(f"augment: {name}", _per_frame_us(lambda i: augment_lib.augment(images[i], masks[i], rngs[i], one), frames), rate)
    examples = [pipeline.to_example(split.source[i % frames]) for i in range(batch)]
    add("stack a batch", _per_frame_us(
        lambda i: {k: np.stack([e[k] for e in examples]) for k in pipeline.BATCH_KEYS}, 8) / batch)
    stacked = {k: np.stack([e[k] for e in examples]) for k in pipeline.BATCH_KEYS}
    device = jax.local_devices()[0]
    add("copy onto one device", _per_frame_us(lambda i: jax.block_until_ready(jax.device_put(stacked, device)), 8) / batch)
    total = sum(r["expected_us_per_frame"] for r in rows)
    return {
        "dataset": split.path,
        "split": split.name,
        "image_size": size,
        "frames": frames,
        "augment": {k: v for k, v in config.augment.to_dict().items()},
        "stages": rows,
        "total_us_per_frame": round(total, 1),
        "frames_per_s_per_core": round(1e6 / total, 1),
    }


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
    return "\n".join(lines)
