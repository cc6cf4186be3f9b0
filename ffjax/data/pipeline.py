"""The input pipeline: built FF++ records -> per-process numpy batches -> global device arrays.

grain reads the TFDS `array_record` files without TensorFlow. Each process reads only its own
share of a split; training batches are shuffled (seeded), optionally class balanced,
JPEG-recompressed on the host (the other augmentations run in the training step, see
`augment`), and come from an iterator whose position is checkpointable.
Evaluation batches keep every record exactly once, in a fixed order, padded at the end with
rows marked `valid=False`, and carry the host-side metadata (`video_id`, `frame_index`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
from typing import Any, Iterator

import grain
import jax
import numpy as np

from ffjax import paths
from ffjax.data import augment as augment_lib
from ffjax.data import ffpp, records, store

BATCH_KEYS = ("image", "mask", "label", "method_id", "compression_id")
# Training batches also carry each row's global stream position (uint32 [B, 2]), which keys
# the augmentations the training step applies on the device (`augment.DeviceAugment`).
TRAIN_KEYS = BATCH_KEYS + ("position",)


# --------------------------------------------------------------------------- opening data


def dataset_dir(data_dir: str, name: str, config_name: str) -> str:
    """Path of the newest built version of `name/config_name` under `data_dir`.

    Raises:
      FileNotFoundError: naming the config settings, what is there, and the build command.
    """
    if name not in store.DATASET_NAMES:
        raise ValueError(f"config.dataset.name={name!r}: ffjax reads the datasets {store.DATASET_NAMES}.")
    if paths.is_url(data_dir):
        # array_record's reader opens local files only (random access by the C++ reader); a
        # bucket fails deep in a worker. Checkpoints and logs can live in the bucket.
        raise ValueError(
            f"config.dataset.data_dir={data_dir!r}: the built dataset must be on a local or mounted "
            "disk (array_record reads local files only). Copy it to each host "
            f"(gcloud storage cp -r {data_dir.rstrip('/')}/{name} ~/tensorflow_datasets/) or mount "
            "the bucket (gcsfuse) and point data_dir there."
        )
    try:
        return str(store.dataset_dir(data_dir, config_name, name=name))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config.dataset.data_dir={data_dir!r} / config.dataset.config_name={config_name!r}: {e}") from None


@dataclasses.dataclass
class Split:
    """One split of a built dataset: a random-access source plus what describes it."""

    source: Any                  # random-access sequence of record dicts (records.open_records)
    path: str                    # dataset version folder
    name: str                    # split name
    info: dict                   # dataset_info.json

    def __len__(self) -> int:
        return len(self.source)

    @functools.cached_property
    def build_settings(self) -> dict:
        """The builder settings this split was made with (image_size, crop_scale, ...).

        From the manifest the builder writes beside the records (read once; it lists every
        frame, so it can be large); {} if it is missing.
        """
        try:
            with open(os.path.join(self.path, f"manifest_{self.name}.json")) as f:
                return dict(json.load(f).get("config", {}))
        except (OSError, ValueError):
            return {}

    @property
    def has_masks(self) -> bool:
        """Whether the fakes carry pixel masks (False for the cross-dataset test sets, whose
        records hold an all-zero mask: pixel metrics there would be meaningless)."""
        return bool(self.build_settings.get("pixel_masks", True))

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
    source = records.open_records(builder, split)
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
        "compression_id": np.int32(ffpp.COMPRESSION_NAMES.index(_text(record["compression"]))),
    }


def read_index(split: Split) -> dict[str, np.ndarray]:
    """`label` and `method_id` (int32) of every record of the split, in record order.

    Reads each record once (the crops are raw bytes: nothing to decode). Cached beside the
    dataset (or in the user's cache folder when the dataset folder is read-only).
    """
    name = f"index_{split.name}_{split.fingerprint()}.npz"
    candidates = [os.path.join(split.path, name), os.path.join(os.path.expanduser("~/.cache/ffjax"), name)]
    for path in candidates:
        if os.path.exists(path):
            with np.load(path) as cached:
                index = {k: cached[k] for k in cached.files}
            if len(index.get("label", ())) == len(split):
                return index
    label, method_id = np.zeros(len(split), np.int32), np.zeros(len(split), np.int32)
    for i in range(len(split)):
        example = to_example(split.source[i])
        label[i], method_id[i] = example["label"], example["method_id"]
    index = {"label": label, "method_id": method_id}
    for path in candidates:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            np.savez(path, **index)
            break
        except OSError:
            continue
    return index


def read_labels(split: Split) -> np.ndarray:
    """The label of every record of the split, in record order (`read_index`)."""
    return read_index(split)["label"]


def training_pools(split: Split, config: Any) -> list[np.ndarray]:
    """The record indices each training stream draws from: one pool, or [real, fake] when
    `config.dataset.class_balance`; only `config.dataset.train_methods`' fakes when it names
    any (originals always stay: the cross-manipulation protocol trains on one method).

    Raises:
      ValueError: naming the setting, when a method is unknown or a pool would be empty.
    """
    methods = tuple(config.dataset.train_methods)
    unknown = sorted(set(methods) - set(ffpp.FAKE_METHODS))
    if unknown:
        raise ValueError(f"config.dataset.train_methods={methods}: {unknown} not among {ffpp.FAKE_METHODS}.")
    if not methods and not config.dataset.class_balance:
        return [np.arange(len(split))]
    index = read_index(split)
    keep = np.ones(len(split), bool)
    if methods:
        ids = [ffpp.METHOD_NAMES.index(m) for m in methods]
        keep = (index["label"] == 0) | np.isin(index["method_id"], ids)
    if not config.dataset.class_balance:
        return [np.flatnonzero(keep)]
    pools = [np.flatnonzero(keep & (index["label"] == c)) for c in (0, 1)]
    for pool, name in zip(pools, ("real", "fake")):
        if not len(pool):
            raise ValueError(
                f"config.dataset.class_balance=True but split {split.name!r} of {split.path} has no {name} "
                f"frames{' of ' + str(methods) if methods and name == 'fake' else ''}; set "
                "config.dataset.class_balance=False, change config.dataset.train_methods or rebuild the dataset."
            )
    return pools


# --------------------------------------------------------------------------- training


class _EpochShuffled:
    """An endless stream of record indices from `pool`, reshuffled every epoch (seeded)."""

    def __init__(self, pool: np.ndarray, seed: int):
        self._pool = np.asarray(pool, np.int64)
        self._seed = seed
        self._cache: tuple[int, np.ndarray] | None = None

    def __getitem__(self, position: int) -> int:
        epoch, j = divmod(position, len(self._pool))
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, np.random.default_rng([self._seed, epoch]).permutation(self._pool))
        return int(self._cache[1][j])


class _TrainBatches:
    """Random access to this process's rows of global training batch k.

    The order of examples is defined globally (one seeded stream over the whole split) and
    each process loads only its slice of every global batch. So the global batch at step k is
    the same whatever the number of processes or devices: a 2-host run equals a 1-host run,
    and a resumed run equals an uninterrupted one. The host's JPEG re-compression draws from a
    generator seeded by the example's global position, for the same reason, and each row
    carries that position for the augmentations the step applies on the device.
    """

    def __init__(self, split: Split, config: Any, global_batch: int, pools: list[np.ndarray], start: int = 0):
        self._start = start
        self._source = split.source
        self._global = global_batch
        self._local = global_batch // jax.process_count()
        self._offset = jax.process_index() * self._local
        self._seed = int(config.seed)
        self._augment = config.augment if augment_lib.host_enabled(config.augment) else None
        if len(pools) == 1:
            self._streams = [_EpochShuffled(pools[0], self._seed)]
        else:
            # Real and fake frames alternate: every batch is exactly half real, half fake.
            self._streams = [_EpochShuffled(pool, self._seed + 1 + c) for c, pool in enumerate(pools)]

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, k: int) -> dict[str, np.ndarray]:
        k += self._start
        rows = []
        first = k * self._global + self._offset
        for position in range(first, first + self._local):
            stream = self._streams[position % len(self._streams)]
            example = to_example(self._source[stream[position // len(self._streams)]])
            if self._augment is not None:
                rng = np.random.default_rng([self._seed, position])
                example["image"] = augment_lib.host_augment(example["image"], rng, self._augment)
            rows.append(example)
        batch = {key: np.stack([r[key] for r in rows]) for key in BATCH_KEYS}
        batch["position"] = augment_lib.positions(first, self._local)
        return batch


def train_dataset(split: Split, config: Any, global_batch: int, *, start_batch: int = 0) -> grain.IterDataset:
    """An endless, shuffled stream of this process's part of each global batch (host
    augmentation applied; each row carries its position for the device augmentation).

    Global batch k is the same whatever the process and device counts, so the stream's
    position is one global number (`start_batch`, the next step of a resumed run).

    Args:
      split: the opened training split.
      config: the run config (reads `seed`, `dataset.*`, `augment.*`; see `training_pools`).
      global_batch: rows per global batch (all processes); must divide by the process count.
      start_batch: index of the first global batch to yield.

    Returns:
      A grain IterDataset; `iter()` of it is checkpointable with get_state()/set_state().
    """
    pools = training_pools(split, config)
    if start_batch < 0:
        raise ValueError(f"start_batch={start_batch} must be >= 0.")
    batches = grain.MapDataset.source(_TrainBatches(split, config, global_batch, pools, start_batch))
    workers = config.dataset.num_workers
    # Each element is a whole batch. grain's default read-ahead (16 threads, 500 elements) ran
    # ahead by up to 500 batches in every worker, ~4 GB each at 256 px and batch 32, and kept
    # the cores busy doing it. Workers now make one batch at a time and wait while their
    # queue (`prefetch` batches) is full; without workers, one thread keeps `prefetch` ahead.
    read = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0) if workers > 0 else grain.ReadOptions(
        num_threads=1, prefetch_buffer_size=max(1, config.dataset.prefetch))
    ds = batches.to_iter_dataset(read)
    if workers > 0:
        # grain reads absl flags when it starts workers; called from Python rather than an
        # absl app (tests, notebooks, the demo) they are unparsed and grain would fail.
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=config.dataset.prefetch))
    return ds


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
      `video_id` (str), `frame_index` (int) and `mask_source` (`shipped` / `derived` /
      `none`) per row, '', -1 and '' on padding. Every process
      yields the same number of batches, as collective evaluation steps require.
    """
    n = len(split) if max_examples is None else min(len(split), max_examples)
    indices = _process_indices(n)
    steps = num_eval_batches(n, per_process_batch)

    # array_record's reads (decompression) release the GIL, so a small read-ahead thread
    # pool keeps the next batch ready while the device evaluates the current one.
    ds = grain.MapDataset.source(_Subset(split.source, indices)).map(
        lambda r: (to_example(r), (_text(r["video_id"]), int(r["frame_index"]), _text(r["mask_source"])))
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
    mask_source = np.full((size,), "", dtype=object)
    for j, (example, (vid, frame, source)) in enumerate(rows):
        for k in BATCH_KEYS:
            arrays[k][j] = example[k]
        valid[j] = True
        video_id[j] = vid
        frame_index[j] = frame
        mask_source[j] = source
    arrays["valid"] = valid
    return arrays, {"video_id": video_id, "frame_index": frame_index, "mask_source": mask_source}
