"""The host augmentations: the one-pass colour jitter equals the step-by-step definition."""

import numpy as np
import pytest

from ffjax.data import augment


def _step_by_step(image, b, c, s):
    img = image.astype(np.float64) * b
    mean = img.mean()
    img = (img - mean) * c + mean
    gray = img.mean(axis=-1, keepdims=True)
    img = (img - gray) * s + gray
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("factors", [(1.0, 1.0, 1.0), (1.1, 0.9, 1.05), (0.9, 1.1, 0.9), (1.3, 1.3, 0.0)])
def test_color_jitter_is_the_three_steps_in_one_pass(factors):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 37, 3), dtype=np.uint8)
    got = augment.color_jitter(image, *factors)
    want = _step_by_step(image, *factors)
    assert got.dtype == np.uint8 and got.shape == image.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float32 vs float64 rounding
    if factors == (1.0, 1.0, 1.0):
        np.testing.assert_array_equal(got, image)
    assert np.mean(got != want) < 0.1  # OpenCV computes in float32: ~4 % of values differ by one
