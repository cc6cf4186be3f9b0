"""Celeb-DF v2 dataset: square face crops of sampled frames, FF++'s schema, no masks.

Manual download: `manual_dir` is the user's Celeb-DF v2 root (see README.md). The test split
is the official `List_of_testing_videos.txt`; the rest is train.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from tfds_builders.celebdf_v2 import plan as plan_lib
from tfds_builders.faceforensics import cross_dataset


def make_config(**overrides) -> cross_dataset.CrossDatasetConfig:
    """A validated config (`frames_per_video`, `image_size`, `crop_scale`, `num_workers`)."""
    if overrides.get("mask_mode", "none") != "none":
        raise ValueError("Celeb-DF v2 pairs no fake with its original on disk: mask_mode must be 'none'.")
    return cross_dataset.make_config(**overrides)


class Builder(cross_dataset.CrossDatasetBuilder):
    """DatasetBuilder for Celeb-DF v2 face crops (cross-dataset evaluation)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: FF++'s record schema and crop rule, no masks."}
    BUILDER_CONFIGS = [make_config()]
    DEFAULT_CONFIG_NAME = "as_released"
    HOMEPAGE = "https://github.com/yuezunli/celeb-deepfakeforensics"
    DESCRIPTION = ("Celeb-DF v2 face crops of evenly spaced frames (Li et al. 2020), in FaceForensics++'s record "
                   "schema; no pixel masks (all zero).")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Celeb-DF v2 is gated: fill in the form linked from {HOMEPAGE}, download and unzip it, and pass the
folder as manual_dir:
{plan_lib.EXPECTED_LAYOUT}
"""

    def plan_splits(self, root):
        return plan_lib.plan_splits(root)
