"""Dummy-data test of the faceforensics builder: a tiny FF++ tree generated at test time.

TFDS's DatasetBuilderTestCase needs TensorFlow, which this project does not install; this
test does the same checks (splits, example counts, features, reading back) with pytest.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ffjax import testing
from tfds_builders.faceforensics import faceforensics_dataset_builder as ff_builder


@pytest.fixture(scope="module")
def dummy_dir(tmp_path_factory):
    tree = testing.make_ffpp_tree(
        tmp_path_factory.mktemp("dummy_data"), pairs=testing.official_pairs(1, 1, 1),
        num_frames=6, frame_size=(160, 120),  # faces ~50 px: dlib frames them
    )
    return tree.root


def test_builder_on_dummy_data(dummy_dir, tmp_path):
    config = ff_builder.make_config(frames_per_video=2, image_size=32, num_workers=0)
    builder = ff_builder.Builder(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(dummy_dir)),
    )
    # Per split: one pair = 2 originals + 2 fakes x 4 methods = 10 videos x 2 frames.
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val", "test")} == {
        "train": 20, "val": 20, "test": 20,
    }
    source = tfds.data_source(f"faceforensics/{config.name}", data_dir=tmp_path, split="train")
    record = source[0]
    assert record["image"].shape == (32, 32, 3) and record["mask"].shape == (32, 32)
    labels = np.array([source[i]["label"] for i in range(len(source))])
    assert (labels == 1).sum() == 16 and (labels == 0).sum() == 4
    for name in ("manifest_train.json", "manifest_val.json", "manifest_test.json"):
        assert (tmp_path / "faceforensics" / config.name / "3.0.0" / name).is_file()


def test_registered_configs_and_names():
    names = [c.name for c in ff_builder.Builder.BUILDER_CONFIGS]
    assert names == ["c23", "c23_all", "c40", "c40_all", "raw", "raw_all"]
    assert ff_builder.Builder.builder_configs["c23"].frames_per_video == 32
    assert ff_builder.make_config(compression="c0").name == "raw"
    assert ff_builder.make_config(image_size=299, crop_scale=1.5).name == "c23_size299_scale1p5"
    assert ff_builder.make_config(methods=["FaceShifter"], num_workers=3).name == "c23_FSh"
    assert ff_builder.make_config(crop_source="mask", diff_threshold=5).name == "c23_dthr5_crop-mask"
    assert ff_builder.Builder.builder_configs["c23"].crop_source == "detector"
    with pytest.raises(ValueError, match="mask_mode"):
        ff_builder.make_config(mask_mode="maybe")
