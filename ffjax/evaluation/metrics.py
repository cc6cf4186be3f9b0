"""Evaluation metrics kept as sums: device-side counting and host-side ratios.

Everything the evaluator reduces is a count: per-pixel confusion counts at the decision
threshold, per-frame confusion counts at the same threshold and a fixed-bin histogram of frame
scores, all grouped by (method, compression) and, for the histogram, by label. Counts add
across batches, devices and hosts; ratios are taken once, on the host, at the end.

Undefined metrics (a denominator of zero: one class absent, no frames in a group) are
``None``, never NaN, so the JSON report stays standard JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The evaluator's default breakdown is FF++'s: method_id and compression_id index these.
from ffjax.data.ffpp import COMPRESSION_NAMES, METHOD_NAMES  # noqa: F401 (the evaluator's defaults)

# Pixel-level AUC comes from a histogram of pixel probabilities with this many equal-width
# bins (pixels are far too many to keep; ties inside a bin count half, as for any histogram).
PIXEL_AUC_BINS = 100


def _confusion(pred: jax.Array, truth: jax.Array, axes) -> jax.Array:
    """Stacks (tp, fp, fn, tn) counted over `axes` as int32 along a new last axis."""
    tp = jnp.sum(pred & truth, axis=axes, dtype=jnp.int32)
    fp = jnp.sum(pred & ~truth, axis=axes, dtype=jnp.int32)
    fn = jnp.sum(~pred & truth, axis=axes, dtype=jnp.int32)
    tn = jnp.sum(~pred & ~truth, axis=axes, dtype=jnp.int32)
    return jnp.stack([tp, fp, fn, tn], axis=-1)


def batch_sums(
    *,
    scores: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    method_ids: jax.Array,
    compression_ids: jax.Array,
    threshold: float,
    num_bins: int,
    num_methods: int,
    num_compressions: int,
    pixel_probs: jax.Array | None = None,
    masks: jax.Array | None = None,
    replicated=None,
) -> dict[str, jax.Array]:
    """Counts of one batch, grouped by (method, compression); traceable under jit.

    Rows with ``valid == False`` (padding) add nothing to any count. A score or pixel
    probability equal to the threshold counts as fake.

    Args:
      scores: float [B] fake probability of each frame, in [0, 1].
      labels: int [B], 0 real, 1 fake.
      valid: bool [B], False on padding rows.
      method_ids: int [B] index into the method names.
      compression_ids: int [B] index into the compression names.
      threshold: decision threshold for frames and pixels.
      num_bins: number of equal-width histogram bins over [0, 1].
      num_methods: number of method groups M.
      num_compressions: number of compression groups C.
      pixel_probs: optional float [B, H, W] fake probability of each pixel.
      masks: optional [B, H, W] ground truth, nonzero = manipulated; needed with pixel_probs.
      replicated: the mesh's replicated NamedSharding when the batch is sharded on a mesh
        with explicit axes (the histogram contraction must be told its output sharding).

    Returns:
      ``frame`` int32 [M, C, 4] frame (tp, fp, fn, tn); ``hist`` int32 [M, C, 2, num_bins]
      score histogram per label; and with pixel inputs ``pixel`` int32 [M, C, 4] and
      ``pixel_hist`` int32 [M, C, 2, PIXEL_AUC_BINS] (pixel probabilities of real and
      manipulated pixels, for the pixel-level AUC).
    """
    if pixel_probs is not None and math.prod(pixel_probs.shape) >= 2**31:
        raise ValueError(
            f"Pixel counts of a {pixel_probs.shape} batch overflow int32: lower the eval batch size."
        )
    num_groups = num_methods * num_compressions
    valid_i = valid.astype(jnp.int32)
    group = method_ids.astype(jnp.int32) * num_compressions + compression_ids.astype(jnp.int32)
    # Ids out of range one-hot to zeros; the evaluator checks them on the host and fails loud.
    group_onehot = jax.nn.one_hot(group, num_groups, dtype=jnp.int32) * valid_i[:, None]
    is_fake = labels.astype(jnp.int32) == 1

    def grouped(per_example):  # [B, K] int32 -> [M, C, K]; an int sum stays exact
        summed = jnp.sum(group_onehot[:, :, None] * per_example[:, None, :], axis=0)
        return summed.reshape(num_methods, num_compressions, -1)

    out = {"frame": grouped(_confusion(scores >= threshold, is_fake, axes=()).astype(jnp.int32))}

    bins = jnp.clip(jnp.floor(scores * num_bins).astype(jnp.int32), 0, num_bins - 1)
    label_group = group * 2 + is_fake.astype(jnp.int32)
    # A [B, 2G] x [B, bins] contraction instead of a scatter-add: it partitions over a sharded
    # batch on any mesh, and float32 sums of 0/1 stay exact while B < 2**24.
    lhs = jax.nn.one_hot(label_group, 2 * num_groups, dtype=jnp.float32) * valid_i[:, None]
    rhs = jax.nn.one_hot(bins, num_bins, dtype=jnp.float32)
    hist = jnp.einsum(
        "bg,bn->gn",
        lhs,
        rhs,
        precision=jax.lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32,
        out_sharding=replicated,
    )
    out["hist"] = jnp.round(hist).astype(jnp.int32).reshape(
        num_methods, num_compressions, 2, num_bins
    )

    if pixel_probs is not None:
        if masks is None:
            raise ValueError("batch_sums: pixel_probs given without masks.")
        counts = _confusion(pixel_probs >= threshold, masks > 0, axes=(1, 2))
        out["pixel"] = grouped(counts)
        # Per image and bin: every pixel, and the manipulated ones (a compare-and-reduce that
        # XLA fuses; no [B, H, W, bins] array is made).
        k = PIXEL_AUC_BINS
        pixel_bins = jnp.clip(jnp.floor(pixel_probs * k).astype(jnp.int32), 0, k - 1)[..., None]
        in_bin = pixel_bins == jnp.arange(k, dtype=jnp.int32)
        every = jnp.sum(in_bin, axis=(1, 2), dtype=jnp.int32)
        fake = jnp.sum(in_bin & (masks > 0)[..., None], axis=(1, 2), dtype=jnp.int32)
        out["pixel_hist"] = grouped(jnp.concatenate([every - fake, fake], axis=-1)).reshape(
            num_methods, num_compressions, 2, k
        )
    return out


# ---------------------------------------------------------------------------------------
# Host side: ratios from counts.


def _ratio(num, den) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _mean2(a: float | None, b: float | None) -> float | None:
    # The mean of both classes is undefined when either class is: hiding that would report a
    # one-class number under a two-class name.
    return None if a is None or b is None else 0.5 * (a + b)


def pixel_metrics(counts: Sequence[int]) -> dict[str, float | None]:
    """Segmentation metrics from pixel counts.

    Args:
      counts: (tp, fp, fn, tn) with "positive" = manipulated pixel.

    Returns:
      IoU, F1, precision and recall of the fake class (``*_fake``) and their mean over the
      fake and real classes (``*_mean``), and ``pixel_accuracy``; None where undefined.
    """
    tp, fp, fn, tn = (int(c) for c in counts)
    out = {
        "iou_fake": _ratio(tp, tp + fp + fn),
        "iou_real": _ratio(tn, tn + fn + fp),
        "f1_fake": _ratio(2 * tp, 2 * tp + fp + fn),
        "f1_real": _ratio(2 * tn, 2 * tn + fn + fp),
        "precision_fake": _ratio(tp, tp + fp),
        "precision_real": _ratio(tn, tn + fn),
        "recall_fake": _ratio(tp, tp + fn),
        "recall_real": _ratio(tn, tn + fp),
    }
    for name in ("iou", "f1", "precision", "recall"):
        out[f"{name}_mean"] = _mean2(out[f"{name}_fake"], out[f"{name}_real"])
    out["pixel_accuracy"] = _ratio(tp + tn, tp + fp + fn + tn)
    return out


def confusion_metrics(counts: Sequence[int]) -> dict[str, float | int | None]:
    """Accuracy at the decision threshold from (tp, fp, fn, tn) of frames or videos.

    Returns:
      ``num_real``, ``num_fake``, ``accuracy``, ``accuracy_real`` (true negative rate) and
      ``accuracy_fake`` (true positive rate); None where undefined.
    """
    tp, fp, fn, tn = (int(c) for c in counts)
    return {
        "num_real": tn + fp,
        "num_fake": tp + fn,
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "accuracy_real": _ratio(tn, tn + fp),
        "accuracy_fake": _ratio(tp, tp + fn),
    }


def histogram_thresholds(num_bins: int) -> np.ndarray:
    """Lower edges of the equal-width bins over [0, 1]: the thresholds a histogram resolves."""
    return np.arange(num_bins, dtype=np.float64) / num_bins


def exact_counts(scores: np.ndarray, labels: np.ndarray):
    """Per-distinct-score counts, so ``ranking_metrics`` is exact on a small score set.

    Args:
      scores: float [N]; labels: int [N], 1 fake.

    Returns:
      (neg_counts, pos_counts, thresholds): counts per distinct score, ascending.
    """
    thresholds, inverse = np.unique(np.asarray(scores, np.float64), return_inverse=True)
    labels = np.asarray(labels).astype(bool)
    pos = np.bincount(inverse[labels], minlength=len(thresholds))
    neg = np.bincount(inverse[~labels], minlength=len(thresholds))
    return neg, pos, thresholds


def ranking_metrics(
    neg: np.ndarray, pos: np.ndarray, thresholds: np.ndarray, past_end: float | None = None
) -> dict:
    """AUC, EER, AP and the best-accuracy threshold from counts over ascending score bins.

    Scores inside one bin count as ties (AUC counts a tied pair as half), so on histogram
    counts the results approximate the exact values to within the share of pairs that fall
    into one bin; on ``exact_counts`` they are exact and match scikit-learn's definitions.

    Args:
      neg: [K] count of real samples per bin; pos: [K] count of fake samples per bin.
      thresholds: [K] ascending; bin k holds scores >= thresholds[k] (and below k + 1).
      past_end: the threshold that calls nothing fake (1.0 for a histogram over [0, 1]);
        default: the next float above the last threshold.

    Returns:
      ``auc``, ``eer`` (where false positive and false negative rates meet on the linearly
      interpolated ROC curve), ``ap`` (average precision, scikit-learn's step definition),
      ``best_threshold`` (score >= it is fake; the middle of the first run of thresholds
      that maximise accuracy) and ``accuracy_at_best``. AUC and EER need both classes, AP
      needs a fake, the rest any sample; else None.
    """
    neg = np.asarray(neg, np.int64)
    pos = np.asarray(pos, np.int64)
    num_neg, num_pos = int(neg.sum()), int(pos.sum())
    total = num_neg + num_pos
    # Predicting "fake" for bins >= k, for k = 0..K (k = K: nothing is fake).
    tp = np.concatenate([np.cumsum(pos[::-1])[::-1], [0]])
    fp = np.concatenate([np.cumsum(neg[::-1])[::-1], [0]])
    out: dict[str, float | None] = {"auc": None, "eer": None, "ap": None}
    if total:
        correct = tp + (num_neg - fp)
        # The middle of the first run of best thresholds, not its edge: the edge sits right
        # against a validation sample, so a test sample just past it flips.
        first = int(np.argmax(correct))
        last = first
        while last + 1 < len(correct) and correct[last + 1] == correct[first]:
            last += 1
        best = (first + last) // 2
        if past_end is None:
            past_end = float(np.nextafter(float(thresholds[-1]), np.inf))
        out["best_threshold"] = float(thresholds[best]) if best < len(thresholds) else past_end
        out["accuracy_at_best"] = float(correct[best]) / total
    else:
        out["best_threshold"] = out["accuracy_at_best"] = None
    if num_pos:
        has_pos = pos > 0
        precision = tp[:-1][has_pos] / (tp[:-1][has_pos] + fp[:-1][has_pos])
        out["ap"] = float(np.sum(pos[has_pos] * precision) / num_pos)
    if num_pos and num_neg:
        neg_below = np.cumsum(neg) - neg
        out["auc"] = float(np.sum(pos * (neg_below + 0.5 * neg))) / (num_pos * num_neg)
        # ROC points from the strictest threshold to the loosest; g rises from -1 to +1.
        fpr = fp[::-1] / num_neg
        tpr = tp[::-1] / num_pos
        g = fpr + tpr - 1.0
        i = int(np.argmax(g >= 0.0))
        if g[i] == 0.0 or i == 0:
            out["eer"] = float(fpr[i])
        else:
            frac = -g[i - 1] / (g[i] - g[i - 1])
            out["eer"] = float(fpr[i - 1] + frac * (fpr[i] - fpr[i - 1]))
    return out


def accuracy_at(neg: np.ndarray, pos: np.ndarray, thresholds: np.ndarray, t: float):
    """Accuracy when bins whose threshold is >= t are called fake; None without samples."""
    k = int(np.searchsorted(np.asarray(thresholds), t, side="left"))
    correct = int(np.sum(pos[k:])) + int(np.sum(neg[:k]))
    return _ratio(correct, int(np.sum(pos)) + int(np.sum(neg)))


def image_confusion(pixel_probs: jax.Array, masks: jax.Array, threshold: float) -> jax.Array:
    """Per-image pixel counts int32 [B, 4] (tp, fp, fn, tn): for per-image IoU/F1 on the host."""
    return _confusion(pixel_probs >= threshold, masks > 0, axes=(1, 2))


class FrameScores:
    """Every valid frame's method id, compression id, label, score and (for segmentation)
    pixel counts, so frame ranking metrics (AUC, EER, AP, thresholds) are exact and per-image
    pixel metrics can be averaged. A split of FF++ is tens of thousands of frames: small."""

    def __init__(self):
        self._rows: list[np.ndarray] = []  # [n, 4 or 8] float64: m, c, label, score[, tp, fp, fn, tn]

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows)

    def add(self, method_ids, compression_ids, labels, scores, valid, pixel_counts=None) -> None:
        """Adds the valid rows of one batch (host arrays of length B; pixel_counts [B, 4])."""
        keep = np.flatnonzero(np.asarray(valid))
        cols = [np.asarray(a)[keep].astype(np.float64) for a in (method_ids, compression_ids, labels, scores)]
        if pixel_counts is not None:
            cols += list(np.asarray(pixel_counts)[keep].astype(np.float64).T)
        self._rows.append(np.stack(cols, axis=1) if len(keep) else np.zeros((0, len(cols))))

    def to_records(self) -> list[list[float]]:
        """JSON-able rows (a float64 score and counts below 2**53 survive JSON exactly)."""
        return np.concatenate(self._rows).tolist() if self._rows else []

    def merge_records(self, records) -> None:
        """Adds the rows of `to_records` of other hosts."""
        if records:
            self._rows.append(np.asarray(records, np.float64))

    def arrays(self):
        """(method_ids, compression_ids, labels, scores, pixel_counts or None) as arrays."""
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, 4))
        ids = [rows[:, i].astype(np.int64) for i in range(3)]
        pixel = rows[:, 4:8].astype(np.int64) if rows.shape[1] == 8 else None
        return ids[0], ids[1], ids[2], rows[:, 3], pixel


def per_image_pixel_metrics(counts: np.ndarray) -> dict[str, float | int | None]:
    """Mean IoU and F1 of the fake class over images with manipulated pixels (what forgery
    localisation benchmarks report beside the dataset-global IoU).

    Args:
      counts: int [N, 4] (tp, fp, fn, tn) per image.

    Returns:
      ``iou_fake_per_image``, ``f1_fake_per_image`` (None without such images) and
      ``num_masked_images`` (images whose mask has at least one manipulated pixel).
    """
    counts = np.asarray(counts, np.float64).reshape(-1, 4)
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    masked = (tp + fn) > 0
    out: dict[str, float | int | None] = {"num_masked_images": int(masked.sum())}
    if not masked.any():
        return {**out, "iou_fake_per_image": None, "f1_fake_per_image": None}
    tp, fp, fn = tp[masked], fp[masked], fn[masked]
    out["iou_fake_per_image"] = float(np.mean(tp / (tp + fp + fn)))
    out["f1_fake_per_image"] = float(np.mean(2 * tp / (2 * tp + fp + fn)))
    return out


class VideoScores:
    """Per-video running sums of frame scores, keyed by (method id, compression id, video id).

    The method and compression ids are part of the key so that two videos whose ids collide
    (a bare name like ``000_003`` in two methods) stay separate even if the id string alone
    does not carry the method.
    """

    def __init__(self):
        # key -> [label, score_sum, frame_count, score_max]
        self._videos: dict[tuple[int, int, str], list] = {}

    def __len__(self) -> int:
        return len(self._videos)

    def add(self, video_ids, method_ids, compression_ids, labels, scores, valid) -> None:
        """Adds the valid rows of one batch (all arguments host arrays of length B)."""
        for i in np.flatnonzero(np.asarray(valid)):
            vid = video_ids[i]
            vid = vid.decode() if isinstance(vid, bytes) else str(vid)
            key = (int(method_ids[i]), int(compression_ids[i]), vid)
            label, score = int(labels[i]), float(scores[i])
            entry = self._videos.get(key)
            if entry is None:
                self._videos[key] = [label, score, 1, score]
                continue
            if entry[0] != label:
                raise ValueError(
                    f"Video {vid!r} has frames labelled both {entry[0]} and {label}: the "
                    "input pipeline mixes two videos under one video_id."
                )
            entry[1] += score
            entry[2] += 1
            entry[3] = max(entry[3], score)

    def to_records(self) -> list[list]:
        """The table as JSON-able rows [method_id, compression_id, video_id, label, sum, n, max]."""
        return [[*key, *entry] for key, entry in self._videos.items()]

    def merge_records(self, records) -> None:
        """Merges rows from ``to_records`` of another host (frames of a video may be split)."""
        for m, c, vid, label, total, count, top in records:
            entry = self._videos.setdefault((int(m), int(c), str(vid)), [int(label), 0.0, 0, -np.inf])
            if entry[0] != int(label):
                raise ValueError(f"Video {vid!r} has frames labelled both {entry[0]} and {label}.")
            entry[1] += float(total)
            entry[2] += int(count)
            entry[3] = max(entry[3], float(top))

    def aggregate(self, how: str = "mean"):
        """Video scores as arrays (method_ids, compression_ids, labels, scores).

        Args:
          how: ``mean`` (average frame score) or ``max`` (highest frame score).
        """
        if how not in ("mean", "max"):
            raise ValueError(f"video aggregation must be 'mean' or 'max', got {how!r}.")
        rows = list(self._videos.items())
        methods = np.array([k[0] for k, _ in rows], np.int64)
        comps = np.array([k[1] for k, _ in rows], np.int64)
        labels = np.array([e[0] for _, e in rows], np.int64)
        if how == "mean":
            scores = np.array([e[1] / e[2] for _, e in rows], np.float64)
        else:
            scores = np.array([e[3] for _, e in rows], np.float64)
        return methods, comps, labels, scores


def check_names(method_names: Sequence[str], compression_names: Sequence[str]) -> None:
    """Fails unless 'original' is method 0: the per-method breakdown pits fakes against it."""
    if not method_names or method_names[0] != "original":
        raise ValueError(
            f"method_names must start with 'original' (got {tuple(method_names)}): pass "
            "ffjax.data.ffpp.METHOD_NAMES."
        )
    if not compression_names:
        raise ValueError("compression_names is empty: pass ffjax.data.ffpp.COMPRESSION_NAMES.")


def as_host_sums(device_sums: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
    """Device counts as int64 numpy arrays, ready to add across batches without overflow."""
    return {k: np.asarray(v).astype(np.int64) for k, v in device_sums.items()}

