"""Shared by the tests: loading the packaged configs and pointing them at the tiny dataset."""

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
