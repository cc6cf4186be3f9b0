"""The evaluator end to end on tiny models, against scikit-learn on the same frames."""

import math
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
from sklearn import metrics as skm

from ffjax import tasks
from ffjax.evaluation import Evaluator

NAMES, COMPS = ("original", "Deepfakes", "Face2Face"), ("raw", "c23")
SIZE, BATCH, TOPK = 16, 16, 0.05


class TinySeg(nnx.Module):
    """Follows the model contract: float [0, 1] images in, [B, H, W, 1] logits out."""

    task = "segmentation"

    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 1, (1, 1), rngs=rngs)

    def __call__(self, images, train):
        return self.conv(images * 8.0 - 4.0)


class TinyCls(nnx.Module):
    task = "classification"

    def __init__(self, rngs):
        self.head = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, images, train):
        return self.head(jnp.mean(images, axis=(1, 2)) * 8.0 - 4.0)


def score_fn(logits, task, topk_fraction):
    """The tasks' frame score, written out independently: top-k mean pixel probability /
    softmax 'fake'."""
    if task == "segmentation":
        flat = logits.reshape(logits.shape[0], -1)
        k = max(1, math.ceil(topk_fraction * flat.shape[1]))
        return jnp.mean(jax.nn.sigmoid(jax.lax.top_k(flat, k)[0]), axis=1)
    return jax.nn.softmax(logits, axis=-1)[:, 1]


def _dataset(n=52, seed=0):
    rng = np.random.default_rng(seed)
    method = rng.integers(0, 3, n).astype(np.int32)
    label = (method > 0).astype(np.int32)
    image = rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
    image[label == 1, :, :, 0] //= 2  # fakes look different, so metrics are not at chance
    # Bare names shared across methods: (method, compression, name) must keep them apart.
    names = np.array([f"{i % 4:03d}" for i in range(n)])
    return dict(
        image=image,
        mask=((rng.random((n, SIZE, SIZE)) < 0.3) & (label[:, None, None] == 1)).astype(np.uint8),
        label=label,
        valid=np.ones(n, bool),
        method_id=method,
        compression_id=rng.integers(0, 2, n).astype(np.int32),
        video_id=names,
    )


def _batches(data, extra_padding=False):
    n = len(data["label"])
    for start in range(0, n, BATCH):  # the last batch is short: the evaluator pads it
        rows = {k: v[start : start + BATCH] for k, v in data.items()}
        yield {k: v for k, v in rows.items() if k != "video_id"}, {"video_id": rows["video_id"]}
    if extra_padding:
        pad = {k: np.zeros_like(v[:BATCH]) for k, v in data.items() if k != "video_id"}
        yield pad, {"video_id": [""] * BATCH}


def _mesh(n, explicit=True):
    kind = AxisType.Explicit if explicit else AxisType.Auto
    return Mesh(np.asarray(jax.devices()[:n]), ("data",), axis_types=(kind,))


TASKS = {"segmentation": tasks.Segmentation(topk_fraction=TOPK), "classification": tasks.Classification()}


def _evaluator(model, mesh, **kw):
    graphdef, _ = nnx.split(model)

    def predict_fn(state, images):
        return TASKS[model.task].forward(nnx.merge(graphdef, state), images, train=False)

    return Evaluator(predict_fn, mesh, task=TASKS[model.task], method_names=NAMES, compression_names=COMPS, **kw)


def _reference(model, data):
    """Scores and pixel predictions computed eagerly, outside the evaluator."""
    logits = model(jnp.asarray(data["image"], jnp.float32) / 255.0, train=False)
    scores = np.asarray(score_fn(logits, model.task, TOPK))
    pixels = np.asarray(jax.nn.sigmoid(logits[..., 0])) >= 0.5 if model.task == "segmentation" else None
    return scores, pixels


@pytest.fixture(scope="module")
def seg_run():
    model = TinySeg(nnx.Rngs(0))
    data = _dataset()
    evaluator = _evaluator(model, _mesh(8))
    result = evaluator.evaluate(nnx.split(model)[1], _batches(data))
    return model, data, evaluator, result


def test_metrics_match_sklearn(seg_run):
    model, data, _, result = seg_run
    scores, pixels = _reference(model, data)
    probs = np.asarray(jax.nn.sigmoid(model(jnp.asarray(data["image"], jnp.float32) / 255.0, train=False)[..., 0]))
    m, label, masks = data["method_id"], data["label"], data["mask"] > 0
    for method, sel_frames, sel_pixels in [
        ("all", np.ones_like(label, bool), np.ones_like(label, bool)),
        ("Deepfakes", (m == 1) | (m == 0), m == 1),  # fakes of one method vs ALL originals
        ("Face2Face", (m == 2) | (m == 0), m == 2),
    ]:
        row = result.metrics["all"][method]
        lab, s = label[sel_frames], scores[sel_frames]
        assert row["frame"]["accuracy"] == pytest.approx(skm.accuracy_score(lab, s >= 0.5))
        # Exact: every frame's score, not a histogram of them.
        assert row["frame"]["auc"] == pytest.approx(skm.roc_auc_score(lab, s), abs=1e-12)
        assert row["frame"]["ap"] == pytest.approx(skm.average_precision_score(lab, s), abs=1e-12)
        t, p = masks[sel_pixels].ravel(), pixels[sel_pixels].ravel()
        assert row["pixel"]["iou_fake"] == pytest.approx(skm.jaccard_score(t, p), abs=1e-12)
        assert row["pixel"]["f1_mean"] == pytest.approx(skm.f1_score(t, p, average="macro"), abs=1e-12)
        # Per image: the mean over frames with manipulated pixels of each frame's own IoU/F1.
        masked = [i for i in np.flatnonzero(sel_pixels) if masks[i].any()]
        assert row["pixel"]["num_masked_images"] == len(masked) > 0
        per_iou = [skm.jaccard_score(masks[i].ravel(), pixels[i].ravel(), zero_division=0) for i in masked]
        per_f1 = [skm.f1_score(masks[i].ravel(), pixels[i].ravel(), zero_division=0) for i in masked]
        assert row["pixel"]["iou_fake_per_image"] == pytest.approx(np.mean(per_iou), abs=1e-12)
        assert row["pixel"]["f1_fake_per_image"] == pytest.approx(np.mean(per_f1), abs=1e-12)
        # Pixel AUC from the 100-bin histogram: sklearn on the binned probabilities.
        binned = np.clip(np.floor(probs[sel_pixels] * np.float32(100)), 0, 99).ravel()
        assert row["pixel"]["auc"] == pytest.approx(skm.roc_auc_score(t, binned), abs=1e-9)
        # Video level: mean frame score per (method, compression, name).
        keys = list(zip(m[sel_frames], data["compression_id"][sel_frames], data["video_id"][sel_frames]))
        uniq = sorted(set(keys))
        v_lab = np.array([label[sel_frames][keys.index(k)] for k in uniq])
        v_score = np.array([np.mean([s[i] for i, kk in enumerate(keys) if kk == k]) for k in uniq])
        assert row["video"]["num_real"] + row["video"]["num_fake"] == len(uniq)
        assert row["video"]["auc"] == pytest.approx(skm.roc_auc_score(v_lab, v_score), abs=1e-9)
        assert row["video"]["accuracy"] == pytest.approx(skm.accuracy_score(v_lab, v_score >= 0.5))
    assert result.protocol["num_videos"] == len(set(zip(m, data["compression_id"], data["video_id"])))
    assert result.protocol["num_videos"] > len(set(data["video_id"]))  # same names stayed apart
    assert result.throughput["frames"] == len(label) and result.throughput["frames_per_second"] > 0


def test_sharded_sums_equal_single_device_and_padding_adds_nothing(seg_run):
    model, data, evaluator, result8 = seg_run
    state = nnx.split(model)[1]
    result1 = _evaluator(model, _mesh(1, explicit=False)).evaluate(state, _batches(data, extra_padding=True))
    for key in ("frame", "hist", "pixel", "pixel_hist"):
        np.testing.assert_array_equal(result8.sums[key], result1.sums[key])
    assert result8.metrics == result1.metrics
    again = evaluator.evaluate(state, _batches(data))  # short last batch was padded: one shape
    assert evaluator.num_compiled == 1
    np.testing.assert_array_equal(again.sums["hist"], result8.sums["hist"])


def test_global_array_batches_give_the_same_sums(seg_run):
    model, data, evaluator, result = seg_run
    sharding = NamedSharding(evaluator.mesh, P("data"))

    def global_batches():
        for batch, meta in _batches(data):
            if len(batch["label"]) < BATCH:
                batch = {k: np.concatenate([v, np.zeros((BATCH - len(v),) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
            yield {k: jax.device_put(v, sharding) for k, v in batch.items()}, meta

    got = evaluator.evaluate(nnx.split(model)[1], global_batches())
    for key in ("frame", "hist", "pixel"):
        np.testing.assert_array_equal(got.sums[key], result.sums[key])


def test_classifier_uses_the_same_code():
    model = TinyCls(nnx.Rngs(1))
    data = _dataset(seed=1)
    val = _evaluator(model, _mesh(8)).evaluate(nnx.split(model)[1], _batches(data))
    scores, _ = _reference(model, data)
    row = val.metrics["all"]["all"]
    assert "pixel" not in row
    assert row["frame"]["accuracy"] == pytest.approx(skm.accuracy_score(data["label"], scores >= 0.5))
    assert row["frame"]["auc"] == pytest.approx(skm.roc_auc_score(data["label"], scores), abs=1e-12)
    # A threshold calibrated on "validation" is applied exactly on "test".
    t = val.best_threshold
    test = _evaluator(model, _mesh(8)).evaluate(nnx.split(model)[1], _batches(data), calibrated_threshold=t)
    expect = np.mean((scores >= t) == data["label"])
    assert test.metrics["all"]["all"]["frame"]["accuracy_calibrated"] == pytest.approx(expect)
    assert expect == pytest.approx(row["frame"]["accuracy_at_best"])


def test_bad_batches_fail_loud(seg_run):
    model, data, evaluator, _ = seg_run
    state = nnx.split(model)[1]
    batch, meta = next(_batches(data))
    with pytest.raises(ValueError, match="lacks \\['mask'\\]"):
        evaluator.evaluate(state, [({k: v for k, v in batch.items() if k != "mask"}, meta)])
    with pytest.raises(ValueError, match="method_id values \\[7\\]"):
        evaluator.evaluate(state, [({**batch, "method_id": np.full(BATCH, 7, np.int32)}, meta)])
    with pytest.raises(ValueError, match="does not divide over 8 devices"):
        evaluator.evaluate(state, [({k: v[:12] for k, v in batch.items()}, meta)])
    with pytest.raises(ValueError, match="no valid frame"):
        evaluator.evaluate(state, [({**batch, "valid": np.zeros(BATCH, bool)}, meta)])


_WORKER = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, pid, out, tests_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
sys.path.insert(0, tests_dir)
import numpy as np
from flax import nnx
import evaluation_evaluator_test as t
model = t.TinySeg(nnx.Rngs(0))
half = t.BATCH // 2
def local_batches():  # each process feeds its half of every global batch
    for batch, meta in t._batches(t._dataset()):
        rows = slice(pid * half, (pid + 1) * half)
        yield {k: v[rows] for k, v in batch.items()}, {"video_id": meta["video_id"][rows]}
mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
result = t._evaluator(model, mesh).evaluate(nnx.split(model)[1], local_batches())
np.savez(out + f".{pid}.npz", num_videos=result.protocol["num_videos"], **result.sums)
"""


def test_two_processes_give_the_same_sums(seg_run, tmp_path):
    """Two hosts (processes, gloo collectives) x 2 CPU devices each, against one process."""
    *_, expected = seg_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = str(tmp_path / "result")
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(port), str(pid), out, os.path.dirname(__file__)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for pid in (0, 1)
    ]
    logs = [p.communicate(timeout=240)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]
    for pid in (0, 1):
        got = np.load(f"{out}.{pid}.npz")
        assert int(got["num_videos"]) == expected.protocol["num_videos"]
        for key in ("frame", "hist", "pixel"):
            np.testing.assert_array_equal(got[key], expected.sums[key])


def _walk(value, path="report"):
    """Every (path, leaf) of a nested JSON-like value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, value


def _cross_dataset(n=40, seed=2):
    """A Celeb-DF-shaped stream: originals and one fake method, all 'as_released', all-zero
    masks, mask_source 'unavailable' for fakes and 'none' for reals (what the builders write)."""
    from ffjax.data import ffpp

    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n).astype(np.int32)
    image = rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
    image[label == 1, :, :, 0] //= 2
    return dict(
        image=image,
        mask=np.zeros((n, SIZE, SIZE), np.uint8),
        label=label,
        valid=np.ones(n, bool),
        method_id=np.where(label == 1, ffpp.METHOD_NAMES.index("Celeb-synthesis"), 0).astype(np.int32),
        compression_id=np.full(n, ffpp.COMPRESSION_NAMES.index(ffpp.AS_RELEASED), np.int32),
        video_id=np.array([f"id{i % 5}_{label[i]}" for i in range(n)]),
        mask_source=np.where(label == 1, "unavailable", "none"),
    )


def _meta_batches(data, drop=()):
    meta_keys = ("video_id", "mask_source")
    for start in range(0, len(data["label"]), BATCH):
        rows = {k: v[start : start + BATCH] for k, v in data.items()}
        yield ({k: v for k, v in rows.items() if k not in meta_keys + tuple(drop)},
               {k: rows[k] for k in meta_keys})


def test_cross_dataset_without_pixel_metrics(tmp_path):
    """No masks: frame and video metrics only, no pixel key, no NaN, no n/a, the protocol says
    cross-dataset, and the mask never reaches the device."""
    import json
    import re

    from ffjax.evaluation import write_report

    model = TinySeg(nnx.Rngs(0))
    task = TASKS["segmentation"]
    graphdef, state = nnx.split(model)
    evaluator = Evaluator(lambda s, x: task.forward(nnx.merge(graphdef, s), x, train=False), _mesh(8), task=task)
    data = _cross_dataset()
    with pytest.raises(ValueError, match="mask_source 'unavailable'.*pixel_metrics=False"):
        evaluator.evaluate(state, _meta_batches(data))
    result = evaluator.evaluate(state, _meta_batches(data), pixel_metrics=False, evaluation="cross-dataset",
                                protocol={"frames_per_video": 8, "crop_scale": 1.3, "checkpoint_step": 5})
    compiled = evaluator.num_compiled
    without_mask = evaluator.evaluate(state, _meta_batches(data, drop=("mask",)), pixel_metrics=False)
    assert evaluator.num_compiled == compiled  # the same device batch: the mask was never put there
    assert without_mask.metrics == result.metrics
    assert set(result.sums) == {"frame", "hist"}
    with pytest.raises(ValueError, match="evaluation='domain'"):
        evaluator.evaluate(state, _meta_batches(data), pixel_metrics=False, evaluation="domain")

    # The frame score is still the segmentation model's (top-k pixel probabilities).
    scores, _ = _reference(model, data)
    row = result.metrics["all"]["all"]
    assert set(row) == {"frame", "video"}
    assert row["frame"]["auc"] == pytest.approx(skm.roc_auc_score(data["label"], scores), abs=1e-12)
    assert row["frame"]["ap"] == pytest.approx(skm.average_precision_score(data["label"], scores), abs=1e-12)
    assert row["video"]["eer"] is not None and row["video"]["ap"] is not None
    # One fake method: no originals-only row (its AUC is undefined), every metric defined.
    assert set(result.metrics) == {"all", "as_released"}
    assert all(set(rows) == {"all", "Celeb-synthesis"} for rows in result.metrics.values())
    assert result.protocol["evaluation"] == "cross-dataset" and result.protocol["pixel_metrics"] is False
    assert "mask_sources" not in result.protocol and "pixel_auc" not in result.protocol
    assert without_mask.protocol["evaluation"] == "in-domain"  # the default

    json_path, md_path = write_report(result, tmp_path, "test")
    saved = json.loads(json_path.read_text())
    leaves = list(_walk(saved))
    assert not [p for p, _ in leaves if "pixel" in p.split(".")[-1] and p != "report.protocol.pixel_metrics"]
    assert not [p for p, v in leaves if isinstance(v, float) and not math.isfinite(v)]
    assert not [p for p, v in _walk(saved["metrics"]) if v is None]
    assert not any(".pixel." in p for p, _ in leaves)
    text = md_path.read_text()
    assert not re.search(r"\bnan\b|n/a", text, re.IGNORECASE)
    assert "IoU" not in text and "Pix" not in text
    assert "| Video AUC | Video EER | Video AP |" in text
    assert "# Evaluation: test (cross-dataset)" in text and "| evaluation | cross-dataset |" in text
    assert "No pixel metrics" in text
