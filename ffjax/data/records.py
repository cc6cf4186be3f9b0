"""Random access to a built split's records: array_record reads and one protobuf parse.

TFDS's own data source parses each `tf.train.Example` through a generic per-feature path (a
context manager, a spec lookup and a numpy conversion per feature, then nesting) that cost
about as much as decompressing the record. The crops are stored as raw bytes (dataset 3.0.0),
so a record is a handful of plain fields: this reader parses the proto once and takes each
field directly, the image and mask as zero-copy views of the parsed bytes. Records come back
exactly as TFDS returns them (`tests/data_records_test.py` compares every field).

Datasets with features this reader does not know (an image stored as PNG, dataset 2.0.0)
keep TFDS's data source (`open_records` picks).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


# How a field is stored in the proto: (feature name, kind, numpy dtype, shape).
Field = tuple[str, str, Any, tuple[int, ...]]


def _field(name: str, feature: Any) -> Field | None:
    """How to read feature `name`, or None for a feature this reader does not know."""
    import tensorflow_datasets as tfds

    kind = type(feature)
    if kind is tfds.features.Text:
        return (name, "text", None, ())
    if kind is tfds.features.ClassLabel:
        return (name, "int", np.dtype(np.int64), ())  # scalars come back as Python numbers
    if kind in (tfds.features.Tensor, tfds.features.Scalar) and None not in tuple(feature.shape):
        dtype, shape = np.dtype(feature.np_dtype), tuple(feature.shape)
        encoding = getattr(getattr(feature, "_encoding", None), "value", None)  # tfds keeps it private
        if encoding == "bytes":
            return (name, "bytes", dtype, shape)
        if encoding == "none" and np.issubdtype(dtype, np.integer):
            return (name, "int", dtype, shape)
        if encoding == "none" and np.issubdtype(dtype, np.floating):
            return (name, "float", dtype, shape)
    return None


def _read(fmap: Any, field: Field) -> Any:
    name, kind, dtype, shape = field
    if kind == "text":
        return fmap[name].bytes_list.value[0]
    if kind == "bytes":
        return np.frombuffer(fmap[name].bytes_list.value[0], dtype).reshape(shape)
    values = fmap[name].int64_list.value if kind == "int" else fmap[name].float_list.value
    return np.asarray(values, dtype).reshape(shape) if shape else values[0]  # a Python number, as TFDS


class Records:
    """A split's records by index: `len()`, `[i]` -> {feature: value}, as TFDS decodes them."""

    def __init__(self, paths: list[str], fields: list[Field]):
        self._paths, self._fields = list(paths), list(fields)
        self._open()

    def _open(self) -> None:
        from array_record.python import array_record_data_source
        from tensorflow_datasets.proto import tf_example_pb2

        self._source = array_record_data_source.ArrayRecordDataSource(self._paths)
        self._parse = tf_example_pb2.Example.FromString

    def __len__(self) -> int:
        return len(self._source)

    def raw(self, i: int) -> bytes:
        """The serialized record (decompressed by array_record)."""
        return self._source[i]

    def parse(self, raw: bytes) -> dict[str, Any]:
        fmap = self._parse(raw).features.feature
        return {field[0]: _read(fmap, field) for field in self._fields}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.parse(self._source[i])

    # grain pickles the source into its worker processes: they reopen the files.
    def __getstate__(self) -> dict:
        return {"paths": self._paths, "fields": self._fields}

    def __setstate__(self, state: dict) -> None:
        self._paths, self._fields = state["paths"], state["fields"]
        self._open()


def open_records(builder: Any, split: str) -> Any:
    """The fast `Records` reader of `split` when every feature is one it reads, else TFDS's
    data source."""
    fields = [_field(name, feature) for name, feature in builder.info.features.items()]
    if any(f is None for f in fields) or builder.info.file_format.value != "array_record":
        return builder.as_data_source(split=split)
    paths = [os.fspath(p) for p in builder.info.splits[split].filepaths]
    return Records(paths, fields)
