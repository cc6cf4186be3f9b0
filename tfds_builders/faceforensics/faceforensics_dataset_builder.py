"""FaceForensics++ dataset: square face crops of sampled frames with manipulation masks.

Manual download: `manual_dir` is the user's FF++ root (see README.md). Written as
array_record and readable without TensorFlow (`tfds.data_source`, grain).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import multiprocessing
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
import os
import zlib
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from etils import epath

from ffjax.data import ffpp, masks
from tfds_builders.faceforensics import manifest as manifest_lib
from tfds_builders.faceforensics import plan as plan_lib
from tfds_builders.faceforensics import process

_METHOD_CODES = {
    "Deepfakes": "DF",
    "Face2Face": "F2F",
    "FaceSwap": "FS",
    "NeuralTextures": "NT",
    "FaceShifter": "FSh",
    "DeepFakeDetection": "DFD",
}


@dataclasses.dataclass
class FaceforensicsConfig(tfds.core.BuilderConfig):
    """Build settings; `make_config` names a config after the ones that differ from default.

    Attributes:
      compression: `c23`, `c40` or `raw` (read from folder `raw/` or `c0/`).
      methods: manipulation methods to include; originals are always included.
      frames_per_video: frames sampled per video, evenly spaced, same indices for a fake
        and its target original.
      image_size: side of the square crops (256 for U-Nets, 299 for Xception).
      crop_scale: crop side as a multiple of the face box's longer side.
      mask_threshold: a shipped mask pixel is on above this (0-255, brightest channel).
      diff_threshold: a derived mask pixel is on where |fake - original| exceeds this; None
        for the measured threshold of the compression (`masks.DIFF_THRESHOLDS`).
      mask_mode: `shipped` (masks folders required), `derived` (always from the
        difference to the original) or `shipped_or_derived` (derive where none is shipped).
      split_dir: folder with official train/val/test.json; None for the packaged ones.
      num_workers: processes decoding videos; 0 decodes in the calling process, None uses
        every CPU. Does not change the data, so it is not part of the config name.
      face_detector_fallback: crop a target with no usable fake by dlib's face detector
        (else its frames are skipped and counted); `crop_source='mask'` only.
      crop_source: where the one face box per target and frame comes from: `detector`
        (default: dlib on the original frame, its size smoothed over the video; what
        `ffjax predict` does; derived masks are bounded to the crop) or `mask` (for
        studies: the group's fake masks, dlib as fallback). Either way the box is shared by
        the original and all its fakes.
    """

    compression: str = "c23"
    methods: tuple[str, ...] = ffpp.DEFAULT_METHODS
    frames_per_video: int = 32
    image_size: int = 256
    crop_scale: float = 1.3
    mask_threshold: int = 15
    diff_threshold: int | None = None
    mask_mode: str = "shipped_or_derived"
    split_dir: str | None = None
    num_workers: int | None = None
    face_detector_fallback: bool = True
    crop_source: str = "detector"

    def data_fields(self) -> dict:
        """The settings that shape the data (everything but the worker count)."""
        return {
            "compression": self.compression,
            "methods": list(self.methods),
            "frames_per_video": self.frames_per_video,
            "image_size": self.image_size,
            "crop_scale": self.crop_scale,
            "mask_threshold": self.mask_threshold,
            "diff_threshold": self.diff_threshold,
            "mask_mode": self.mask_mode,
            "split_dir": self.split_dir,
            "face_detector_fallback": self.face_detector_fallback,
            "crop_source": self.crop_source,
        }


_DEFAULTS = FaceforensicsConfig(name="defaults")
_NAME_PARTS = (  # field, name prefix
    ("frames_per_video", "frames"),
    ("image_size", "size"),
    ("crop_scale", "scale"),
    ("mask_threshold", "mthr"),
    ("diff_threshold", "dthr"),
    ("mask_mode", "masks-"),
    ("face_detector_fallback", "detector"),
    ("crop_source", "crop-"),
)


def _config_name(fields: dict) -> str:
    """A readable, deterministic name from the settings that differ from the defaults."""
    parts = [fields["compression"]]
    methods = tuple(fields["methods"])
    if methods == ffpp.FAKE_METHODS:
        parts.append("all")
    elif methods != ffpp.DEFAULT_METHODS:
        parts.append("-".join(_METHOD_CODES[m] for m in methods))
    for field, prefix in _NAME_PARTS:
        value = fields[field]
        if value != getattr(_DEFAULTS, field):
            text = str(int(value) if isinstance(value, bool) else value).replace(".", "p")
            parts.append(f"{prefix}{text.replace('_', '-')}")
    if fields["split_dir"] is not None:
        digest = 0
        for split in ffpp.SPLITS:
            pairs = ffpp.load_split_pairs(split, fields["split_dir"])
            digest = zlib.crc32(repr(pairs).encode(), digest)
        parts.append(f"splits{digest:08x}")
    return "_".join(parts)


def make_config(**overrides) -> FaceforensicsConfig:
    """A validated config named after its non-default settings (e.g. `c23_frames4_size64`).

    Args:
      **overrides: any `FaceforensicsConfig` field but `name`.

    Returns:
      The config.
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(FaceforensicsConfig)}
    unknown |= {"name", "version", "description"} & set(overrides)
    if unknown:
        raise ValueError(
            f"unknown faceforensics setting(s) {sorted(unknown)}; settable: "
            f"{sorted(_DEFAULTS.data_fields()) + ['num_workers']}"
        )
    fields = dict(dataclasses.asdict(_DEFAULTS), **overrides)
    for key in ("name", "version", "release_notes", "supported_versions", "description", "tags"):
        fields.pop(key)
    fields["compression"] = ffpp.canonical_compression(fields["compression"])
    fields["methods"] = ffpp.validate_methods(fields["methods"])
    if fields["crop_source"] not in process.CROP_SOURCES:
        raise ValueError(f"crop_source={fields['crop_source']!r}; use one of {process.CROP_SOURCES}")
    if fields["mask_mode"] not in plan_lib.MASK_MODES:
        raise ValueError(f"mask_mode={fields['mask_mode']!r}; use one of {plan_lib.MASK_MODES}")
    for key in ("frames_per_video", "image_size"):
        if int(fields[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {fields[key]}")
    if not 0 < float(fields["crop_scale"]) <= 4:
        raise ValueError(f"crop_scale must be in (0, 4], got {fields['crop_scale']}")
    for key in ("mask_threshold", "diff_threshold"):
        if fields[key] is not None and not 0 <= int(fields[key]) < 255:
            raise ValueError(f"{key} must be in [0, 255), got {fields[key]}")
    if fields["split_dir"] is not None:
        fields["split_dir"] = str(Path(fields["split_dir"]).expanduser().resolve())
    if fields["num_workers"] is not None and int(fields["num_workers"]) < 0:
        raise ValueError(f"num_workers must be >= 0 or None, got {fields['num_workers']}")
    name = _config_name(fields)
    description = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "num_workers")
    return FaceforensicsConfig(name=name, description=description, **fields)


def record_features(size: int) -> tfds.features.FeaturesDict:
    """The record schema every ffjax dataset shares (FF++, Celeb-DF v2, DFDC), `size` px crops."""
    return tfds.features.FeaturesDict(
        {
            # Raw bytes, compressed by array_record with each record: decoding a 256 px
            # PNG crop took 1.4 ms per frame, most of the training reader's host time
            # (docs/performance.md); the pixels are the same, bit for bit.
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
            "mask": tfds.features.Tensor(shape=(size, size), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(names=["real", "fake"]),
            "method": tfds.features.Text(),
            "compression": tfds.features.Text(),
            "video_id": tfds.features.Text(),
            "frame_index": tfds.features.Scalar(dtype=np.int32),
            "face_box": tfds.features.Tensor(shape=(4,), dtype=np.int32),
            "crop_box": tfds.features.Tensor(shape=(4,), dtype=np.int32),
            "mask_source": tfds.features.Text(),
        }
    )


def generate_split(builder, split_plan: plan_lib.SplitPlan, options: process.Options, fields: dict, workers: int,
                   dataset: str):
    """Yields a split's examples, group by group, and writes its manifest when done.

    Args:
      builder: the TFDS builder (its `data_dir` receives the manifest).
      split_plan: what to process.
      options: the workers' build settings.
      fields: the data settings recorded in the manifest.
      workers: decoding processes (0: in this process).
      dataset: the dataset's name, in progress bars and errors.
    """
    manifest = manifest_lib.SplitManifest(split_plan, fields, workers)
    work = functools.partial(process.process_group, options=options)
    with tqdm.tqdm(total=len(split_plan.groups), unit=" groups", desc=f"{dataset} {split_plan.split}",
                   mininterval=2.0) as bar:
        for result in run_groups(work, split_plan.groups, workers):
            bar.update(1)
            manifest.add(result)
            yield from result.examples
    if manifest.examples == 0:
        raise ValueError(
            f"{dataset}: every frame of split {split_plan.split} was skipped "
            f"({manifest.to_json()['skipped_counts']}); check the files named in the "
            "reasons, or the settings of the config."
        )
    # builder.data_dir is TFDS's temporary folder here; it becomes the dataset folder.
    manifest.write(builder.data_dir)


def run_groups(work, groups, workers: int):
    """Yields `work(group)` for every group, in completion order, with `workers` processes.

    At most two tasks per worker are in flight, so finished results (tens of MB for a
    target with many methods) never pile up faster than the writer takes them.
    """
    if workers == 0:
        yield from map(work, groups)
        return
    # Spawned, not forked: the caller may hold threads (JAX, grain) that a fork would copy
    # in a locked state. A pool that cannot start its workers raises BrokenProcessPool
    # (where multiprocessing.Pool would respawn them forever).
    context = multiprocessing.get_context("spawn")
    pending = set()
    todo = iter(groups)
    try:
        with futures.ProcessPoolExecutor(min(workers, len(groups)), mp_context=context) as pool:
            for group in itertools.islice(todo, 2 * workers):
                pending.add(pool.submit(work, group))
            while pending:
                done, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    yield future.result()
                    for group in itertools.islice(todo, 1):
                        pending.add(pool.submit(work, group))
    except BrokenProcessPool as e:
        raise RuntimeError(
            "the worker processes died while starting or decoding. When "
            "building from your own script, put the call under `if __name__ == '__main__':` "
            "(workers are spawned and import your main module), or pass num_workers=0."
        ) from e


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for FaceForensics++ face crops with manipulation masks."""

    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "2.0.0": "Crops framed by dlib on the original frame (shared by its fakes, as predict "
        "frames faces); derived masks bounded to the crop, with per-compression thresholds.",
        "3.0.0": "Crops and masks stored as raw uint8 bytes (array_record compresses each record): no PNG "
        "or zlib decoding when training reads them, the same pixels.",
    }
    BUILDER_CONFIGS = [
        make_config(compression=c, methods=m)
        for c in ("c23", "c40", "raw")
        for m in (ffpp.DEFAULT_METHODS, ffpp.FAKE_METHODS)
    ]
    DEFAULT_CONFIG_NAME = "c23"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
FaceForensics++ is gated: request access at https://github.com/ondyari/FaceForensics, run
the official download script for the videos (and `-t masks` for the masks) and pass the
folder it wrote as manual_dir:
{ffpp.EXPECTED_LAYOUT}
"""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. TFDS finds it through importlib.resources of the top package, which
        fails when `tfds_builders` resolves as a namespace package (an editable install made
        before it had an `__init__.py`); the file itself is always known."""
        return epath.Path(__file__)

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        """Args: num_workers: overrides the config's worker count (it does not change data);
        **kwargs: as for `tfds.core.GeneratorBasedBuilder`."""
        self._num_workers_override = num_workers
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        # A wheel built without this folder's data files must still build; the citation is
        # the only thing read from them.
        bib = Path(__file__).parent / "CITATIONS.bib"
        citation = bib.read_text() if bib.is_file() else ""
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "FaceForensics++ face crops of evenly spaced frames with the per-pixel mask "
                "of manipulated pixels (all zero for originals)."
            ),
            features=record_features(size),
            homepage="https://github.com/ondyari/FaceForensics",
            citation=citation,
        )

    def _num_workers(self) -> int:
        workers = self._num_workers_override
        if workers is None:
            workers = self.builder_config.num_workers
        return (os.cpu_count() or 1) if workers is None else int(workers)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        plans = plan_lib.plan_splits(
            dl_manager.manual_dir, config.compression, config.methods, config.mask_mode,
            config.split_dir,
        )
        if config.crop_source == process.DETECTOR:
            plan_lib.drop_groups_without_original(plans, dl_manager.manual_dir, config.compression)
        # TFDS cannot write a split without examples: a split with no usable video (none on
        # disk, e.g. a partial download, or only fakes whose original is missing) is reported
        # and left out rather than failing the build.
        for split, split_plan in plans.items():
            if not split_plan.groups:
                skipped = {r: len(v) for r, v in split_plan.skipped.items()}
                missing = split_plan.skipped.get(plan_lib.ORIGINAL_MISSING, [])
                why = (f"its fakes' originals are missing ({', '.join(missing[:5])}"
                       f"{' ...' if len(missing) > 5 else ''})" if missing else "none is on disk")
                tqdm.tqdm.write(
                    f"faceforensics: split {split} left out: it names "
                    f"{sum(split_plan.named.values())} videos and {why} (skipped: {skipped})"
                )
        # A tree from ffjax.testing.make_ffpp_tree: recorded, so models trained on it say so.
        self._generated = (epath.Path(dl_manager.manual_dir) / ffpp.GENERATED_MARKER).exists()
        return {
            split: self._generate_examples(split_plan)
            for split, split_plan in plans.items()
            if split_plan.groups
        }

    def _generate_examples(self, split_plan: plan_lib.SplitPlan):
        config = self.builder_config
        options = process.Options(
            frames_per_video=config.frames_per_video,
            image_size=config.image_size,
            crop_scale=config.crop_scale,
            mask_threshold=config.mask_threshold,
            diff_threshold=(
                masks.diff_threshold(config.compression)
                if config.diff_threshold is None else config.diff_threshold
            ),
            face_detector_fallback=config.face_detector_fallback,
            crop_source=config.crop_source,
        )
        workers = self._num_workers()
        # The manifest records the threshold actually used, not None.
        fields = dict(config.data_fields(), diff_threshold=options.diff_threshold,
                      generated_data=getattr(self, "_generated", False))
        yield from generate_split(self, split_plan, options, fields, workers, "faceforensics")
