"""The real `train_and_evaluate` on the tiny config, on data built by the real builder."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from ffjax import checkpoints, evaluation, optim, sharding, train
from ffjax.state import create_train_state
from tests.helpers import config_on as tiny_config


def final_state(config, workdir):
    """The whole train state of the run's latest checkpoint (model, optimizer, step, RNG)."""
    mesh = sharding.make_mesh()
    _, state = create_train_state(config, mesh, optim.make_optimizer(config))
    ckpt = checkpoints.Checkpointer(workdir)
    try:
        restored, _ = ckpt.restore_latest(checkpoints.abstract_like(state))
    finally:
        ckpt.close()
    return int(restored.step), jax.device_get(restored)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_train_and_evaluate_end_to_end(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, num_train_steps=16, log_every_steps=4, eval_every_steps=8, checkpoint_every_steps=8)
    workdir = tmp_path / "run"
    results = train.train_and_evaluate(config, str(workdir))

    rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in rows] == [4, 8, 12, 16]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"], rows
    assert all(np.isfinite(r["train/loss"]) for r in rows)
    assert rows[-1]["images_per_sec"] > 0

    assert sorted(os.listdir(workdir / "checkpoints")) == ["16", "8"]
    assert os.listdir(workdir / "best")  # kept by config.best_metric
    assert list((workdir / "tensorboard").iterdir())
    eval_rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in eval_rows] == [8, 16]
    assert results  # the last evaluation's results came back
    assert any(name.endswith(".md") for name in os.listdir(workdir / "eval"))

    # `ffjax eval` on the test split with the best checkpoint: the threshold validation chose
    # for that checkpoint (stored with it) gives the calibrated accuracy, the step named.
    test = evaluation.evaluate_checkpoint(config, str(workdir), split="test", checkpoint="best")
    report = json.loads((workdir / "eval" / "eval_test.json").read_text())
    assert report["protocol"]["split"] == "test"
    assert report["protocol"]["checkpoint_step"] in (8, 16)
    assert report["protocol"]["calibrated_threshold"] is not None
    # Which masks each method was scored against: the tiny tree ships masks for every method.
    sources = report["protocol"]["mask_sources"]
    assert set(sources) <= {"Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"} and sources
    assert all(set(c) <= {"shipped", "derived"} and sum(c.values()) > 0 for c in sources.values())
    assert report["protocol"]["calibrated_threshold_from"] == f"val at step {report['protocol']['checkpoint_step']}"
    # A validation report written later by another step changes nothing.
    val_report = workdir / "eval" / "eval_val.json"
    val = json.loads(val_report.read_text())
    val["metrics"]["all"]["all"]["frame"]["best_threshold"] = 0.123
    val_report.write_text(json.dumps(val))
    again = evaluation.evaluate_checkpoint(config, str(workdir), split="test", checkpoint="best")
    assert again.protocol["calibrated_threshold"] == report["protocol"]["calibrated_threshold"] != 0.123
    assert "accuracy_calibrated" in report["metrics"]["all"]["all"]["frame"]
    assert test.protocol["num_frames"] == 40


def test_interrupted_run_resumes_bit_identical(tiny_dataset, tmp_path, monkeypatch):
    config = tiny_config(tiny_dataset, num_train_steps=6, eval_every_steps=0, checkpoint_every_steps=3)
    train.train_and_evaluate(config, str(tmp_path / "straight"))

    # Preempt the second run with SIGTERM while it takes its 5th batch: it must checkpoint
    # step 5 and say it stopped (not finished); the restart continues from there.
    real_global_batch = sharding.global_batch
    calls = {"n": 0}

    def preempting_global_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGTERM)
        return real_global_batch(*args, **kwargs)

    monkeypatch.setattr(train.sharding, "global_batch", preempting_global_batch)
    with pytest.raises(train.Preempted) as stopped:
        train.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert stopped.value.step == 5
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["3", "5"]
    monkeypatch.setattr(train.sharding, "global_batch", real_global_batch)
    train.train_and_evaluate(config, str(tmp_path / "resumed"))

    step_a, a = final_state(config, str(tmp_path / "straight"))
    step_b, b = final_state(config, str(tmp_path / "resumed"))
    assert step_a == step_b == 6
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)  # bit-identical, not merely close


def test_nan_loss_stops_with_the_step_named(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, learning_rate=1e30, grad_clip_norm=0.0, warmup_steps=0, num_train_steps=6, eval_every_steps=0)
    with pytest.raises(FloatingPointError, match=r"at step \d"):
        train.train_and_evaluate(config, str(tmp_path / "nan"))


def test_classifier_config_trains_and_evaluates_with_the_same_code(tiny_dataset, tmp_path):
    """The paper's comparison: the Xception classifier on the same data and evaluator."""
    config = tiny_config(
        tiny_dataset, name="xception_cls", model_kwargs={"width": 0.125, "middle_blocks": 1},
        batch_size=8, eval_batch_size=16, num_train_steps=2, log_every_steps=1, eval_every_steps=2,
        checkpoint_every_steps=2, warmup_steps=0,
    )
    with config.dataset.unlocked():
        config.dataset.num_workers = 0
    results = train.train_and_evaluate(config, str(tmp_path / "cls"))
    assert results.protocol["task"] == "classification"
    frame = results.metrics["all"]["all"]["frame"]
    assert 0.0 <= frame["auc"] <= 1.0
    assert "pixel" not in results.metrics["all"]["all"]  # a classifier has no masks to score
    rows = [r for r in read_jsonl(tmp_path / "cls" / "metrics.jsonl") if "train/loss" in r]
    assert len(rows) == 2 and all(np.isfinite(r["train/loss"]) for r in rows)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(tiny_dataset, tmp_path):
    """A truncated array file or a flipped byte in the newest step: the resume moves it aside
    (kept, named) and continues from the step before; evaluation calls it corruption."""
    config = tiny_config(tiny_dataset, num_train_steps=4, eval_every_steps=0, checkpoint_every_steps=2)
    workdir = tmp_path / "run"
    train.train_and_evaluate(config, str(workdir))
    step4 = workdir / "checkpoints" / "4"
    assert (step4 / checkpoints.CHECKSUMS).exists()
    arrays = sorted((p for p in step4.rglob("*") if p.is_file() and p.stat().st_size > 1000), key=lambda p: p.stat().st_size)
    victim = arrays[-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: restores silently without checksums
    victim.write_bytes(bytes(data))
    with pytest.raises(checkpoints.CorruptCheckpoint, match="differs from what was written"):
        evaluation.evaluate_checkpoint(config, str(workdir), split="val")
    with config.unlocked():
        config.num_train_steps = 6
    train.train_and_evaluate(config, str(workdir))
    moved = list((workdir / "checkpoints_corrupt").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("4_")  # kept for inspection, not deleted
    # Steps 3-6 were redone from step 2 (keep_checkpoints then drops 2).
    assert sorted(os.listdir(workdir / "checkpoints"))[-2:] == ["4", "6"]
    assert checkpoints.verify_checksums(workdir / "checkpoints" / "4") is None


def test_resuming_with_another_model_names_the_changed_field(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, num_train_steps=2, eval_every_steps=0, checkpoint_every_steps=2)
    train.train_and_evaluate(config, str(tmp_path))
    wider = tiny_config(tiny_dataset, num_train_steps=4, eval_every_steps=0, checkpoint_every_steps=2,
                        model_kwargs={"base_width": 2 * config.model_kwargs.base_width})
    with pytest.raises(ValueError, match=r"other model or data settings: model_kwargs.base_width: \d+ -> \d+"):
        train.train_and_evaluate(wider, str(tmp_path))
    # A changed learning rate is allowed, and said.
    faster = tiny_config(tiny_dataset, num_train_steps=4, eval_every_steps=0, checkpoint_every_steps=2, learning_rate=0.03)
    train.train_and_evaluate(faster, str(tmp_path))
