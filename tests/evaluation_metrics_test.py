"""ffjax.metrics against independent references (numpy, scikit-learn, scipy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics as skm

from ffjax.evaluation import metrics

M, C = 3, 2
NAMES, COMPS = ("original", "Deepfakes", "Face2Face"), ("raw", "c23")


def _reference_eer(labels, scores):
    """The EER recipe common in deepfake papers: the ROC curve's crossing of FPR = FNR."""
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


def _random_frames(rng, n, size=8):
    method = rng.integers(0, M, n).astype(np.int32)
    label = (method > 0).astype(np.int32)
    # Fakes score higher on average so the metrics are not all at chance.
    scores = np.clip(rng.beta(2, 3, n) + 0.25 * label, 0, 1).astype(np.float32)
    scores[:5] = 0.5  # ties at the decision threshold count as fake
    probs = rng.random((n, size, size)).astype(np.float32)
    probs[:, 0, 0] = 0.5
    masks = ((rng.random((n, size, size)) < 0.4) & (label[:, None, None] == 1)).astype(np.uint8)
    return dict(
        scores=scores,
        labels=label,
        valid=rng.random(n) < 0.85,
        method_ids=method,
        compression_ids=rng.integers(0, C, n).astype(np.int32),
        pixel_probs=probs,
        masks=masks,
    )


def _device_sums(frames, num_bins=1000, threshold=0.5):
    fn = jax.jit(
        lambda f: metrics.batch_sums(
            **f, threshold=threshold, num_bins=num_bins, num_methods=M, num_compressions=C
        )
    )
    return metrics.as_host_sums(fn({k: jnp.asarray(v) for k, v in frames.items()}))


def test_batch_sums_match_numpy_counts():
    rng = np.random.default_rng(0)
    f = _random_frames(rng, 64)
    sums = _device_sums(f, num_bins=50)
    v = f["valid"]
    pred_pix, true_pix = f["pixel_probs"] >= 0.5, f["masks"] > 0
    bins = np.clip(np.floor(f["scores"] * np.float32(50)).astype(int), 0, 49)
    for m in range(M):
        for c in range(C):
            sel = v & (f["method_ids"] == m) & (f["compression_ids"] == c)
            p, t = pred_pix[sel], true_pix[sel]
            np.testing.assert_array_equal(
                sums["pixel"][m, c], [np.sum(p & t), np.sum(p & ~t), np.sum(~p & t), np.sum(~p & ~t)]
            )
            fp_, ft = f["scores"][sel] >= 0.5, f["labels"][sel] == 1
            np.testing.assert_array_equal(
                sums["frame"][m, c], [np.sum(fp_ & ft), np.sum(fp_ & ~ft), np.sum(~fp_ & ft), np.sum(~fp_ & ~ft)]
            )
            for lab in (0, 1):
                expect = np.bincount(bins[sel & (f["labels"] == lab)], minlength=50)
                np.testing.assert_array_equal(sums["hist"][m, c, lab], expect)


def test_only_padding_adds_nothing():
    f = _random_frames(np.random.default_rng(1), 16)
    f["valid"][:] = False
    sums = _device_sums(f)
    assert all(not np.any(v) for v in sums.values())
    assert sums["hist"].shape == (M, C, 2, 1000) and sums["pixel"].shape == (M, C, 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random(5000) < 0.3
    pred = rng.random(5000) < np.where(truth, 0.7, 0.2)
    counts = [np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth), np.sum(~pred & ~truth)]
    got = metrics.pixel_metrics(counts)
    for name, fn in [("iou", skm.jaccard_score), ("f1", skm.f1_score), ("precision", skm.precision_score), ("recall", skm.recall_score)]:
        assert got[f"{name}_fake"] == pytest.approx(fn(truth, pred), abs=1e-12)
        assert got[f"{name}_real"] == pytest.approx(fn(~truth, ~pred), abs=1e-12)
        assert got[f"{name}_mean"] == pytest.approx(fn(truth, pred, average="macro"), abs=1e-12)
    assert got["pixel_accuracy"] == pytest.approx(skm.accuracy_score(truth, pred), abs=1e-12)


def test_pixel_metrics_undefined_are_none():
    # Only real pixels, all predicted real: nothing about the fake class is defined.
    got = metrics.pixel_metrics([0, 0, 0, 100])
    assert got["iou_fake"] is None and got["iou_mean"] is None and got["recall_fake"] is None
    assert got["iou_real"] == 1.0 and got["pixel_accuracy"] == 1.0
    assert all(v is None for v in metrics.pixel_metrics([0, 0, 0, 0]).values())


def _hist(scores, labels, num_bins=1000):
    bins = np.clip(np.floor(scores * num_bins).astype(int), 0, num_bins - 1)
    neg = np.bincount(bins[labels == 0], minlength=num_bins)
    pos = np.bincount(bins[labels == 1], minlength=num_bins)
    return neg, pos, metrics.histogram_thresholds(num_bins)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_ranking_metrics_close_to_exact(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(20000) < 0.6).astype(int)
    scores = np.clip(rng.normal(0.45 + 0.15 * labels, 0.2), 0, 1)
    got = metrics.ranking_metrics(*_hist(scores, labels), past_end=1.0)
    assert abs(got["auc"] - skm.roc_auc_score(labels, scores)) < 1e-3
    assert abs(got["ap"] - skm.average_precision_score(labels, scores)) < 1e-3
    assert abs(got["eer"] - _reference_eer(labels, scores)) < 2e-3


def test_ties_are_exact_on_bin_centres():
    # Few distinct scores (heavy ties) on bin centres: the histogram loses nothing, so the
    # results must equal scikit-learn's, whose ties count half in AUC and group in AP.
    rng = np.random.default_rng(3)
    labels = (rng.random(3000) < 0.5).astype(int)
    levels = (np.array([50, 230, 400, 401, 777, 990]) + 0.5) / 1000
    scores = levels[np.minimum(rng.integers(0, 6, 3000) + labels, 5)]
    got = metrics.ranking_metrics(*_hist(scores, labels), past_end=1.0)
    assert got["auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert got["ap"] == pytest.approx(skm.average_precision_score(labels, scores), abs=1e-12)
    assert got["eer"] == pytest.approx(_reference_eer(labels, scores), abs=1e-9)


def test_exact_counts_match_sklearn_and_best_threshold_is_optimal():
    rng = np.random.default_rng(4)
    labels = (rng.random(300) < 0.4).astype(int)
    scores = np.round(rng.random(300) * 0.7 + 0.3 * labels, 2)  # rounded: ties
    neg, pos, thr = metrics.exact_counts(scores, labels)
    got = metrics.ranking_metrics(neg, pos, thr)
    assert got["auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert got["ap"] == pytest.approx(skm.average_precision_score(labels, scores), abs=1e-12)
    brute = max(np.mean((scores >= t) == labels) for t in np.append(np.unique(scores), 2.0))
    assert got["accuracy_at_best"] == pytest.approx(brute)
    assert np.mean((scores >= got["best_threshold"]) == labels) == pytest.approx(brute)
    for t in (0.0, 0.3, got["best_threshold"], 0.95, 1.5):
        assert metrics.accuracy_at(neg, pos, thr, t) == pytest.approx(np.mean((scores >= t) == labels))


def test_one_class_absent_is_none_not_crash():
    only_fake = metrics.ranking_metrics(*_hist(np.array([0.2, 0.9]), np.array([1, 1])), past_end=1.0)
    assert only_fake["auc"] is None and only_fake["eer"] is None
    assert only_fake["ap"] == pytest.approx(skm.average_precision_score([1, 1], [0.2, 0.9]))
    only_real = metrics.ranking_metrics(*_hist(np.array([0.2, 0.9]), np.array([0, 0])), past_end=1.0)
    assert only_real["auc"] is None and only_real["eer"] is None and only_real["ap"] is None
    assert only_real["accuracy_at_best"] == 1.0 and 0.9 < only_real["best_threshold"] <= 1.0
    empty = metrics.ranking_metrics(np.zeros(10), np.zeros(10), metrics.histogram_thresholds(10))
    assert all(v is None for v in empty.values())
    assert metrics.confusion_metrics([0, 0, 0, 0])["accuracy"] is None


def test_video_scores_keep_same_name_from_two_methods_apart():
    videos = metrics.VideoScores()
    ids = np.array(["000_003", "000_003", "000_003", b"000"], dtype=object)
    videos.add(ids, [1, 1, 2, 0], [1, 1, 1, 1], [1, 1, 1, 0], np.array([0.2, 0.6, 0.9, 0.1]), [True] * 4)
    methods, _, labels, scores = videos.aggregate("mean")
    assert len(videos) == 3
    assert sorted(zip(methods.tolist(), scores.tolist())) == [(0, 0.1), (1, 0.4), (2, 0.9)]
    assert sorted(videos.aggregate("max")[3].tolist()) == [0.1, 0.6, 0.9]
    other = metrics.VideoScores()
    other.merge_records(videos.to_records())
    other.merge_records([[1, 1, "000_003", 1, 1.0, 1, 1.0]])  # a frame seen by another host
    assert len(other) == 3 and max(other.aggregate("max")[3]) == 1.0
    with pytest.raises(ValueError, match="labelled both"):
        videos.add(["000"], [0], [1], [1], [0.5], [True])
