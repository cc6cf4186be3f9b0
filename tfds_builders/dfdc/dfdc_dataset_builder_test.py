"""Dummy-data test of the dfdc builder on a generated tree in DFDC's layout (pytest, as the FF++
builder's: TFDS's DatasetBuilderTestCase needs TensorFlow)."""

import pytest
import tensorflow_datasets as tfds

from ffjax import testing
from tfds_builders.dfdc import dfdc_dataset_builder as builder_lib


def test_builder_on_dummy_data(tmp_path):
    tree = testing.make_dfdc_tree(tmp_path / "src", frames=4, parts=1)
    config = builder_lib.make_config(frames_per_video=2, image_size=32, num_workers=0)
    builder = builder_lib.Builder(config=config, data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(manual_dir=str(tree.root)))
    assert set(builder.info.splits) == {"train", "test"}
    source = tfds.data_source(f"dfdc/{config.name}", data_dir=tmp_path / "tfds", split="test")
    assert source[0]["image"].shape == (32, 32, 3) and not source[0]["mask"].any()
    assert 0 < len(source) <= 2 * len(tree.test)


def test_configs():
    assert [c.name for c in builder_lib.Builder.BUILDER_CONFIGS] == ["as_released", "as_released_masks-derived"]
    assert builder_lib.make_config(test_dir="dfdc_test", image_size=64).name == "as_released_size64_test-dfdc-test"
    with pytest.raises(ValueError, match="mask_mode"):
        builder_lib.make_config(mask_mode="shipped")
