"""Run configs: one `get_config()` per module, shipped in the wheel.

`default.py` holds every field (`base_config()`); variants import it and override fields
(`from ffjax.configs import default`). Commands take a config by name (`--config default`,
`--config demo:quick`) or by file path (`--config my_config.py`), and `--config.FIELD=VALUE`
overrides; every config is locked, so a misspelt field is an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
from typing import Any

CONFIG_DIR = pathlib.Path(__file__).resolve().parent


def names() -> list[str]:
    """The packaged configs' names."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def resolve(spec: str) -> str:
    """A `--config` value with a packaged config's name replaced by its file path.

    Args:
      spec: `NAME[:ARG]` of a packaged config (`default`, `demo:quick`) or `PATH[:ARG]`
        of a config file.

    Returns:
      `PATH[:ARG]`, what ml_collections' config flags load.

    Raises:
      FileNotFoundError: neither a file nor a packaged config, with the names there are.
    """
    path, sep, arg = str(spec).partition(":")
    if pathlib.Path(path).expanduser().is_file():
        return spec
    if "/" not in path and path.removesuffix(".py") in names():
        return f"{CONFIG_DIR / (path.removesuffix('.py') + '.py')}{sep}{arg}"
    raise FileNotFoundError(
        f"--config {spec}: no such file, and not a packaged config (those are: {', '.join(names())})."
    )


def load(spec: str, *args: Any):
    """`get_config(*args)` of a packaged config (`load('demo', 'quick')`) or a config file."""
    path, _, arg = resolve(spec).partition(":")
    args = args or ((arg,) if arg else ())
    if pathlib.Path(path).parent == CONFIG_DIR:
        module = importlib.import_module(f"ffjax.configs.{pathlib.Path(path).stem}")
    else:
        spec_ = importlib.util.spec_from_file_location(f"ffjax_config_{pathlib.Path(path).stem}", path)
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config {path}: the file has no get_config().")
    return module.get_config(*args)


def resolve_argv(argv: list[str]) -> list[str]:
    """`argv` with the value of `--config` (`--config X` or `--config=X`) `resolve`d."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == "--config" and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
        elif token.startswith("--config="):
            out[i] = "--config=" + resolve(token.split("=", 1)[1])
    return out


def set_fields(config: Any, fields: dict[str, Any], where: str) -> Any:
    """Sets dotted fields (`loss.dice_weight`) on a run config; returns it.

    `model_kwargs` is open-ended (the model class decides which keys it takes), so new keys
    are allowed there; any other unknown field is an error naming `where` it came from. A
    dict replaces a sub-config whole (e.g. `model_kwargs`); a list becomes a tuple.
    """
    import ml_collections

    for dotted, value in fields.items():
        *parents, leaf = dotted.split(".")
        node = config
        try:
            for part in parents:
                node = node[part]
            if leaf not in node and not (parents and parents[-1] == "model_kwargs"):
                raise KeyError(leaf)
        except KeyError:
            raise ValueError(f"{where}: {dotted!r} is not a field of the run config.") from None
        if isinstance(value, dict):
            value = ml_collections.ConfigDict(value)
        elif isinstance(value, list):
            value = tuple(value)
        with node.unlocked():
            node[leaf] = value
    return config
