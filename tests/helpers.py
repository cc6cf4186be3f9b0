"""Shared by the tests: loading the packaged configs, pointing them at the tiny dataset, and
reading back what the dataset builder wrote."""

import json
import pathlib

from ffjax import configs


def load_config(name: str = "test"):
    """`ffjax/configs/<name>.py`'s get_config(), as `--config <name>` loads it."""
    return configs.load(name)


def config_on(tiny_dataset, *, name: str = "test", model_kwargs=None, augment=None, **fields):
    """`ffjax/configs/<name>.py` reading the session's tiny dataset, with fields overridden."""
    data_dir, config_name = tiny_dataset
    config = load_config(name)
    with config.unlocked():
        config.dataset.data_dir = data_dir
        config.dataset.config_name = config_name
        for key, value in fields.items():
            setattr(config, key, value)
        for key, value in (model_kwargs or {}).items():
            config.model_kwargs[key] = value
        for key, value in (augment or {}).items():
            setattr(config.augment, key, value)
    return config


def built_records(builder) -> dict[str, dict[tuple[str, int], dict]]:
    """split -> {(video_id, frame_index): record} of a built dataset, strings decoded."""
    out = {}
    for split in builder.info.splits:
        records = {}
        for record in builder.as_data_source(split):
            record = {k: v.decode() if isinstance(v, bytes) else v for k, v in record.items()}
            records[(record["video_id"], int(record["frame_index"]))] = record
        out[split] = records
    return out


def built_manifest(builder, split) -> dict:
    """The manifest the builder wrote for `split`."""
    return json.loads((pathlib.Path(builder.data_dir) / f"manifest_{split}.json").read_text())


def mask_file(tree, method, name):
    """Where a generated tree keeps a fake's shipped mask video."""
    return tree.root / "manipulated_sequences" / method / "masks" / "videos" / f"{name}.mp4"
