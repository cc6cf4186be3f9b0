"""DFDC face crops (no masks ship) as a TFDS dataset, for cross-dataset evaluation.

The builder class lives in `dfdc_dataset_builder` (importing it registers `dfdc`).
"""
