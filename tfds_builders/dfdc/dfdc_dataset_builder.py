"""DFDC dataset: square face crops of sampled frames, FF++'s schema; masks derived on request.

Manual download: `manual_dir` holds the training parts and/or the public test set (see
README.md). No masks ship; with `mask_mode='derived'` a training fake's mask is its
difference to its original (in the same part), bounded to the face crop as for FF++.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from tfds_builders.dfdc import plan as plan_lib
from tfds_builders.faceforensics import cross_dataset


@dataclasses.dataclass
class DFDCConfig(cross_dataset.CrossDatasetConfig):
    """`CrossDatasetConfig` plus `test_dir`: the public test set's folder under manual_dir."""

    test_dir: str = plan_lib.TEST_DIR


def make_config(**overrides) -> DFDCConfig:
    """A validated config (`frames_per_video`, `image_size`, `crop_scale`, `mask_mode`, `test_dir`,
    `num_workers`)."""
    config = cross_dataset.make_config(DFDCConfig, **overrides)
    if config.test_dir != plan_lib.TEST_DIR:
        config.name = f"{config.name}_test-{config.test_dir.replace('/', '-').replace('_', '-')}"
    return config


class Builder(cross_dataset.CrossDatasetBuilder):
    """DatasetBuilder for DFDC face crops (cross-dataset evaluation)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: FF++'s record schema and crop rule; masks derived on request."}
    BUILDER_CONFIGS = [make_config(), make_config(mask_mode="derived")]
    DEFAULT_CONFIG_NAME = "as_released"
    HOMEPAGE = "https://ai.meta.com/datasets/dfdc/"
    DESCRIPTION = ("DFDC face crops of evenly spaced frames (Dolhansky et al. 2020), in FaceForensics++'s record "
                   "schema; no shipped masks (all zero unless derived).")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
DFDC is gated: accept its terms at {HOMEPAGE} (or on Kaggle's deepfake-detection-challenge),
download the training parts and/or the public test set, unzip them and pass the folder as
manual_dir:
{plan_lib.EXPECTED_LAYOUT}
"""

    def plan_splits(self, root):
        config = self.builder_config
        return plan_lib.plan_splits(root, derived_masks=config.mask_mode == "derived", test_dir=config.test_dir)

    def pixel_masks(self, split: str) -> bool:
        # The public test set has no originals to derive from.
        return self.builder_config.mask_mode == "derived" and split == "train"
