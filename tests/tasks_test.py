"""Tests for ffjax.tasks: frame scores, pixel outputs and losses of the two tasks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffjax import tasks
from tests.helpers import load_config


def seg(fraction=tasks.DEFAULT_TOPK_FRACTION):
    return tasks.Segmentation(topk_fraction=fraction)


def test_frame_score_classifier_paths():
    cls = tasks.Classification()
    one = jnp.array([[-2.0], [0.0], [3.0]])
    np.testing.assert_allclose(cls.frame_score(one), jax.nn.sigmoid(one[:, 0]))
    two = jnp.array([[1.0, -1.0], [0.0, 2.0]])
    np.testing.assert_allclose(cls.frame_score(two), jax.nn.softmax(two, axis=-1)[:, 1], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 1\]"):
        cls.frame_score(jnp.zeros((2, 3)))
    assert cls.pixel_probs(one) is None and not cls.uses_masks


def test_frame_score_top_k_counts_a_small_region():
    logits = jnp.full((2, 10, 10, 1), -30.0)
    logits = logits.at[0, 2:5, 4, 0].set(30.0)  # 3 of 100 pixels manipulated
    score = lambda f: np.asarray(seg(f).frame_score(logits))
    np.testing.assert_allclose(score(0.03), [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(score(0.05), [0.6, 0.0], atol=1e-6)  # k = 5: 3 on, 2 off
    np.testing.assert_allclose(score(1.0), [0.03, 0.0], atol=1e-6)  # the plain mean
    np.testing.assert_allclose(score(1e-9), [1.0, 0.0], atol=1e-6)  # at least one pixel


def test_frame_score_matches_numpy_under_jit_and_stays_in_range():
    logits = 5 * jax.random.normal(jax.random.key(6), (3, 16, 16, 1))
    logits = logits.at[2].set(1e4).at[1, 0, 0, 0].set(-1e4)
    fraction = 0.1
    got = np.asarray(jax.jit(seg(fraction).frame_score)(logits))
    k = math.ceil(fraction * 256)
    probs = 0.5 * (1 + np.tanh(np.asarray(logits, np.float64).reshape(3, -1) / 2))
    expected = np.sort(probs, axis=1)[:, -k:].mean(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all((got >= 0) & (got <= 1)) and got[2] == 1.0


def test_segmentation_rejects_bad_fractions_and_shapes():
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="topk_fraction"):
            seg(bad)
    with pytest.raises(TypeError, match="static"):
        jax.jit(lambda f: tasks.Segmentation(topk_fraction=f))(0.1)
    with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
        seg().frame_score(jnp.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
        seg().pixel_probs(jnp.zeros((1, 8, 8, 2)))


def test_losses_follow_the_task():
    logits = jnp.zeros((2, 4, 4, 1))
    mask = jnp.zeros((2, 4, 4), jnp.uint8).at[0, :2].set(1)
    loss, parts = tasks.Segmentation(pos_weight=1.0, dice_weight=0.0).loss(logits, {"mask": mask})
    np.testing.assert_allclose(loss, math.log(2), rtol=1e-6)  # BCE of p=0.5 everywhere
    loss_dice, parts = tasks.Segmentation(pos_weight=1.0, dice_weight=1.0).loss(logits, {"mask": mask})
    np.testing.assert_allclose(loss_dice, math.log(2) + parts["dice"], rtol=1e-6)
    cls_loss, _ = tasks.Classification().loss(jnp.zeros((2, 1)), {"label": jnp.array([0, 1])})
    np.testing.assert_allclose(cls_loss, math.log(2), rtol=1e-6)


def test_from_config_picks_the_models_task_with_its_settings():
    config = load_config("test")
    task = tasks.from_config(config)
    assert isinstance(task, tasks.Segmentation) and task.topk_fraction == config.frame_score_topk
    assert task.dice_weight == config.loss.dice_weight
    assert isinstance(tasks.from_config(load_config("xception_cls")), tasks.Classification)
    with config.unlocked():
        config.model = "resnet50"
    with pytest.raises(ValueError, match="config.model='resnet50'"):
        tasks.from_config(config)


def test_forward_scales_uint8_once():
    seen = {}

    def model(x, train):
        seen["x"], seen["train"] = x, train
        return x

    tasks.Segmentation().forward(model, jnp.full((1, 2, 2, 3), 255, jnp.uint8), train=False)
    assert seen["x"].dtype == jnp.float32 and float(seen["x"].max()) == 1.0 and seen["train"] is False


def test_two_head_task_trains_both_heads_and_scores_from_either():
    logits = {"mask": jnp.zeros((2, 4, 4, 1)).at[1, 0, 0, 0].set(8.0), "frame": jnp.array([[-3.0], [3.0]])}
    batch = {"mask": jnp.zeros((2, 4, 4), jnp.uint8), "label": jnp.array([0, 1])}
    seg = tasks.Segmentation(topk_fraction=1 / 16, dice_weight=0.0)
    task = tasks.SegmentationClassification(segmentation=seg, frame_weight=2.0)
    loss, parts = task.loss(logits, batch)
    seg_loss, _ = seg.loss(logits["mask"], batch)
    frame_loss, _ = tasks.Classification().loss(logits["frame"], batch)
    np.testing.assert_allclose(loss, seg_loss + 2.0 * frame_loss, rtol=1e-6)
    np.testing.assert_allclose(parts["frame_bce"], frame_loss, rtol=1e-6)
    np.testing.assert_allclose(task.frame_score(logits), jax.nn.sigmoid(jnp.array([-3.0, 3.0])), rtol=1e-6)
    by_mask = tasks.SegmentationClassification(segmentation=seg, frame_score_from="mask")
    np.testing.assert_allclose(by_mask.frame_score(logits), seg.frame_score(logits["mask"]), rtol=1e-6)
    assert task.pixel_probs(logits).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="frame_score_from"):
        tasks.SegmentationClassification(frame_score_from="both")
    config = load_config("test")
    with config.unlocked():
        config.model, config.frame_score_from = "unet_xception_2head", "mask"
    picked = tasks.from_config(config)
    assert isinstance(picked, tasks.SegmentationClassification) and picked.frame_score_from == "mask"
