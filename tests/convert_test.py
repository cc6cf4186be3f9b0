"""ffjax.convert against the PyTorch references: random-initialised timm / smp models are saved,
converted and run on the same batch; ffjax's outputs must equal PyTorch's (fp32, eval mode)."""

import sys


import jax.numpy as jnp
import numpy as np
import pytest

from ffjax import convert, sharding, state as state_lib
from tests.helpers import config_on, load_config

torch = pytest.importorskip("torch")


def _import_torchvision_tolerant():
    """PyPI's torchvision beside the CPU torch build cannot load its C++ ops; timm and smp need
    only its Python code, so the two op schemas it registers are declared without kernels
    (the same shim as the PyTorch reference suite's bench_torch.py)."""
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in list(sys.modules) if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _import_torchvision_tolerant.lib = lib  # kept alive
    import torchvision  # noqa: F401,F811


_import_torchvision_tolerant()
timm = pytest.importorskip("timm")
smp = pytest.importorskip("segmentation_models_pytorch")

HALF = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _randomise_batchnorm(module, seed):
    """Running statistics and affine terms away from their defaults, so each is really mapped."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    return module.eval()


def _config(name, **model_kwargs):
    config = load_config(name)
    with config.unlocked():
        config.cpu_ops = "stock"
        for key, value in model_kwargs.items():
            config.model_kwargs[key] = value
    return config


def _ffjax_outputs(config, weights, images):
    """The config's model, built and loaded from `weights` as `ffjax train` does, on `images`."""
    mesh = sharding.make_mesh(1)
    tx_free_state = state_lib.build_model(config, state_lib.model_ops(config, mesh))
    from flax import nnx

    graphdef, params, rest = nnx.split(tx_free_state, nnx.Param, ...)
    params, rest, conversion = convert.init_from(weights, config.model, params, rest)
    model = nnx.merge(graphdef, params, rest)
    return np.asarray(model(jnp.asarray(images), train=False)), conversion


def _torch_outputs(module, images, mean_std):
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) - mean) / std
    with torch.no_grad():
        return module(x).numpy()


def assert_equal_outputs(got, want):
    """Equal within 1e-4 of the output's scale: both sides sum thousands of float32 products
    per pixel in different orders (XLA vs oneDNN), and random-initialised deep nets have
    outputs of size ~10."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want))))


def _images(size, seed=0):
    return np.random.default_rng(seed).random((2, size, size, 3), dtype=np.float32)


def test_xception_classifier_equals_timm_legacy_xception(tmp_path):
    reference = _randomise_batchnorm(timm.create_model("legacy_xception", num_classes=1), 0)
    path = tmp_path / "legacy_xception.pth"
    torch.save(reference.state_dict(), path)
    images = _images(96)
    got, conversion = _ffjax_outputs(_config("xception_cls"), path, images)
    want = _torch_outputs(reference, images, HALF)
    assert conversion.source == "timm legacy_xception" and not conversion.not_loaded
    assert_equal_outputs(got, want)


def test_unet_xception_equals_smp_unet(tmp_path):
    reference = _randomise_batchnorm(smp.Unet("xception", encoder_weights=None, classes=1), 1)
    from safetensors.torch import save_file

    path = tmp_path / "unet_xception.safetensors"  # read without torch
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    images = _images(64, seed=1)
    got, conversion = _ffjax_outputs(_config("default"), path, images)
    want = _torch_outputs(reference, images, HALF).transpose(0, 2, 3, 1)
    assert conversion.source == "smp Unet('xception')" and not conversion.not_loaded
    assert_equal_outputs(got, want)


def test_unet_resnet34_equals_smp_unet_and_takes_an_imagenet_encoder(tmp_path):
    reference = _randomise_batchnorm(smp.Unet("resnet34", encoder_weights=None, classes=1), 2)
    path = tmp_path / "unet_resnet34.pth"
    torch.save(reference.state_dict(), path)
    config = _config("default")
    with config.unlocked():
        config.model = "unet_resnet34"
    images = _images(64, seed=2)
    got, conversion = _ffjax_outputs(config, path, images)
    want = _torch_outputs(reference, images, IMAGENET).transpose(0, 2, 3, 1)
    assert not conversion.not_loaded
    assert_equal_outputs(got, want)

    # An ImageNet classifier's file (torchvision/timm resnet34 layout, 1000-class fc): the
    # encoder is loaded, the head left out, the decoder kept as initialised.
    imagenet = {k.removeprefix("encoder."): v for k, v in reference.state_dict().items() if k.startswith("encoder.")}
    imagenet["fc.weight"], imagenet["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save(imagenet, tmp_path / "resnet34.pth")
    _, encoder_only = _ffjax_outputs(config, tmp_path / "resnet34.pth", images)
    assert set(encoder_only.left_out) == {"fc.weight", "fc.bias"}
    assert encoder_only.not_loaded and all(p.startswith(("decoder.", "head.")) for p in encoder_only.not_loaded)
    assert set(encoder_only.arrays) == {p for p in conversion.arrays if p.startswith("encoder.")}


def _model_config(model):
    config = _config("default")
    with config.unlocked():
        config.model = model
        config.model_kwargs = type(config.model_kwargs)()
    return config


@pytest.mark.parametrize("model,timm_name,seed", [("resnet34", "resnet34", 4), ("efficientnet_b4", "efficientnet_b4", 5)])
def test_classifiers_equal_timm(tmp_path, model, timm_name, seed):
    reference = _randomise_batchnorm(timm.create_model(timm_name, num_classes=1), seed)
    path = tmp_path / f"{timm_name}.pth"
    torch.save(reference.state_dict(), path)
    images = _images(64, seed=seed)
    got, conversion = _ffjax_outputs(_model_config(model), path, images)
    want = _torch_outputs(reference, images, IMAGENET)
    assert conversion.source.startswith("timm") and not conversion.not_loaded
    assert_equal_outputs(got, want)


@pytest.mark.parametrize("model,smp_class,seed", [("fpn_resnet34", "FPN", 7), ("deeplabv3plus_resnet34", "DeepLabV3Plus", 8)])
def test_fpn_and_deeplab_equal_smp(tmp_path, model, smp_class, seed):
    """Evaluation mode: smp's training-time dropout (not in ffjax's models) is off there too."""
    reference = _randomise_batchnorm(getattr(smp, smp_class)("resnet34", encoder_weights=None, classes=1), seed)
    with torch.no_grad():  # GroupNorm's affine terms away from 1 and 0 as well
        for m in reference.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
    path = tmp_path / f"{model}.pth"
    torch.save(reference.state_dict(), path)
    images = _images(64, seed=seed)
    got, conversion = _ffjax_outputs(_model_config(model), path, images)
    want = _torch_outputs(reference, images, IMAGENET).transpose(0, 2, 3, 1)
    assert conversion.source == f"smp {smp_class}('resnet34')" and not conversion.not_loaded
    assert_equal_outputs(got, want)


def test_unet_efficientnet_b4_equals_smp_unet_and_takes_an_imagenet_encoder(tmp_path):
    """smp's EfficientNet encoder pads as TensorFlow for a 380 px input and uses BatchNorm
    epsilon 1e-3: at 64 px (not 380) the paddings must still be the reference's."""
    reference = _randomise_batchnorm(smp.Unet("efficientnet-b4", encoder_weights=None, classes=1), 6)
    path = tmp_path / "unet_effb4.pth"
    torch.save(reference.state_dict(), path)
    config = _model_config("unet_efficientnet_b4")
    images = _images(64, seed=6)
    got, conversion = _ffjax_outputs(config, path, images)
    want = _torch_outputs(reference, images, IMAGENET).transpose(0, 2, 3, 1)
    assert conversion.source == "smp Unet('efficientnet-b4')" and not conversion.not_loaded
    assert_equal_outputs(got, want)

    # The ImageNet file smp loads for its encoder (Luke Melas-Kyriazi's layout, 1000-class _fc).
    imagenet = {k.removeprefix("encoder."): v for k, v in reference.state_dict().items() if k.startswith("encoder.")}
    imagenet["_fc.weight"], imagenet["_fc.bias"] = torch.zeros(1000, 1792), torch.zeros(1000)
    torch.save(imagenet, tmp_path / "efficientnet-b4.pth")
    _, encoder_only = _ffjax_outputs(config, tmp_path / "efficientnet-b4.pth", images)
    assert set(encoder_only.left_out) == {"_fc.weight", "_fc.bias"}
    assert set(encoder_only.arrays) == {p for p in conversion.arrays if p.startswith("encoder.")}
    # A timm file has the other padding and epsilon: refused with the reason, not loaded wrongly.
    torch.save(timm.create_model("efficientnet_b4", num_classes=1).state_dict(), tmp_path / "timm_b4.pth")
    with pytest.raises(ValueError, match="Luke Melas-Kyriazi"):
        _ffjax_outputs(config, tmp_path / "timm_b4.pth", images)


def test_mismatches_are_named(tmp_path):
    reference = timm.create_model("legacy_xception", num_classes=1)
    state = reference.state_dict()
    torch.save({**state, "block1.extra.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="block1.extra.weight"):
        _ffjax_outputs(_config("xception_cls"), tmp_path / "extra.pth", _images(64))
    narrow = _config("xception_cls", width=0.5)
    torch.save(state, tmp_path / "full.pth")
    with pytest.raises(ValueError, match=r"conv1.weight -> backbone.conv1.conv.kernel: shape"):
        _ffjax_outputs(narrow, tmp_path / "full.pth", _images(64))
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        convert.read_state_dict(tmp_path / "missing.pth")


def test_the_original_xception_file_layout():
    """Cadene's ImageNet Xception file (what timm and smp load) stores pointwise kernels as
    [O, I] and has a 1000-class `fc`: both are handled."""
    config = _config("xception_cls")
    _, target, _ = state_lib.abstract_model_state(config, sharding.make_mesh(1))
    flat = convert.flat_paths(target["params"], target["rest"])
    state = {k: v.numpy() for k, v in timm.create_model("legacy_xception", num_classes=1000).state_dict().items()}
    squeezed = {k: v[:, :, 0, 0] if "pointwise" in k else v for k, v in state.items()}
    a = convert.convert_state_dict(state, "xception", flat)
    b = convert.convert_state_dict(squeezed, "xception", flat)
    assert set(a.arrays) == set(b.arrays) and all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert set(a.left_out) == {"fc.weight", "fc.bias"} and a.not_loaded == ["fc.bias", "fc.kernel"]


def test_convert_command_writes_what_init_from_reads(tmp_path, capsys):
    reference = _randomise_batchnorm(timm.create_model("legacy_xception", num_classes=1), 3)
    torch.save(reference.state_dict(), tmp_path / "x.pth")
    out = tmp_path / "x.npz"
    conversion = convert.run(["ffjax convert", "--config", "xception_cls", "--input", str(tmp_path / "x.pth"),
                              "--output", str(out)])
    assert "timm legacy_xception" in capsys.readouterr().out and out.is_file()
    images = _images(64, seed=3)
    from_npz, again = _ffjax_outputs(_config("xception_cls"), out, images)
    from_pth, _ = _ffjax_outputs(_config("xception_cls"), tmp_path / "x.pth", images)
    assert again.source == "ffjax (converted)" and len(again.arrays) == len(conversion.arrays)
    np.testing.assert_array_equal(from_npz, from_pth)



def test_training_starts_from_init_from(tiny_dataset, tmp_path):
    """`config.init_from` at step 0: with a zero learning rate the first checkpoint holds
    exactly the file's parameters (any model: an .npz in ffjax's own layout)."""
    from flax import nnx

    from ffjax import checkpoints, train

    config = config_on(tiny_dataset, num_train_steps=1, eval_every_steps=0, checkpoint_every_steps=1,
                       learning_rate=0.0, warmup_steps=0)
    model = state_lib.build_model(config, seed=7)  # other values than the run's own seed 0
    _, params, _ = nnx.split(model, nnx.Param, ...)
    flat = convert.flat_paths(params)
    np.savez(tmp_path / "start.npz", **{k: np.asarray(v) for k, v in flat.items()})
    with config.unlocked():
        config.init_from = str(tmp_path / "start.npz")
    train.train_and_evaluate(config, str(tmp_path / "run"))
    mesh = sharding.make_mesh()
    _, target, _ = state_lib.abstract_model_state(config, mesh)
    restored, _, step = checkpoints.restore_model_state(str(tmp_path / "run"), target)
    got = convert.flat_paths(restored["params"])
    assert step == 1 and set(got) == set(flat)
    for key, value in flat.items():
        np.testing.assert_array_equal(np.asarray(got[key]), value, err_msg=key)
