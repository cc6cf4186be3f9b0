"""FaceForensics++ face crops with per-pixel manipulation masks, as a TFDS dataset.

The builder class lives in `faceforensics_dataset_builder` (importing it registers the
dataset as `faceforensics`); this package file stays import-free so that the worker processes
that decode videos load only numpy, OpenCV and ffjax.data.
"""
