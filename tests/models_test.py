"""Tests for ffjax.models: exact parameter counts, shapes, training, and the operation sets
(stock, xla, native) computing the same function with the same parameters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ffjax.models import (
    MODELS,
    STOCK,
    create_model,
    flops_per_image,
)
from ffjax.models.layers import SeparableConv
from ffjax.platform.cpu import kernels as cpu_kernels
from ffjax.platform.cpu.ops import depthwise_conv_shifted
from ffjax.state import ops_named
from ffjax.models.efficientnet import EfficientNetBackbone
from ffjax.models.resnet import ResNetBackbone
from ffjax.models.xception import XceptionBackbone

# Trainable parameter counts of the PyTorch references (BN scale and bias counted, running
# statistics not): timm legacy_xception with one output; smp Unet('xception') and
# Unet('resnet34'); milesial/Pytorch-UNet (bilinear=False, 3 in, 1 out) for the paper U-Net;
# timm resnet34 (num_classes=1), smp FPN('resnet34', classes=1) and DeepLabV3Plus('resnet34',
# classes=1) (timm 1.0.31, smp 0.6.0).
REFERENCE_PARAMS = {
    "xception": 20_809_001,
    "unet": 31_037_633,
    "unet_xception": 28_769_401,
    "unet_resnet34": 24_436_369,
    "resnet34": 21_285_185,
    "fpn_resnet34": 23_155_393,
    "deeplabv3plus_resnet34": 22_437_457,
    "unet_xception_2head": 28_771_450,  # smp Unet('xception', aux_params={'classes': 1})
    "efficientnet_b4": 17_550_409,  # timm efficientnet_b4
    "unet_efficientnet_b4": 20_225_689,  # smp Unet('efficientnet-b4')
}

TINY = {
    "xception": dict(width=1 / 16, middle_blocks=1),
    "unet": dict(depth=2, base_width=4),
    "unet_xception": dict(encoder_width=1 / 16, middle_blocks=1, decoder_channels=(16, 8, 8, 4, 4)),
    "unet_resnet34": dict(
        encoder_width=1 / 16, stage_blocks=(1, 1, 1, 1), decoder_channels=(16, 8, 8, 4, 4)
    ),
    "resnet34": dict(width=1 / 16, stage_blocks=(1, 1, 1, 1)),
    "fpn_resnet34": dict(encoder_width=1 / 16, stage_blocks=(1, 1, 1, 1), pyramid_channels=8, segmentation_channels=8),
    "deeplabv3plus_resnet34": dict(encoder_width=1 / 16, stage_blocks=(1, 1, 1, 1), decoder_channels=8, atrous_rates=(1, 2, 3)),
    "unet_xception_2head": dict(encoder_width=1 / 16, middle_blocks=1, decoder_channels=(16, 8, 8, 4, 4)),
    "efficientnet_b4": dict(width=0.25, depth=0.3),
    "unet_efficientnet_b4": dict(encoder_width=0.25, encoder_depth=0.3, decoder_channels=(16, 8, 8, 4, 4)),
}


def _rngs(seed):
    # Initialising for real compiles each new parameter shape's sampler: ~1 s apiece with the
    # default threefry PRNG on XLA:CPU, ~5x less with 'rbg'; the tests do not care which.
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _abstract(name, **kwargs):
    return nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), **kwargs))


def _num_params(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _output_shape(model, shape, train=False):
    graphdef, state = nnx.split(model)
    fn = lambda state, x: nnx.merge(graphdef, state)(x, train=train)
    return jax.eval_shape(fn, state, jax.ShapeDtypeStruct(shape, jnp.float32))


def _images(seed, shape):
    return jax.random.uniform(jax.random.key(seed), shape)


def _unet_params_formula(depth, base_width):
    """Independent count: 3x3 conv (no bias) + BN per conv, 2x2 up-conv with bias, 1x1 head."""
    widths = [base_width * 2**i for i in range(depth + 1)]
    conv_bn = lambda cin, cout: 9 * cin * cout + 2 * cout
    total = 0
    for cin, cout in zip([3, *widths[:-1]], widths):
        total += conv_bn(cin, cout) + conv_bn(cout, cout)
    for i in range(depth):
        total += 4 * widths[i + 1] * widths[i] + widths[i]
        total += conv_bn(2 * widths[i], widths[i]) + conv_bn(widths[i], widths[i])
    return total + widths[0] + 1


def test_create_model_rejects_unknown_name_and_lists_valid_ones():
    with pytest.raises(ValueError, match="unet_resnet34"):
        create_model("resnet", rngs=nnx.Rngs(0))
    assert set(MODELS) == set(REFERENCE_PARAMS)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_reference_parameter_counts(name):
    assert _num_params(_abstract(name)) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("depth,base_width", [(4, 64), (2, 4), (3, 8)])
def test_unet_parameter_count_matches_formula(depth, base_width):
    model = _abstract("unet", depth=depth, base_width=base_width)
    assert _num_params(model) == _unet_params_formula(depth, base_width)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
@pytest.mark.parametrize("size", [64, 96])
def test_reference_output_shapes(name, size):
    model = _abstract(name)
    out = _output_shape(model, (2, size, size, 3))
    if model.task == "segmentation_classification":
        assert out["mask"].shape == (2, size, size, 1) and out["frame"].shape == (2, 1)
        return
    expected = (2, 1) if model.task == "classification" else (2, size, size, 1)
    assert out.shape == expected and out.dtype == jnp.float32


def test_xception_at_299():
    model = _abstract("xception", num_outputs=2)
    assert _output_shape(model, (3, 299, 299, 3)).shape == (3, 2)


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize(
    "backbone,channels",
    [
        (XceptionBackbone, (64, 128, 256, 728, 2048)),
        (ResNetBackbone, (64, 64, 128, 256, 512)),
        (EfficientNetBackbone, (48, 32, 56, 160, 448)),
        # smp's TensorFlow-style paddings, computed for 380 px, at other sizes.
        (functools.partial(EfficientNetBackbone, static_padding_size=380), (48, 32, 56, 160, 448)),
    ],
)
def test_encoder_feature_maps_are_exactly_h_over_stride(backbone, channels, size):
    model = nnx.eval_shape(lambda: backbone(rngs=nnx.Rngs(0)))
    assert model.feature_channels == channels
    graphdef, state = nnx.split(model)
    features = jax.eval_shape(
        lambda s, x: nnx.merge(graphdef, s)(x, train=False),
        state,
        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
    )
    shapes = [f.shape for f in features]
    assert shapes == [(1, size // s, size // s, c) for s, c in zip((2, 4, 8, 16, 32), channels)]


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_models_run(name):
    # Shapes at 64 and 96 are covered abstractly above; one real run checks the numerics.
    model = create_model(name, rngs=_rngs(0), **TINY[name])
    out = nnx.jit(lambda m, x: m(x, train=False))(model, _images(0, (2, 64, 64, 3)))
    if model.task == "segmentation_classification":
        outs = {"mask": (2, 64, 64, 1), "frame": (2, 1)}
        assert {k: v.shape for k, v in out.items()} == outs
        out = jnp.concatenate([out["mask"].ravel(), out["frame"].ravel()])
    else:
        expected = (2, 1) if model.task == "classification" else (2, 64, 64, 1)
        assert out.shape == expected
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


def _bce_loss(model, images, targets, train=True):
    logits = model(images, train=train)
    return optax.sigmoid_binary_cross_entropy(logits, targets).mean()


@pytest.mark.parametrize("name", ["unet", "xception", "resnet34", "fpn_resnet34", "deeplabv3plus_resnet34"])
def test_one_sgd_step_lowers_the_loss(name):
    model = create_model(name, rngs=_rngs(0), **TINY[name])
    optimizer = nnx.Optimizer(model, optax.sgd(0.01), wrt=nnx.Param)
    # 64 px keeps Xception's stride-32 map at 2x2, so BatchNorm there sees 16 values, not 4.
    images = _images(1, (4, 64, 64, 3))
    if model.task == "segmentation":
        targets = (images[..., :1] > 0.5).astype(jnp.float32)
    else:
        targets = jnp.array([[0.0], [1.0], [0.0], [1.0]])

    @nnx.jit
    def step(model, optimizer, images, targets):
        loss, grads = nnx.value_and_grad(_bce_loss)(model, images, targets)
        optimizer.update(model, grads)
        return loss

    before = nnx.state(model, nnx.BatchStat)
    before = jax.tree.map(jnp.copy, before)
    loss0 = step(model, optimizer, images, targets)
    loss1 = step(model, optimizer, images, targets)  # the loss after the first update
    assert float(loss1) < float(loss0)
    # Training mode must move the running statistics that evaluation uses.
    moved = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), before, nnx.state(model, nnx.BatchStat)
    )
    assert all(jax.tree.leaves(moved))


def test_models_hold_no_platform_code():
    """The models take their operations as an argument; none looks at the platform itself."""
    import pathlib

    import ffjax.models

    for path in pathlib.Path(ffjax.models.__file__).parent.glob("*.py"):
        text = path.read_text()
        for word in ("cpu_ops", "cpu_kernels", "default_backend", "ffjax.platform"):
            assert word not in text, f"{path.name} mentions {word}"


def test_separable_conv_grouped_and_shifted_agree_with_gradients():
    grouped = SeparableConv(6, 5, 3, ops=STOCK, rngs=_rngs(0))
    shifted = SeparableConv(6, 5, 3, ops=ops_named("xla"), rngs=_rngs(1))
    nnx.update(shifted, nnx.state(grouped))
    x = jax.random.normal(jax.random.key(2), (2, 9, 7, 6))
    target = jax.random.normal(jax.random.key(3), (2, 9, 7, 5))

    @nnx.jit
    def forward_and_grads(layer, x):
        loss = lambda layer, x: jnp.sum(jnp.sin(layer(x)) * target)
        return layer(x), nnx.grad(loss, argnums=(0, 1))(layer, x)

    (g_out, (g_params, g_x)), (s_out, (s_params, s_x)) = (
        forward_and_grads(grouped, x),
        forward_and_grads(shifted, x),
    )
    np.testing.assert_allclose(g_out, s_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_x, s_x, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_params), jax.tree.leaves(s_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,k", [((1, 19, 7, 4), 3), ((3, 8, 9, 2), 3), ((2, 5, 6, 3), 5), ((2, 17, 3, 1), 3)])
def test_depthwise_shifted_backward_equals_grouped_convolution(shape, k):
    # The hand-written backward (flipped-kernel input gradient, row-grouped kernel gradient):
    # heights that are and are not multiples of the row group, one image, a 5x5 kernel.
    c = shape[-1]
    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (k, k, 1, c))
    g = jax.random.normal(jax.random.key(2), shape)

    def grouped(x, kernel):
        p = k // 2
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c
        )

    got = jax.grad(lambda x, w: jnp.sum(depthwise_conv_shifted(x, w) * g), argnums=(0, 1))(x, kernel)
    want = jax.grad(lambda x, w: jnp.sum(grouped(x, w) * g), argnums=(0, 1))(x, kernel)
    np.testing.assert_allclose(depthwise_conv_shifted(x, kernel), grouped(x, kernel), rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ops_name", ["native", "xla"])  # the kernels' gradient, or the XLA form
@pytest.mark.parametrize(
    "shape,stride",
    [((2, 9, 8, 3), 2), ((1, 5, 7, 2), 1), ((2, 8, 8, 4), 2), ((1, 2, 1, 1), 2), ((2, 9, 10, 70), 2)],
)
def test_max_pool_3x3_equals_nnx_max_pool_with_ties(shape, stride, ops_name):
    # After a ReLU most windows hold equal values (zeros): the gradient must go to the same
    # (first, row-major) element as XLA's select-and-scatter, not be split or duplicated.
    native = ops_name == "native"
    if native and not cpu_kernels.available():
        pytest.skip("native CPU kernels unavailable")
    max_pool_3x3 = ops_named(ops_name).max_pool_3x3
    x = jnp.round(2 * jax.nn.relu(jax.random.normal(jax.random.key(0), shape))) / 2
    grad_text = jax.jit(jax.grad(lambda x: jnp.sum(max_pool_3x3(x, stride)))).lower(x).as_text()
    assert (cpu_kernels.MAX_POOL_GRAD in grad_text) == native

    def reference(x):
        return nnx.max_pool(x, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)))

    out, vjp = jax.vjp(lambda x: max_pool_3x3(x, stride), x)
    ref_out, ref_vjp = jax.vjp(reference, x)
    np.testing.assert_array_equal(out, ref_out)
    g = jax.random.normal(jax.random.key(1), out.shape)
    np.testing.assert_allclose(vjp(g)[0], ref_vjp(g)[0], rtol=1e-6, atol=1e-6)
    assert x.size < 10 or float(jnp.mean(x == 0)) > 0.3  # the ties are really there


def test_xception_operation_sets_share_checkpoints_and_agree():
    kwargs = dict(TINY["xception"], rngs=_rngs(0))
    grouped = create_model("xception", ops=STOCK, **kwargs)
    shifted = create_model("xception", ops=ops_named("xla"), **dict(kwargs, rngs=_rngs(1)))
    # Same parameter tree: a checkpoint written with one form restores into the other.
    assert jax.tree.structure(nnx.state(grouped)) == jax.tree.structure(nnx.state(shifted))
    nnx.update(shifted, nnx.state(grouped))
    # Evaluation mode: training-mode BatchNorm over 2 values per channel at the 1x1 stride-32
    # map would amplify float reassociation noise; the gradient equality is checked per layer.
    images = _images(4, (2, 64, 64, 3))
    forward = nnx.jit(lambda m, x: m(x, train=False))
    np.testing.assert_allclose(forward(grouped, images), forward(shifted, images), rtol=1e-4, atol=1e-5)


# 'native' only: it shares the shifted forward with 'xla', whose backward the depthwise tests
# above check against the grouped convolution for 3x3 and 5x5.
@pytest.mark.parametrize("name,ops_name", [("efficientnet_b4", "native"), ("unet_efficientnet_b4", "native")])
def test_efficientnet_operation_sets_share_checkpoints_and_agree(name, ops_name):
    """Every depthwise convolution takes the fast form (stride 2: every other output of the
    stride-1 form); both sets give the same function of the same parameters, gradients too
    (training mode, so every layer's gradient is far from zero)."""
    kwargs = dict(TINY[name], rngs=_rngs(0))
    grouped = create_model(name, ops=STOCK, **kwargs)
    fast = create_model(name, ops=ops_named(ops_name), **dict(kwargs, rngs=_rngs(1)))
    backbone = fast.backbone if name == "efficientnet_b4" else fast.encoder  # smp's: (0, 1) and (1, 2) paddings
    assert all(b.depthwise_fn is not None for b in backbone.blocks)
    assert jax.tree.structure(nnx.state(grouped)) == jax.tree.structure(nnx.state(fast))
    nnx.update(fast, nnx.state(grouped))
    images = _images(6, (4, 64, 64, 3))
    # The U-Net in evaluation mode: its decoder's training-mode BatchNorm over the 2x2 stride-32
    # map of a 64 px batch would amplify float reassociation noise (its features agree to 1e-6).
    train = name == "efficientnet_b4"
    weights = jax.random.normal(jax.random.key(8), jax.eval_shape(lambda m, x: m(x, train=train), grouped, images).shape)
    loss = lambda m, x: jnp.sum(m(x, train=train) * weights)  # noqa: E731
    grad = nnx.jit(nnx.value_and_grad(loss))
    (a, ga), (b, gb) = grad(grouped, images), grad(fast, images)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    ga, gb = (dict(jax.tree_util.tree_leaves_with_path(nnx.state(g, nnx.Param))) for g in (ga, gb))
    norm = lambda tree: float(jnp.sqrt(sum(jnp.sum(v**2) for v in tree.values())))  # noqa: E731
    assert norm({k: ga[k] - gb[k] for k in ga}) < 1e-4 * norm(ga)
    for path in (k for k in ga if "depthwise" in jax.tree_util.keystr(k) and "kernel" in jax.tree_util.keystr(k)):
        assert float(jnp.linalg.norm(ga[path] - gb[path])) < 1e-4 * float(jnp.linalg.norm(ga[path])), path


def _primitive_input_dtypes(jaxpr, names):
    """Input dtypes of every equation named in `names`, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in names:
            found.append({v.aval.dtype for v in eqn.invars})
        for param in eqn.params.values():
            sub = getattr(param, "jaxpr", param)
            if hasattr(sub, "eqns"):
                found += _primitive_input_dtypes(sub, names)
    return found


@pytest.mark.parametrize("name", ["unet", "xception"])
def test_bf16_compute_with_fp32_params(name):
    model = create_model(
        name, rngs=_rngs(0), ops=STOCK, dtype=jnp.bfloat16, param_dtype=jnp.float32, **TINY[name]
    )
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    images = _images(5, (1, 32, 32, 3))
    closed = jax.make_jaxpr(lambda x: model(x, train=False))(images)
    dtypes = _primitive_input_dtypes(closed.jaxpr, {"conv_general_dilated", "dot_general"})
    assert dtypes and all(d == {jnp.dtype(jnp.bfloat16)} for d in dtypes)
    assert closed.out_avals[0].dtype == jnp.float32


def test_models_reject_bad_inputs_with_clear_errors():
    model = create_model("unet", rngs=_rngs(0), **TINY["unet"])
    with pytest.raises(TypeError, match="/ 255"):
        model(jnp.zeros((1, 32, 32, 3), jnp.uint8), train=False)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        model(jnp.zeros((1, 32, 32, 1)), train=False)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(jnp.zeros((1, 30, 32, 3)), train=False)


@pytest.mark.parametrize("name,multiple", [("unet_efficientnet_b4", 32), ("fpn_resnet34", 32),
                                           ("deeplabv3plus_resnet34", 16), ("unet_xception_2head", 32)])
def test_encoder_decoders_take_any_size_as_its_edge_padded_multiple(name, multiple):
    """FF++'s 299 px crops: the model runs on the edge-padded image and crops its logits back."""
    model = create_model(name, rngs=_rngs(0), **TINY[name])
    images = _images(7, (1, 70, 45, 3))
    padded = jnp.pad(images, ((0, 0), (0, -70 % multiple), (0, -45 % multiple), (0, 0)), mode="edge")
    forward = nnx.jit(lambda m, x: m(x, train=False))
    out, full = forward(model, images), forward(model, padded)
    if model.task == "segmentation_classification":
        np.testing.assert_allclose(out["frame"], full["frame"], rtol=1e-6)
        out, full = out["mask"], full["mask"]
    assert out.shape == (1, 70, 45, 1)
    np.testing.assert_allclose(out, full[:, :70, :45], rtol=1e-5, atol=1e-6)


def test_flops_per_image_scales_with_area():
    small = flops_per_image("unet", 32, depth=1, base_width=2)
    large = flops_per_image("unet", 64, depth=1, base_width=2)
    # Lower bound: the convolutions' multiply-adds alone (3x3: 3->2, 2->2, 4->2, 2->2 at full
    # size; 2->4, 4->4 at half size; up-conv 4->2 at half size; 1x1 head).
    macs = 32 * 32 * (9 * (6 + 4 + 8 + 4) + 2) + 16 * 16 * (9 * (8 + 16) + 4 * 8)
    assert 2 * macs <= small < 4 * macs
    assert large == pytest.approx(4 * small, rel=0.05)




def test_bilinear_aligned_upsampling_keeps_corners_and_linear_ramps():
    """PyTorch's align_corners=True: the first and last pixels stay, a ramp stays a ramp."""
    from ffjax.models.layers import upsample_bilinear_aligned

    ramp = jnp.arange(5, dtype=jnp.float32)
    x = (ramp[:, None] * 10 + ramp[None, :])[None, :, :, None]  # value 10 * row + col
    up = upsample_bilinear_aligned(x, 4)
    assert up.shape == (1, 20, 20, 1)
    rows = jnp.arange(20) * 4 / 19
    np.testing.assert_allclose(up[0, :, :, 0], rows[:, None] * 10 + rows[None, :], atol=1e-5)
    np.testing.assert_allclose(up[0, [0, -1]][:, [0, -1], 0], [[0, 4], [40, 44]], atol=1e-6)


def test_resnet_output_stride_16_keeps_layer4_at_stride_16_with_the_same_parameters():
    from ffjax.models.resnet import ResNetBackbone

    make = lambda stride: nnx.eval_shape(lambda: ResNetBackbone(output_stride=stride, rngs=nnx.Rngs(0)))  # noqa: E731
    x32, x16 = make(32), make(16)
    assert _num_params(x32) == _num_params(x16)
    graphdef, state = nnx.split(x16)
    maps = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    assert [m.shape[1] for m in maps] == [32, 16, 8, 4, 4]
