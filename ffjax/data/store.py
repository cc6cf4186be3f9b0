"""Where built datasets live, and opening one from its files alone (no builder code).

`ffjax build-data` (`ffjax.build_data`) writes `<data_dir>/<dataset>/<config>/<version>/`
(`faceforensics`, or the cross-dataset test sets `celebdf_v2` and `dfdc`); the input
pipeline and `ffjax eval` find and open it here.
"""

from __future__ import annotations

from pathlib import Path

DATASET_NAME = "faceforensics"
# Every dataset ffjax builds, in one record schema: FF++ and the cross-dataset test sets.
DATASET_NAMES = (DATASET_NAME, "celebdf_v2", "dfdc")


def dataset_dir(data_dir, config_name: str = "c23", version: str | None = None, name: str = DATASET_NAME) -> Path:
    """The folder of a built config: `<data_dir>/<name>/<config>/<version>`.

    Args:
      data_dir: the TFDS data dir it was built into.
      config_name: e.g. `c23`, `c40_all`, `c23_frames4_size64`, `as_released`.
      version: e.g. `1.0.0`; None for the newest finished build.
      name: one of `DATASET_NAMES`.

    Returns:
      The folder (raises FileNotFoundError naming what exists if there is none).
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"dataset {name!r}: ffjax builds and reads {DATASET_NAMES}.")
    base = Path(data_dir).expanduser() / name
    folder = base / config_name
    finished = [p for p in folder.glob("*") if (p / "dataset_info.json").is_file()] if folder.is_dir() else []
    if version is not None:
        finished = [p for p in finished if p.name == version]
    if not finished:
        built = sorted(p.name for p in base.glob("*") if p.is_dir() and not p.name.startswith("."))
        raise FileNotFoundError(
            f"no finished {name} build {config_name!r}"
            f"{'' if version is None else ' version ' + version} under {base}; configs there: "
            f"{built or 'none'}. Build it with `ffjax build-data --dataset {name} --manual_dir <its root> "
            f"--data_dir {data_dir} ...`."
        )
    return max(finished, key=lambda p: tuple(int(v) for v in p.name.split(".")))


def load_builder(data_dir, config_name: str = "c23", version: str | None = None, name: str = DATASET_NAME):
    """Opens a built config from its files alone, without importing the builder code.

    Args:
      data_dir: the TFDS data dir it was built into.
      config_name: the config's name (printed by the build; `builder.builder_config.name`).
      version: a version string, or None for the newest.
      name: one of `DATASET_NAMES`.

    Returns:
      A read-only `tfds.core.DatasetBuilder`; `builder.as_data_source(split)` gives records.
    """
    import tensorflow_datasets as tfds  # ~2 s to import: only when a dataset is opened

    return tfds.builder_from_directory(dataset_dir(data_dir, config_name, version, name))
