"""Shared by the tests: loading configs from configs/ and pointing them at the tiny dataset."""

import pathlib

from ml_collections import config_flags

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load_config(name: str = "test"):
    """`configs/<name>.py`'s get_config(), loaded by path as `--config` does."""
    return config_flags.config_flags._LoadConfigModule(name, str(CONFIGS / f"{name}.py")).get_config()


def config_on(tiny_dataset, *, name: str = "test", model_kwargs=None, augment=None, **fields):
    """`configs/<name>.py` reading the session's tiny dataset, with fields overridden."""
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
