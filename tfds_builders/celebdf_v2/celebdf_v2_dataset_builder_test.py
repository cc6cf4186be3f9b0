"""Dummy-data test of the celebdf_v2 builder on a generated tree in Celeb-DF v2's layout (pytest,
as the FF++ builder's: TFDS's DatasetBuilderTestCase needs TensorFlow)."""

import pytest
import tensorflow_datasets as tfds

from ffjax import testing
from tfds_builders.celebdf_v2 import celebdf_v2_dataset_builder as builder_lib


def test_builder_on_dummy_data(tmp_path):
    tree = testing.make_celebdf_tree(tmp_path / "src", frames=4)
    config = builder_lib.make_config(frames_per_video=2, image_size=32, num_workers=0)
    builder = builder_lib.Builder(config=config, data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(manual_dir=str(tree.root)))
    source = tfds.data_source(f"celebdf_v2/{config.name}", data_dir=tmp_path / "tfds", split="test")
    assert source[0]["image"].shape == (32, 32, 3) and not source[0]["mask"].any()
    assert 0 < len(source) <= 2 * len(tree.test_videos)
    assert (tmp_path / "tfds" / "celebdf_v2" / config.name / "1.0.0" / "manifest_test.json").is_file()


def test_configs():
    assert [c.name for c in builder_lib.Builder.BUILDER_CONFIGS] == ["as_released"]
    assert builder_lib.make_config(image_size=299, frames_per_video=8).name == "as_released_frames8_size299"
    with pytest.raises(ValueError, match="mask_mode must be 'none'"):
        builder_lib.make_config(mask_mode="derived")
    with pytest.raises(ValueError, match="unknown setting"):
        builder_lib.make_config(compression="c23")
