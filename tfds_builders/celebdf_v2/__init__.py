"""Celeb-DF v2 face crops (no masks ship) as a TFDS dataset, for cross-dataset evaluation.

The builder class lives in `celebdf_v2_dataset_builder` (importing it registers `celebdf_v2`).
"""
