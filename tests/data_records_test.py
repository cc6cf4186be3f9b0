"""The record reader gives back exactly what TFDS's data source gives, field by field."""

import pickle

import numpy as np
import tensorflow_datasets as tfds

from ffjax.data import pipeline, records
from tests.helpers import config_on


def test_records_equal_tfds_records_field_by_field_in_every_split(tiny_dataset):
    config = config_on(tiny_dataset)
    path = pipeline.dataset_dir(config.dataset.data_dir, config.dataset.name, config.dataset.config_name)
    builder = tfds.builder_from_directory(path)
    for split in builder.info.splits:
        ours, theirs = records.open_records(builder, split), builder.as_data_source(split=split)
        assert isinstance(ours, records.Records) and len(ours) == len(theirs) > 0
        for i in range(len(theirs)):
            a, b = ours[i], theirs[i]
            assert a.keys() == b.keys()
            for key in b:
                assert type(a[key]) is type(b[key]), key
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{split}[{i}].{key}")
                assert np.asarray(a[key]).dtype == np.asarray(b[key]).dtype, key


def test_records_reopen_after_pickling_as_grain_workers_do(tiny_dataset):
    config = config_on(tiny_dataset)
    split = pipeline.open_split(config.dataset, "train")
    assert isinstance(split.source, records.Records)
    copy = pickle.loads(pickle.dumps(split.source))
    np.testing.assert_array_equal(copy[len(copy) - 1]["image"], split.source[len(copy) - 1]["image"])


def test_unknown_features_fall_back_to_tfds():
    assert records._field("image", tfds.features.Image(shape=(8, 8, 3))) is None
    assert records._field("x", tfds.features.Tensor(shape=(None,), dtype=np.int32)) is None
    assert records._field("label", tfds.features.ClassLabel(names=["a", "b"])) == ("label", "int", np.dtype(np.int64), ())
