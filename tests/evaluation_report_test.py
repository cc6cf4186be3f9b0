"""The breakdown (ffjax.evaluation.report.summarize) and the report files, against scikit-learn."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from ffjax.evaluation import metrics
from ffjax.evaluation.report import EvalResult, side_by_side, summarize, write_report, write_side_by_side

NAMES, COMPS = ("original", "Deepfakes", "Face2Face"), ("raw", "c23")
BINS = 1000


def _frames(n=400, seed=5, size=6):
    rng = np.random.default_rng(seed)
    method = rng.integers(0, 3, n)
    label = (method > 0).astype(int)
    return dict(
        method=method,
        comp=rng.integers(0, 2, n),
        label=label,
        score=np.clip(rng.beta(2, 3, n) + 0.25 * label, 0, 1),
        video=np.array([f"{i % 7:03d}" for i in range(n)]),  # names shared across methods
        pred=rng.random((n, size, size)) < 0.4,
        mask=(rng.random((n, size, size)) < 0.4) & (label[:, None, None] == 1),
    )


def _numpy_sums(f):
    """The counts batch_sums makes, built here with plain numpy loops."""
    sums = {"frame": np.zeros((3, 2, 4), np.int64), "pixel": np.zeros((3, 2, 4), np.int64)}
    sums["hist"] = np.zeros((3, 2, 2, BINS), np.int64)
    for i in range(len(f["label"])):
        m, c, lab = f["method"][i], f["comp"][i], f["label"][i]
        pred, fake = f["score"][i] >= 0.5, lab == 1
        sums["frame"][m, c] += [pred and fake, pred and not fake, fake and not pred, not (pred or fake)]
        p, t = f["pred"][i], f["mask"][i]
        sums["pixel"][m, c] += [np.sum(p & t), np.sum(p & ~t), np.sum(~p & t), np.sum(~p & ~t)]
        sums["hist"][m, c, lab, min(int(f["score"][i] * BINS), BINS - 1)] += 1
    return sums


def _videos(f):
    videos = metrics.VideoScores()
    n = len(f["label"])
    videos.add(f["video"], f["method"], f["comp"], f["label"], f["score"], np.ones(n, bool))
    return videos


@pytest.fixture(scope="module")
def table():
    f = _frames()
    out = summarize(_numpy_sums(f), _videos(f), method_names=NAMES, compression_names=COMPS,
                    threshold=0.5, num_bins=BINS)
    return f, out


def test_breakdowns_follow_the_benchmark_convention(table):
    f, out = table
    m, c = f["method"], f["comp"]
    every = np.ones_like(m, bool)
    cases = {
        ("all", "all"): (every, every),
        ("all", "Deepfakes"): ((m == 1) | (m == 0), m == 1),  # fakes vs ALL originals
        ("c23", "Face2Face"): ((c == 1) & ((m == 2) | (m == 0)), (c == 1) & (m == 2)),
        ("raw", "all"): (c == 0, c == 0),
    }
    for (scope, method), (frames, pixels) in cases.items():
        row, lab, s = out[scope][method], f["label"][frames], f["score"][frames]
        assert row["frame"]["accuracy"] == pytest.approx(skm.accuracy_score(lab, s >= 0.5), abs=1e-12)
        assert row["frame"]["num_fake"] == lab.sum() and row["frame"]["num_real"] == (lab == 0).sum()
        assert abs(row["frame"]["auc"] - skm.roc_auc_score(lab, s)) < 1e-3
        t, p = f["mask"][pixels].ravel(), f["pred"][pixels].ravel()
        assert row["pixel"]["iou_fake"] == pytest.approx(skm.jaccard_score(t, p), abs=1e-12)
        assert row["pixel"]["iou_mean"] == pytest.approx(skm.jaccard_score(t, p, average="macro"), abs=1e-12)
        keys = sorted(set(zip(m[frames], c[frames], f["video"][frames])))
        sel = [(m == k[0]) & (c == k[1]) & (f["video"] == k[2]) for k in keys]
        v_lab = np.array([f["label"][s_][0] for s_ in sel])
        v_score = np.array([f["score"][s_].mean() for s_ in sel])
        assert row["video"]["num_real"] + row["video"]["num_fake"] == len(keys)
        assert row["video"]["auc"] == pytest.approx(skm.roc_auc_score(v_lab, v_score), abs=1e-12)
        assert row["video"]["accuracy"] == pytest.approx(skm.accuracy_score(v_lab, v_score >= 0.5))
    # Originals alone: their false positive pixels show, AUC is undefined (one class).
    original = out["all"]["original"]
    assert original["frame"]["auc"] is None and original["video"]["auc"] is None
    assert original["pixel"]["iou_fake"] == 0.0 and original["pixel"]["iou_mean"] is not None


def test_empty_groups_are_left_out():
    f = _frames(n=60)
    keep = f["comp"] == 1
    out = summarize(_numpy_sums({k: v[keep] for k, v in f.items()}), None, method_names=NAMES,
                    compression_names=COMPS, threshold=0.5, num_bins=BINS)
    assert set(out) == {"all", "c23"}
    assert "video" not in out["all"]["all"]
    with pytest.raises(ValueError, match="'original'"):
        summarize(_numpy_sums(f), None, method_names=NAMES[::-1], compression_names=COMPS,
                  threshold=0.5, num_bins=BINS)


def test_report_files_console_and_scalars(table, tmp_path, capsys):
    _, out = table
    speed = {"frames": 400, "seconds": 2.0, "compile_seconds": 1.0, "input_wait_seconds": 0.1,
             "frames_per_second": 400.0}
    result = EvalResult(out, {"task": "segmentation", "threshold": 0.5}, speed)
    with pytest.raises(ValueError, match="crop_scale"):
        write_report(result, tmp_path, "val", {"frames_per_video": 8, "checkpoint_step": 3})
    protocol = {"frames_per_video": 8, "crop_scale": 1.3, "checkpoint_step": None}
    json_path, md_path = write_report(result, tmp_path, "test", protocol)
    saved = json.loads(json_path.read_text())
    assert saved["protocol"]["split"] == "test" and saved["protocol"]["crop_scale"] == 1.3
    assert saved["metrics"]["all"]["original"]["frame"]["auc"] is None  # undefined -> null
    text = md_path.read_text()
    assert "| all | Deepfakes |" in text and "| frames_per_video | 8 |" in text
    assert "| c23 | Face2Face |" in text and "Acc@cal" not in text
    assert "| Video AUC | Video EER | Video AP | IoU |" in text
    assert text in capsys.readouterr().out
    scalars = result.scalars()
    assert scalars["frame/auc"] == out["all"]["all"]["frame"]["auc"]
    assert scalars["c23/Deepfakes/pixel/iou_fake"] == out["c23"]["Deepfakes"]["pixel"]["iou_fake"]
    assert "original/frame/auc" not in " ".join(scalars)  # None values are dropped
    with pytest.raises(ValueError, match="must be one of"):
        write_report(result, tmp_path, "test", {**protocol, "evaluation": "out-of-domain"})


def test_frame_metrics_are_exact_on_saturated_scores():
    """A confident segmentation model's top-1% scores crowd the top histogram bin, where reals
    and fakes tie; with every frame's score the AUC, AP, EER and thresholds are exact."""
    rng = np.random.default_rng(3)
    n = 600
    method = rng.integers(0, 3, n)
    label = (method > 0).astype(int)
    # Scores in [0.999, 1): one histogram bin; fakes rank higher on average inside it.
    score = 0.999 + 0.000999 * np.clip(rng.beta(2, 3, n) + 0.3 * label, 0, 1)
    f = dict(method=method, comp=np.zeros(n, int), label=label, score=score,
             video=np.array([f"{i:04d}" for i in range(n)]), pred=np.zeros((n, 2, 2), bool),
             mask=np.zeros((n, 2, 2), bool))
    sums = _numpy_sums(f)
    frames = metrics.FrameScores()
    frames.add(f["method"], f["comp"], f["label"], f["score"], np.ones(n, bool))
    kw = dict(method_names=NAMES, compression_names=COMPS, threshold=0.5, num_bins=BINS)
    binned = summarize(sums, None, **kw)["all"]["all"]["frame"]
    exact = summarize(sums, None, frames=frames, **kw)["all"]["all"]["frame"]
    want = skm.roc_auc_score(label, score)
    assert binned["auc"] == pytest.approx(0.5)  # every pair tied in one bin
    assert want > 0.7 and exact["auc"] == pytest.approx(want, abs=1e-12)
    assert exact["ap"] == pytest.approx(skm.average_precision_score(label, score), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(label, score)
    assert exact["eer"] == pytest.approx(fpr[np.argmin(np.abs(fpr + tpr - 1))], abs=0.02)
    t = exact["best_threshold"]
    assert 0.999 < t < 1.0 and exact["accuracy_at_best"] == pytest.approx(np.mean((score >= t) == label))


def test_frame_scores_survive_the_multihost_json_round_trip():
    frames = metrics.FrameScores()
    s = np.array([0.1, 0.7, np.float32(0.3333333)], np.float32)
    frames.add([0, 1, 2], [1, 1, 0], [0, 1, 1], s, [True, True, False], pixel_counts=np.arange(12).reshape(3, 4))
    merged = metrics.FrameScores()
    merged.merge_records(json.loads(json.dumps(frames.to_records())))
    merged.merge_records([])
    m, c, lab, score, pixel = merged.arrays()
    assert m.tolist() == [0, 1] and c.tolist() == [1, 1] and lab.tolist() == [0, 1]
    np.testing.assert_array_equal(score, s[:2].astype(np.float64))  # bit-exact
    np.testing.assert_array_equal(pixel, [[0, 1, 2, 3], [4, 5, 6, 7]])


def test_a_checkpoint_is_not_scored_on_crops_of_another_size():
    """A 32-px model on 64-px crops runs without error and means nothing: refused."""
    import types

    from ffjax.evaluation import runner

    split = types.SimpleNamespace(build_settings={"image_size": 64, "crop_scale": 1.3}, path="/data/c23_size64")
    with pytest.raises(ValueError, match="trained on crops with image_size=32 but /data/c23_size64 has image_size=64"):
        runner._check_crops_match({"image_size": 32, "crop_scale": 1.3}, split, "/runs/x")
    runner._check_crops_match({"image_size": 64, "crop_scale": 1.3}, split, "/runs/x")  # the same: fine
    runner._check_crops_match({}, split, "/runs/x")  # an old checkpoint that recorded nothing


_SPEED = {"frames": 400, "seconds": 2.0, "compile_seconds": 1.0, "input_wait_seconds": 0.1, "frames_per_second": 400.0}


def _no_pixels(f):
    """Counts of a dataset without masks: as the evaluator makes them with pixel_metrics=False."""
    return {k: v for k, v in _numpy_sums(f).items() if k in ("frame", "hist")}


def test_without_pixel_counts_the_originals_row_is_left_out():
    f = _frames(n=200, seed=8)
    out = summarize(_no_pixels(f), _videos(f), method_names=NAMES, compression_names=COMPS,
                    threshold=0.5, num_bins=BINS)
    for rows in out.values():
        assert "original" not in rows and {"all", "Deepfakes"} <= set(rows)
        for blocks in rows.values():
            assert set(blocks) == {"frame", "video"}
            assert None not in [blocks[b][k] for b in ("frame", "video") for k in ("auc", "eer", "ap")]


def test_side_by_side_in_domain_and_cross_dataset(table, tmp_path):
    _, with_pixels = table
    f = _frames(n=200, seed=9)
    f["method"] = np.where(f["label"] == 1, 1, 0)  # one fake method plus originals
    without = summarize(_no_pixels(f), _videos(f), method_names=NAMES, compression_names=COMPS,
                        threshold=0.5, num_bins=BINS)
    reports = {
        "FF++ c23 test (in-domain)": EvalResult(with_pixels, {"evaluation": "in-domain"}, _SPEED).to_dict(),
        "Celeb-DF v2 test (cross-dataset)": EvalResult(without, {"evaluation": "cross-dataset"}, _SPEED).to_dict(),
    }
    text = side_by_side(reports)
    lines = text.splitlines()
    assert lines[0] == ("| Dataset | Acc | AUC | AP | EER | Video AUC | Video AP | Video EER | IoU "
                        "| Frames real/fake | Videos real/fake |")
    assert "nan" not in text.lower() and "n/a" not in text
    ff, cd = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    assert ff[0] == "FF++ c23 test (in-domain)" and cd[0] == "Celeb-DF v2 test (cross-dataset)"
    assert ff[2] == f"{100 * with_pixels['all']['all']['frame']['auc']:.2f}"
    assert ff[8] == f"{100 * with_pixels['all']['all']['pixel']['iou_fake']:.2f}" and cd[8] == ""  # blank IoU
    assert cd[7] == f"{100 * without['all']['all']['video']['eer']:.2f}"
    frame = without["all"]["all"]["frame"]
    assert cd[9] == f"{frame['num_real']}/{frame['num_fake']}" == f"{(f['label'] == 0).sum()}/{f['label'].sum()}"
    assert "Acc@cal" not in text  # shown only when a report has a calibrated accuracy

    json_path, md_path = write_side_by_side(tmp_path / "compare" / "test", reports)
    assert md_path.name == "test.md" and md_path.read_text() == text
    saved = json.loads(json_path.read_text())  # allow_nan=False on write: standard JSON
    assert list(saved) == list(reports)
    assert "pixel" not in saved["Celeb-DF v2 test (cross-dataset)"]
    assert saved["Celeb-DF v2 test (cross-dataset)"]["protocol"] == {"evaluation": "cross-dataset"}
    assert saved["FF++ c23 test (in-domain)"]["pixel"]["iou_fake"] == with_pixels["all"]["all"]["pixel"]["iou_fake"]
    with pytest.raises(ValueError, match="no metrics"):
        side_by_side({"broken": {"protocol": {}}})
