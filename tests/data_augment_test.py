"""Training augmentations: JPEG on the host, flip/scale/blur/colour on the device, keyed by position."""

import jax
import numpy as np
import pytest

from ffjax import sharding
from ffjax.data import augment, pipeline
from tests.helpers import config_on, load_config


def make(**fields):
    settings = dict(seed=0, flip=False, scale_jitter=0.0, color_jitter=0.0, blur_prob=0.0, blur_sigma=(0.2, 1.2))
    return augment.DeviceAugment(**{**settings, **fields})


def blocks(batch=8, size=32, seed=0):
    """Crops whose image is their mask (a random rectangle per row, 255 inside) plus noise."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, size, size), np.uint8)
    for m in mask:
        y, x = rng.integers(2, size // 2, 2)
        m[y : y + rng.integers(4, size // 2), x : x + rng.integers(4, size // 2)] = 1
    image = np.repeat(mask[..., None] * 200, 3, axis=-1).astype(np.uint8) + rng.integers(0, 40, (batch, size, size, 3)).astype(np.uint8)
    return image, mask


def run(aug, image, mask, first=0):
    out_image, out_mask = jax.jit(aug)(image, mask, augment.positions(first, len(image)))
    return np.asarray(out_image), np.asarray(out_mask)


def test_nothing_drawn_gives_the_crop_back_exactly():
    image, mask = blocks()
    out_image, out_mask = run(make(), image, mask)
    assert out_image.dtype == np.float32
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)
    off = load_config().augment
    with off.unlocked():
        off.flip, off.scale_jitter, off.color_jitter, off.blur_prob = False, 0.0, 0.0, 0.0
    assert augment.from_config(off, 0) is None


def test_flip_moves_image_and_mask_together():
    image, mask = blocks(batch=16)
    out_image, out_mask = run(make(flip=True), image, mask)
    flipped = [not np.array_equal(o, i) for o, i in zip(out_image, image)]
    assert 3 <= sum(flipped) <= 13  # about half
    for o, om, i, m, f in zip(out_image, out_mask, image, mask, flipped):
        np.testing.assert_array_equal(o, i[:, ::-1] if f else i)
        np.testing.assert_array_equal(om, m[:, ::-1] if f else m)


def test_scale_jitter_crops_image_and_mask_alike_and_keeps_the_mask_binary():
    image, mask = blocks(batch=16)
    out_image, out_mask = run(make(flip=True, scale_jitter=0.3), image, mask)
    assert set(np.unique(out_mask)) <= {0, 1} and out_mask.dtype == np.uint8
    assert sum(not np.array_equal(o, m) for o, m in zip(out_mask, mask)) >= 12  # most windows moved
    # The image was its mask: thresholded, it still is, but on the interpolated edges.
    agree = np.mean((out_image.mean(-1) > 120) == (out_mask > 0))
    assert agree > 0.97, agree


def test_blur_keeps_flat_images_flat_and_softens_edges():
    image, mask = blocks()
    flat = np.full_like(image, 90)
    out_flat, _ = run(make(blur_prob=1.0, blur_sigma=(1.0, 1.0)), flat, mask)
    np.testing.assert_allclose(out_flat, 90, atol=1e-3)
    out_image, out_mask = run(make(blur_prob=1.0, blur_sigma=(1.0, 1.0)), image, mask)
    np.testing.assert_array_equal(out_mask, mask)  # no pixel moved
    assert np.abs(np.diff(out_image, axis=2)).max() < np.abs(np.diff(image.astype(float), axis=2)).max()


@pytest.mark.parametrize("factors", [(1.0, 1.0, 1.0), (1.1, 0.9, 1.05), (0.9, 1.1, 0.9), (1.3, 1.3, 0.0)])
def test_color_jitter_is_brightness_then_contrast_then_saturation(factors):
    image = np.random.default_rng(0).integers(0, 256, (37, 37, 3)).astype(np.float64)
    b, c, s = factors
    want = image * b
    want = (want - want.mean()) * c + want.mean()
    grey = want.mean(axis=-1, keepdims=True)
    want = np.clip((want - grey) * s + grey, 0, 255)
    got = np.asarray(augment.color_jitter(image.astype(np.float32), *factors))
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_device_augmentation_is_keyed_by_position_not_by_row_or_device():
    """The same global batch gives the same augmented batch on 1 and 8 devices, and a row
    gives the same result wherever it sits in the batch."""
    aug = make(flip=True, scale_jitter=0.2, color_jitter=0.2, blur_prob=0.5)
    image, mask = blocks(batch=16)
    position = augment.positions(1000, 16)
    outs = []
    for devices in (1, 8):
        mesh = sharding.make_mesh(devices)
        fn = jax.jit(aug, in_shardings=sharding.data_sharded(mesh), out_shardings=sharding.data_sharded(mesh))
        outs.append([np.asarray(x) for x in fn(image, mask, position)])
    # The draws are the same bits (the masks, gathered, are equal); the pixels agree to float32
    # rounding: XLA sums the matrix products in another order for 16 rows than for 2 per device.
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=0, atol=1e-3)
    order = np.arange(16)[::-1]
    rev_image, rev_mask = [np.asarray(x) for x in jax.jit(aug)(image[order], mask[order], position[order])]
    np.testing.assert_array_equal(rev_mask, outs[0][1][order])
    np.testing.assert_allclose(rev_image, outs[0][0][order], atol=1e-4)
    # Another position, another draw.
    other, _ = run(aug, image, mask, first=2000)
    assert not np.allclose(other, outs[0][0])


def test_a_resumed_stream_gets_the_same_augmented_batches(tiny_dataset):
    config = config_on(tiny_dataset)
    aug = jax.jit(augment.from_config(config.augment, config.seed))
    split = pipeline.open_split(config.dataset, "train")
    stream = iter(pipeline.train_dataset(split, config, 8))
    next(stream)
    state = stream.get_state()
    after = [next(stream) for _ in range(2)]
    resumed = iter(pipeline.train_dataset(split, config, 8))
    resumed.set_state(state)
    for want, got in zip(after, [next(resumed) for _ in range(2)]):
        a = [np.asarray(x) for x in aug(want["image"], want["mask"], want["position"])]
        b = [np.asarray(x) for x in aug(got["image"], got["mask"], got["position"])]
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # ... and the same as a stream started at that global batch (how a resized run resumes).
    restarted = next(iter(pipeline.train_dataset(split, config, 8, start_batch=1)))
    np.testing.assert_array_equal(restarted["position"], after[0]["position"])
    np.testing.assert_array_equal(restarted["image"], after[0]["image"])


def test_host_jpeg_is_seeded_and_applied_at_its_rate():
    cfg = load_config().augment
    with cfg.unlocked():
        cfg.jpeg_prob, cfg.jpeg_quality = 1.0, (60, 60)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = augment.host_augment(image, np.random.default_rng([0, 5]), cfg)
    b = augment.host_augment(image, np.random.default_rng([0, 5]), cfg)
    np.testing.assert_array_equal(a, b)
    assert a.shape == image.shape and a.dtype == np.uint8 and not np.array_equal(a, image)
    with cfg.unlocked():
        cfg.jpeg_prob = 0.0
    assert augment.host_augment(image, np.random.default_rng([0, 5]), cfg) is image
