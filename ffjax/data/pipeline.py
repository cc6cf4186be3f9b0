"""The input pipeline: built FF++ records -> per-process numpy batches -> global device arrays.

grain reads the TFDS `array_record` files without TensorFlow. Each process reads only its own
share of a split; training batches are shuffled (seeded), optionally class balanced, augmented
identically for image and mask, and come from an iterator whose position is checkpointable.
Evaluation batches keep every record exactly once, in a fixed order, padded at the end with
rows marked `valid=False`, and carry the host-side metadata (`video_id`, `frame_index`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Iterator

import grain
import jax
import numpy as np

from ffjax.data import augment as augment_lib
from ffjax.data import ffpp

BATCH_KEYS = ("image", "mask", "label", "method_id", "compression_id")


# --------------------------------------------------------------------------- opening data


def dataset_dir(data_dir: str, name: str, config_name: str) -> str:
    """Path of the newest built version of `name/config_name` under `data_dir`.

    Raises:
      FileNotFoundError: naming the folder and the command that builds it.
    """
    root = os.path.join(os.path.expanduser(data_dir), name, config_name)
    versions = []
    if os.path.isdir(root):
        for v in os.listdir(root):
            if os.path.isfile(os.path.join(root, v, "dataset_info.json")):
                versions.append(v)
    if not versions:
        raise FileNotFoundError(
            f"No built dataset at {root} (config.dataset.data_dir={data_dir!r}, "
            f"config.dataset.config_name={config_name!r}). Build it from your FF++ copy first: "
            f"`ffjax build-data --manual_dir /path/to/FaceForensics++ --data_dir {data_dir}`."
        )
    versions.sort(key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
    return os.path.join(root, versions[-1])


@dataclasses.dataclass
class Split:
    """One split of a built dataset: a random-access source plus what describes it."""

    source: Any                  # random-access sequence of record dicts (tfds data source)
    path: str                    # dataset version folder
    name: str                    # split name
    info: dict                   # dataset_info.json

    def __len__(self) -> int:
        return len(self.source)

    def fingerprint(self) -> str:
        """A short hash of what was built: config, version, split sizes, file checksums."""
        keep = {k: self.info.get(k) for k in ("name", "configName", "version", "splits", "config")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_split(dataset_cfg: Any, split: str) -> Split:
    """Opens `split` of the dataset described by `config.dataset`.

    Reads the folder written by the builder with `tfds.builder_from_directory`, so the builder
    class need not be importable here.
    """
    import tensorflow_datasets as tfds

    path = dataset_dir(dataset_cfg.data_dir, dataset_cfg.name, dataset_cfg.config_name)
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
        raise ValueError(
            f"Split {split!r} is not in {path} (it has {sorted(builder.info.splits)}): check "
            f"config.dataset.train_split / eval_split."
        )
    source = builder.as_data_source(split=split)
    if len(source) == 0:
        raise ValueError(f"Split {split!r} of {path} is empty: see its manifest_{split}.json for what was skipped.")
    with open(os.path.join(path, "dataset_info.json")) as f:
        info = json.load(f)
    return Split(source=source, path=path, name=split, info=info)


def _process_indices(n: int, process_index: int | None = None, process_count: int | None = None) -> np.ndarray:
    """Record indices read by this process: a strided share, so shares differ by at most 1."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    return np.arange(n)[pi::pc]


class _Subset:
    """A random-access view of `source` restricted to `indices`."""

    def __init__(self, source: Any, indices: np.ndarray):
        self._source = source
        self._indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> Any:
        return self._source[int(self._indices[i])]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def to_example(record: dict) -> dict[str, np.ndarray]:
    """A builder record -> the arrays a batch holds (ids instead of strings)."""
    return {
        "image": np.asarray(record["image"], np.uint8),
        "mask": np.asarray(record["mask"], np.uint8),
        "label": np.int32(record["label"]),
        "method_id": np.int32(ffpp.METHOD_NAMES.index(_text(record["method"]))),
        "compression_id": np.int32(ffpp.COMPRESSIONS.index(_text(record["compression"]))),
    }


def read_labels(split: Split, indices: np.ndarray) -> np.ndarray:
    """Labels of the records at `indices`, reading each record once (done once per run)."""
    return np.asarray([int(split.source[int(i)]["label"]) for i in indices], np.int32)


# --------------------------------------------------------------------------- training


class _Augment(grain.transforms.RandomMap):
    def __init__(self, cfg: Any):
        self._cfg = cfg

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        image, mask = augment_lib.augment(example["image"], example["mask"], rng, self._cfg)
        return {**example, "image": image, "mask": mask}


def train_dataset(split: Split, config: Any, per_process_batch: int) -> grain.IterDataset:
    """An endless, shuffled, augmented stream of per-process batches for training.

    Args:
      split: the opened training split.
      config: the run config (reads `seed`, `dataset.*`, `augment.*`).
      per_process_batch: rows per batch that this process contributes.

    Returns:
      A grain IterDataset; `iter()` of it is checkpointable with get_state()/set_state().
    """
    indices = _process_indices(len(split))
    if config.dataset.class_balance:
        labels = read_labels(split, indices)
        parts = [indices[labels == c] for c in (0, 1)]
        if any(len(p) == 0 for p in parts):
            missing = "real" if len(parts[0]) == 0 else "fake"
            raise ValueError(
                f"config.dataset.class_balance=True but split {split.name!r} of {split.path} has no "
                f"{missing} frames on process {jax.process_index()}; set it to False or rebuild the data."
            )
        streams = [
            grain.MapDataset.source(_Subset(split.source, p)).shuffle(seed=config.seed + c).repeat()
            for c, p in enumerate(parts)
        ]
        ds = grain.MapDataset.mix(streams, weights=[0.5, 0.5])
    else:
        ds = grain.MapDataset.source(_Subset(split.source, indices)).shuffle(seed=config.seed).repeat()
    ds = ds.map(to_example)
    if _augment_enabled(config.augment):
        ds = ds.random_map(_Augment(config.augment), seed=config.seed)
    ds = ds.batch(per_process_batch, drop_remainder=True)
    it_ds = ds.to_iter_dataset()
    if config.dataset.num_workers > 0:
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.dataset.num_workers,
                per_worker_buffer_size=config.dataset.prefetch,
            )
        )
    return it_ds


def _augment_enabled(cfg: Any) -> bool:
    return bool(cfg.flip or cfg.scale_jitter > 0 or cfg.color_jitter > 0 or cfg.jpeg_prob > 0 or cfg.blur_prob > 0)


# --------------------------------------------------------------------------- evaluation


def num_eval_batches(n: int, per_process_batch: int, process_count: int | None = None) -> int:
    """Batches every process runs so that the largest share is covered (others pad)."""
    pc = jax.process_count() if process_count is None else process_count
    return max(1, math.ceil(math.ceil(n / pc) / per_process_batch))


def eval_batches(
    split: Split, per_process_batch: int, *, max_examples: int | None = None, num_threads: int = 2
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Every record of this process's share exactly once, as padded batches with metadata.

    Yields:
      (arrays, meta): arrays hold BATCH_KEYS plus `valid` (False on padding rows); meta holds
      `video_id` (str) and `frame_index` (int) per row, '' and -1 on padding. Every process
      yields the same number of batches, as collective evaluation steps require.
    """
    n = len(split) if max_examples is None else min(len(split), max_examples)
    indices = _process_indices(n)
    steps = num_eval_batches(n, per_process_batch)

    # Decoding PNGs releases the GIL in OpenCV/PIL, so a small read-ahead thread pool keeps
    # the next batch ready while the device evaluates the current one.
    ds = grain.MapDataset.source(_Subset(split.source, indices)).map(
        lambda r: (to_example(r), (_text(r["video_id"]), int(r["frame_index"])))
    )
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * per_process_batch)))
    for _ in range(steps):
        rows = []
        for _ in range(per_process_batch):
            try:
                rows.append(next(it))
            except StopIteration:
                break
        yield _pad_batch(rows, per_process_batch, split)


def _pad_batch(rows: list, size: int, split: Split) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    # An all-padding batch (a process whose share ran out) still needs the right shapes.
    template = rows[0][0] if rows else to_example(split.source[0])
    arrays = {k: np.zeros((size,) + np.shape(template[k]), np.asarray(template[k]).dtype) for k in BATCH_KEYS}
    valid = np.zeros((size,), bool)
    video_id = np.full((size,), "", dtype=object)
    frame_index = np.full((size,), -1, np.int64)
    for j, (example, (vid, frame)) in enumerate(rows):
        for k in BATCH_KEYS:
            arrays[k][j] = example[k]
        valid[j] = True
        video_id[j] = vid
        frame_index[j] = frame
    arrays["valid"] = valid
    return arrays, {"video_id": video_id, "frame_index": frame_index}
