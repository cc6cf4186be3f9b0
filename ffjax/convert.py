r"""PyTorch weights (timm, segmentation_models_pytorch, torchvision) into ffjax's models.

  ffjax convert --config xception_cls --input legacy_xception-imagenet.pth --output xception.npz
  ffjax train --config xception_cls --workdir RUN --config.init_from=legacy_xception-imagenet.pth

Every FF++ baseline starts from ImageNet weights. The user points at a local file (nothing is
downloaded): a `.pth`/`.pt` state dict (needs PyTorch to read) or a `.safetensors` file (read
without PyTorch), in the layout of one of

- timm `legacy_xception` (ImageNet classifier; into `xception`, or the encoder of `unet_xception`),
- torchvision / timm `resnet34` (into the encoder of `unet_resnet34`),
- timm `resnet34` / `efficientnet_b4` (into the classifiers `resnet34` / `efficientnet_b4`),
- Luke Melas-Kyriazi's `efficientnet-b4` (what smp loads; into the encoder of `unet_efficientnet_b4`),
- a whole smp `Unet('xception')`, `Unet('resnet34')` or `Unet('efficientnet-b4')` (into
  `unet_xception` / `unet_resnet34` / `unet_efficientnet_b4`), `FPN('resnet34')` or
  `DeepLabV3Plus('resnet34')` (into `fpn_resnet34` / `deeplabv3plus_resnet34`; a ResNet-34
  file fills their encoder),
- or an `.npz` this command wrote (ffjax's own parameter paths).

Convolution kernels go from [O, I, kh, kw] to [kh, kw, I, O], linear weights are transposed,
BatchNorm `weight/bias/running_mean/running_var` become `scale/bias/mean/var`. A file that
covers only the encoder fills the encoder and leaves the decoder as initialised; an ImageNet
head of another width (1000 classes) is left out. Everything else must match: an unknown key,
a missing encoder parameter or a shape that differs is an error naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from ffjax import configs, sharding, state, torch_layouts

IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclasses.dataclass
class Conversion:
    """The converted arrays (ffjax paths) and what happened to every key.

    Attributes:
      arrays: ffjax parameter path ('encoder.stem.conv.kernel') -> array in ffjax layout.
      source: what the file was recognised as.
      left_out: torch keys deliberately not loaded (e.g. a 1000-class ImageNet head), with why.
      not_loaded: ffjax paths the file does not cover (kept as initialised).
    """

    arrays: dict[str, np.ndarray]
    source: str
    left_out: dict[str, str]
    not_loaded: list[str]


def read_state_dict(path) -> dict[str, np.ndarray]:
    """A PyTorch state dict (.pth/.pt/.bin or .safetensors) or a converted .npz as numpy arrays."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    if suffix == ".safetensors":
        from safetensors.numpy import load_file  # optional: only for .safetensors files

        return dict(load_file(str(path)))
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            import torch  # optional heavy dependency: only to read PyTorch pickles
        except ImportError as e:
            raise ImportError(
                f"{path}: reading a PyTorch .pth needs torch (pip install torch), or convert the file to "
                ".safetensors where torch is installed."
            ) from e
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
    raise ValueError(f"{path}: unknown weights format {suffix!r}; use .pth, .safetensors or a converted .npz.")


def _conv(w: np.ndarray) -> np.ndarray:
    if w.ndim == 2:  # the original Keras-converted Xception file stores 1x1 pointwise kernels as [O, I]
        w = w[:, :, None, None]
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def convert_state_dict(state: dict[str, np.ndarray], model: str, target: dict[str, Any]) -> Conversion:
    """Maps a PyTorch state dict onto `target` (ffjax path -> abstract array with .shape).

    Args:
      state: from `read_state_dict`.
      model: the config's model name.
      target: flat ffjax paths of the model's parameters and statistics with their shapes.

    Raises:
      ValueError: unknown keys, encoder parameters the file lacks, or shapes that differ,
        each named.
    """
    keys = [k for k in state if not k.endswith(IGNORED_SUFFIXES)]
    if keys and all(k in target for k in keys):
        # Already in ffjax layout (an .npz written by `ffjax convert`).
        source, mapping, leave = "ffjax (converted)", {k: (k, "same") for k in keys}, set()
    else:
        source, mapping, leave = torch_layouts.plan(model, keys)
    left_out = {k: "an ImageNet head: the model's own head is kept as initialised" for k in sorted(leave)}
    unknown = sorted(k for k in keys if k not in mapping and k not in leave)
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the {source} file have no place in {model!r}: {unknown[:8]}")
    arrays: dict[str, np.ndarray] = {}
    for key, (path, kind) in mapping.items():
        value = np.asarray(state[key], np.float32)
        value = {"conv": _conv, "linear": np.transpose, "conv1x1_linear": lambda v: v.reshape(v.shape[:2]).T}.get(
            kind, lambda v: v)(value)
        if path not in target:
            raise ValueError(f"{key} -> {path}: {model!r} has no such parameter (another architecture or width?).")
        want = tuple(target[path].shape)
        if tuple(value.shape) != want:
            if path.startswith("fc."):  # a head of another width (1000 ImageNet classes)
                left_out[key] = f"shape {tuple(value.shape)} vs the model's {want}: the model's head is kept"
                continue
            raise ValueError(f"{key} -> {path}: shape {tuple(value.shape)} in the file, {want} in the model.")
        arrays[path] = np.ascontiguousarray(value)
    not_loaded = sorted(p for p in target if p not in arrays)
    encoder = [p for p in not_loaded if p.startswith(("encoder.", "backbone."))]
    if encoder:
        raise ValueError(f"the {source} file does not cover {len(encoder)} encoder parameters of {model!r}: {encoder[:8]}")
    return Conversion(arrays, source, left_out, not_loaded)


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def flat_paths(*states) -> dict[str, Any]:
    """ffjax parameter path ('encoder.stem.conv.kernel') -> leaf, over nnx States (params and
    statistics, concrete or abstract): the target `convert_state_dict` maps onto."""
    return {k: v for state_ in states for k, v in _flatten(state_.to_pure_dict())}


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        node = node[int(part)] if part.isdigit() and int(part) in node else node[part]
    node[int(leaf) if leaf.isdigit() and int(leaf) in node else leaf] = value


def init_from(path, model: str, params: Any, rest: Any) -> tuple[Any, Any, Conversion]:
    """Loads a weights file into a model's states (`ffjax.state.TrainState.params` / `.rest`).

    Args:
      path: the weights file (see the module docstring).
      model: the config's model name.
      params: the model's parameters (an nnx.State, arrays on their devices).
      rest: its BatchNorm statistics.

    Returns:
      (params, rest, conversion): the states with the file's arrays put in, each placed as
      the array it replaces.
    """
    trees = {"params": params.to_pure_dict(), "rest": rest.to_pure_dict()}
    target = {k: v for tree in trees.values() for k, v in _flatten(tree)}
    conversion = convert_state_dict(read_state_dict(path), model, target)
    for tree in trees.values():
        for key, old in list(_flatten(tree)):
            if key in conversion.arrays:
                _set(tree, key, jax.device_put(conversion.arrays[key].astype(old.dtype), old.sharding))
    nnx.replace_by_pure_dict(params, trees["params"])
    nnx.replace_by_pure_dict(rest, trees["rest"])
    return params, rest, conversion


def describe(conversion: Conversion, path) -> str:
    """A few lines: what was loaded from where, and what was not."""
    lines = [f"{path}: {conversion.source}, {len(conversion.arrays)} arrays loaded"]
    if conversion.left_out:
        lines.append(f"  left out of the file: {', '.join(sorted(conversion.left_out))} ({next(iter(conversion.left_out.values()))})")
    if conversion.not_loaded:
        parts = sorted({p.split(".")[0] for p in conversion.not_loaded})
        lines.append(f"  kept as initialised: {len(conversion.not_loaded)} arrays of {', '.join(parts)}")
    return "\n".join(lines)


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=argv[0] if argv else "ffjax convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the config (name or file) whose model the weights are for")
    parser.add_argument("--input", required=True, help="a .pth / .safetensors state dict (timm, smp, torchvision)")
    parser.add_argument("--output", required=True, help="the converted weights (.npz, ffjax parameter paths)")
    return parser.parse_args(list(argv[1:]))


def run(argv) -> Conversion:
    """`ffjax convert ...`: converts, checks every shape against the config's model, writes .npz."""
    args = _parse(argv)
    try:
        config = configs.load(args.config)
        mesh = sharding.make_mesh(1)
        _, target, _ = state.abstract_model_state(config, mesh)
        flat = flat_paths(target["params"], target["rest"])
        conversion = convert_state_dict(read_state_dict(args.input), config.model, flat)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"ffjax convert: {e}") from None
    out = Path(args.output).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **conversion.arrays)
    print(describe(conversion, args.input))
    print(f"wrote {out}: use it with --config.init_from={out}")
    return conversion
