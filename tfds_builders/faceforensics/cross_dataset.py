"""What the cross-dataset test sets (Celeb-DF v2, DFDC) share with FF++'s builder and each other.

Their records have FF++'s schema and crop rule (dlib's largest face, followed through the
sampled frames, 1.3x square crop: what `ffjax predict` does), so a model trained on FF++
scores them unchanged. No pixel masks ship with either: every record carries an all-zero
mask, `mask_source` says `unavailable` for fakes (`none` for reals), and the manifest's
`pixel_masks: false` tells the evaluator to report frame and video metrics only. Reals are
method `original`, fakes `Celeb-synthesis` or `DFDC` (`ffpp.CROSS_DATASET_METHODS`),
compression `as_released`.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import os
from pathlib import Path

import tensorflow_datasets as tfds
import tqdm
from etils import epath

from ffjax.data import ffpp, masks
from tfds_builders.faceforensics import faceforensics_dataset_builder as ff_builder
from tfds_builders.faceforensics import plan as plan_lib
from tfds_builders.faceforensics import process

MASK_MODES = ("none", "derived")


@dataclasses.dataclass
class CrossDatasetConfig(tfds.core.BuilderConfig):
    """Build settings of a cross-dataset test set.

    Attributes:
      frames_per_video: frames sampled per video, evenly spaced.
      image_size: side of the square crops (the FF++ model's training size).
      crop_scale: crop side as a multiple of the face box's longer side.
      mask_mode: `none`, or `derived` (DFDC's training parts: a fake's mask from its
        difference to its original in the same copy, bounded to the face crop as for FF++).
      num_workers: decoding processes; 0 decodes in the calling process, None uses every CPU.
    """

    frames_per_video: int = 32
    image_size: int = 256
    crop_scale: float = 1.3
    mask_mode: str = "none"
    num_workers: int | None = None

    def data_fields(self) -> dict:
        """The settings that shape the data, as FF++'s manifests name them."""
        return {
            "compression": ffpp.AS_RELEASED,
            "frames_per_video": self.frames_per_video,
            "image_size": self.image_size,
            "crop_scale": self.crop_scale,
            "mask_mode": self.mask_mode,
            "crop_source": process.DETECTOR,
        }


_DEFAULTS = CrossDatasetConfig(name="defaults")


def make_config(config_class=CrossDatasetConfig, **overrides) -> CrossDatasetConfig:
    """A validated config named after its non-default settings (`as_released`,
    `as_released_frames4_size64`).

    Args:
      config_class: the builder's config class.
      **overrides: any of its fields but `name`.
    """
    allowed = {f.name for f in dataclasses.fields(config_class)} - {"name", "version", "release_notes",
                                                                     "supported_versions", "description", "tags"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for this dataset; settable: {sorted(allowed)}")
    defaults = config_class(name="defaults")
    fields = {k: getattr(defaults, k) for k in allowed} | overrides
    for key in ("frames_per_video", "image_size"):
        if int(fields[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {fields[key]}")
    if not 0 < float(fields["crop_scale"]) <= 4:
        raise ValueError(f"crop_scale must be in (0, 4], got {fields['crop_scale']}")
    if fields["mask_mode"] not in MASK_MODES:
        raise ValueError(f"mask_mode={fields['mask_mode']!r}; use one of {MASK_MODES} (no masks ship with this dataset)")
    if fields["num_workers"] is not None and int(fields["num_workers"]) < 0:
        raise ValueError(f"num_workers must be >= 0 or None, got {fields['num_workers']}")
    parts = [ffpp.AS_RELEASED]
    for field, prefix in (("frames_per_video", "frames"), ("image_size", "size"), ("crop_scale", "scale"),
                          ("mask_mode", "masks-")):
        if fields[field] != getattr(defaults, field):
            parts.append(f"{prefix}{str(fields[field]).replace('.', 'p')}")
    description = ", ".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "num_workers")
    return config_class(name="_".join(parts), description=description, **fields)


def video_ref(root: Path, relative: str, fake: bool, fake_method: str) -> ffpp.VideoRef:
    """The ref of one clip, `relative` to the root: `video_id` is `<method>/as_released/<relative stem>`."""
    name = relative[: -len(Path(relative).suffix)] if Path(relative).suffix else relative
    return ffpp.VideoRef(fake_method if fake else ffpp.ORIGINAL, ffpp.AS_RELEASED, name, root / relative)


def single_video_task(ref: ffpp.VideoRef) -> plan_lib.GroupTask:
    """A group of one clip: a real as its own original, a fake alone (framed on its own frames)."""
    if ref.method == ffpp.ORIGINAL:
        return plan_lib.GroupTask(ref.name, ref, ())
    return plan_lib.GroupTask(ref.name, None, (plan_lib.FakeVideo(ref, None),))


class CrossDatasetBuilder(tfds.core.GeneratorBasedBuilder):
    """The shared builder of the cross-dataset test sets; subclasses plan their splits."""

    HOMEPAGE = ""
    DESCRIPTION = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The subclass's file (the reason is in the FF++ builder's `code_path`)."""
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        """Args: num_workers: overrides the config's worker count (it does not change data);
        **kwargs: as for `tfds.core.GeneratorBasedBuilder`."""
        self._num_workers_override = num_workers
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=ff_builder.record_features(self.builder_config.image_size),
            homepage=self.HOMEPAGE,
        )

    @abc.abstractmethod
    def plan_splits(self, root: Path) -> dict[str, plan_lib.SplitPlan]:
        """`{split: plan}` for the manual_dir `root` (each dataset's own layout)."""

    def pixel_masks(self, split: str) -> bool:
        """Whether `split`'s fakes carry pixel masks (derived), else `unavailable`."""
        return False

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir)
        plans = self.plan_splits(root)
        for split, split_plan in plans.items():
            if not split_plan.groups:
                tqdm.tqdm.write(f"{self.name}: split {split} left out: it names {sum(split_plan.named.values())} "
                                f"videos and none is usable (skipped: "
                                f"{ {r: len(v) for r, v in split_plan.skipped.items()} })")
        if not any(p.groups for p in plans.values()):
            raise ffpp.LayoutError(f"{root}: no usable video in any split ({self.name}); see the reasons above.")
        self._generated = (epath.Path(root) / ffpp.GENERATED_MARKER).exists()
        return {split: self._generate_examples(split_plan) for split, split_plan in plans.items() if split_plan.groups}

    def _generate_examples(self, split_plan: plan_lib.SplitPlan):
        config = self.builder_config
        masks_here = self.pixel_masks(split_plan.split)
        options = process.Options(
            frames_per_video=config.frames_per_video, image_size=config.image_size, crop_scale=config.crop_scale,
            # Both sets are H.264 at c23-like rates: FF++ c23's measured threshold for derived masks.
            mask_threshold=0, diff_threshold=masks.diff_threshold("c23"), face_detector_fallback=False,
            crop_source=process.DETECTOR, pixel_masks=masks_here,
        )
        workers = self._num_workers_override
        if workers is None:
            workers = config.num_workers
        workers = (os.cpu_count() or 1) if workers is None else int(workers)
        fields = dict(config.data_fields(), pixel_masks=masks_here, generated_data=getattr(self, "_generated", False))
        yield from ff_builder.generate_split(self, split_plan, options, fields, workers, self.name)
