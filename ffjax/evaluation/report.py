"""From summed counts to the reported numbers: the breakdown table, JSON and Markdown.

The breakdown follows the FF++ benchmark: every metric overall, per manipulation method
(each method's fakes against ALL originals) and per compression level. The protocol that
produced the numbers travels with them into every output. `side_by_side` puts the overall
rows of several reports (in-domain and cross-dataset test sets) in one table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ffjax import paths
from ffjax.evaluation import metrics

# What write_report insists the caller states, beside what the evaluator knows itself.
REQUIRED_PROTOCOL_KEYS = ("frames_per_video", "crop_scale", "checkpoint_step")
# protocol['evaluation']: the training dataset's own test split, or a dataset never trained on.
EVALUATIONS = ("in-domain", "cross-dataset")


def _frame_block(frame, hist, sel, num_bins, calibrated_threshold):
    neg = hist[sel][:, 0].sum(0)
    pos = hist[sel][:, 1].sum(0)
    edges = metrics.histogram_thresholds(num_bins)
    out = metrics.confusion_metrics(frame[sel].sum(0))
    out.update(metrics.ranking_metrics(neg, pos, edges, past_end=1.0))
    if calibrated_threshold is not None:
        out["accuracy_calibrated"] = metrics.accuracy_at(neg, pos, edges, calibrated_threshold)
    return out


def _scores_block(arrays, sel, threshold, calibrated_threshold, ranking_keys=("auc", "eer", "ap")):
    """Exact metrics of the scored items (frames or videos) whose (method, compression) `sel` keeps."""
    methods, comps, labels, scores = arrays[:4]
    keep = sel[methods, comps] if len(methods) else np.zeros(0, bool)
    labels, scores = labels[keep], scores[keep]
    fake, pred = labels == 1, scores >= threshold
    counts = [np.sum(pred & fake), np.sum(pred & ~fake), np.sum(~pred & fake), np.sum(~pred & ~fake)]
    out = metrics.confusion_metrics(counts)
    neg, pos, thresholds = metrics.exact_counts(scores, labels)
    ranked = metrics.ranking_metrics(neg, pos, thresholds) if len(thresholds) else {}
    out.update({k: ranked.get(k) for k in ranking_keys})
    if calibrated_threshold is not None:
        out["accuracy_calibrated"] = (
            metrics.accuracy_at(neg, pos, thresholds, calibrated_threshold) if len(thresholds) else None
        )
    return out


_FRAME_RANKING = ("auc", "eer", "ap", "best_threshold", "accuracy_at_best")


def summarize(
    sums: Mapping[str, np.ndarray],
    videos: metrics.VideoScores | None,
    *,
    method_names: Sequence[str],
    compression_names: Sequence[str],
    threshold: float,
    num_bins: int,
    aggregation: str = "mean",
    calibrated_threshold: float | None = None,
    frames: metrics.FrameScores | None = None,
) -> dict[str, dict[str, dict]]:
    """Every metric overall, per method and per compression level, from the summed counts.

    The FF++ benchmark convention: a method's frame and video metrics pit that method's fakes
    against ALL originals of the same compression scope (so originals' false positives count
    in every method's accuracy); its pixel metrics cover only that method's frames. The
    ``all`` rows take every frame, originals included, so originals add false positive pixels.
    Groups without frames are left out, and so is the ``original`` row when there are no
    pixel counts (classifiers, datasets without masks): it is there for the originals' false
    positive pixels; its frame and video AUC, EER and AP are undefined (one class) and its
    accuracy is every row's ``accuracy_real``.

    Args:
      sums: host int64 counts ``frame`` [M, C, 4], ``hist`` [M, C, 2, bins], optional
        ``pixel`` [M, C, 4] and ``pixel_hist`` [M, C, 2, bins] (pixel AUC), as
        ``metrics.batch_sums`` makes them, added over batches.
      videos: per-video scores, or None to skip video-level metrics.
      method_names: M names, 'original' first; compression_names: C names.
      threshold: the decision threshold; num_bins: the histogram's bin count.
      aggregation: frame-to-video score aggregation, ``mean`` or ``max``.
      calibrated_threshold: a threshold chosen on validation (e.g. the validation result's
        ``best_threshold``); adds ``accuracy_calibrated``.
      frames: every frame's score (what the evaluator gives): frame AUC, EER, AP, the best
        threshold and calibrated accuracy are then exact, and pixel rows add per-image IoU
        and F1. Without it they come from the histogram in ``sums`` (resolution 1/num_bins:
        scores saturated near 1 share the top bin and the AUC counts them as ties).

    Returns:
      ``{scope: {method: {"frame": {...}, "video": {...}, "pixel": {...}}}}`` where scope is
      ``all`` or a compression name and method is ``all`` or a method name.
    """
    metrics.check_names(method_names, compression_names)
    frame, hist, pixel, pixel_hist = sums["frame"], sums["hist"], sums.get("pixel"), sums.get("pixel_hist")
    num_methods, num_comps = frame.shape[:2]
    if (num_methods, num_comps) != (len(method_names), len(compression_names)):
        raise ValueError(
            f"Counts have {num_methods} methods x {num_comps} compressions but "
            f"{len(method_names)} method and {len(compression_names)} compression names."
        )
    video_arrays = videos.aggregate(aggregation) if videos is not None else None
    frame_arrays = frames.arrays() if frames is not None else None
    frames = frame.sum(-1)
    scopes = [("all", np.ones(num_comps, bool))]
    scopes += [(c, np.arange(num_comps) == i) for i, c in enumerate(compression_names) if frames[:, i].sum()]
    out: dict[str, dict[str, dict]] = {}
    for scope, comp_sel in scopes:
        if not frames[:, comp_sel].sum():
            continue
        method_sets = [("all", np.ones(num_methods, bool), np.ones(num_methods, bool))]
        for m, name in enumerate(method_names):
            if frames[m, comp_sel].sum() and (m or pixel is not None):
                only = np.arange(num_methods) == m
                method_sets.append((name, only | (np.arange(num_methods) == 0), only))
        rows = {}
        for name, frame_methods, pixel_methods in method_sets:
            frame_sel = frame_methods[:, None] & comp_sel[None, :]
            if frame_arrays is not None:
                row = {"frame": _scores_block(frame_arrays, frame_sel, threshold, calibrated_threshold, _FRAME_RANKING)}
            else:
                row = {"frame": _frame_block(frame, hist, frame_sel, num_bins, calibrated_threshold)}
            if video_arrays is not None:
                row["video"] = _scores_block(video_arrays, frame_sel, threshold, calibrated_threshold)
            if pixel is not None:
                pixel_sel = pixel_methods[:, None] & comp_sel[None, :]
                row["pixel"] = metrics.pixel_metrics(pixel[pixel_sel].sum(0))
                if pixel_hist is not None:
                    neg, pos = pixel_hist[pixel_sel].sum(0)
                    edges = metrics.histogram_thresholds(len(neg))
                    row["pixel"]["auc"] = metrics.ranking_metrics(neg, pos, edges, past_end=1.0)["auc"]
                if frame_arrays is not None and frame_arrays[4] is not None:
                    m, c, *_, counts = frame_arrays
                    row["pixel"].update(metrics.per_image_pixel_metrics(counts[pixel_sel[m, c]] if len(m) else counts))
            rows[name] = row
        out[scope] = rows
    return out


class EvalResult:
    """Metrics of one evaluation with the protocol that produced them.

    Attributes:
      metrics: ``{scope: {method: {"frame"|"video"|"pixel": {name: value}}}}`` from
        ``summarize`` above; undefined values are None.
      protocol: how the numbers were made (split, threshold, aggregation, image size, ...).
      throughput: frames, seconds, compile_seconds, input_wait_seconds, frames_per_second.
      sums: the int64 counts the metrics came from (``frame``, ``hist``, ``pixel``); they
        add across evaluations of disjoint data. Not written to JSON.
    """

    def __init__(self, metrics_: dict, protocol: dict, throughput: dict, sums: dict | None = None):
        self.metrics = metrics_
        self.protocol = protocol
        self.throughput = throughput
        self.sums = sums

    @property
    def best_threshold(self) -> float | None:
        """The frame threshold with the best overall accuracy on this split (calibrate with
        the validation split's value, then pass it as ``calibrated_threshold`` on test)."""
        return self.metrics.get("all", {}).get("all", {}).get("frame", {}).get("best_threshold")

    def scalars(self) -> dict[str, float]:
        """Flat defined metrics for metric writers and best-checkpoint keeping.

        Overall metrics are ``frame/auc``, ``pixel/iou_fake``, ``video/accuracy``...; every
        breakdown row is ``<scope>/<method>/<block>/<name>`` (e.g. ``c23/Deepfakes/frame/auc``).
        """
        out = {}
        for scope, rows in self.metrics.items():
            for method, blocks in rows.items():
                prefix = "" if scope == method == "all" else f"{scope}/{method}/"
                for block, values in blocks.items():
                    for name, value in values.items():
                        if value is not None:
                            out[f"{prefix}{block}/{name}"] = float(value)
        return out

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "throughput": self.throughput, "metrics": self.metrics}

    def to_json(self, path):
        """Writes the result as standard JSON (undefined metrics are null); a gs:// URL works."""
        path = paths.path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    def to_markdown(self) -> str:
        """The protocol, then one table row per (scope, method)."""
        return _markdown(self.to_dict())


def write_report(result: EvalResult, workdir, split: str, protocol: Mapping[str, Any] | None = None,
                 name: str | None = None):
    """Writes ``eval_<name>.json`` and ``eval_<name>.md`` to the workdir and prints the table.

    Args:
      result: from ``Evaluator.evaluate``.
      workdir: output folder (created).
      split: the split evaluated (``val``, ``test``...).
      name: the files' name (default: the split; ``<dataset>_<split>`` for another dataset).
      protocol: protocol fields to add; with the result's own they must name
        ``frames_per_video``, ``crop_scale`` and ``checkpoint_step`` (None when unknown);
        an ``evaluation`` field must be one of ``EVALUATIONS``.

    Returns:
      (json_path, md_path). Only process 0 writes and prints.
    """
    merged = {"split": split, **result.protocol, **dict(protocol or {})}
    merged["split"] = split
    missing = [k for k in REQUIRED_PROTOCOL_KEYS if k not in merged]
    if missing:
        raise ValueError(
            f"The evaluation protocol lacks {missing}: pass them to write_report(protocol=...) "
            "or Evaluator.evaluate(protocol=...), None where unknown."
        )
    if "evaluation" in merged and merged["evaluation"] not in EVALUATIONS:
        raise ValueError(f"protocol['evaluation']={merged['evaluation']!r} must be one of {EVALUATIONS}.")
    report = EvalResult(result.metrics, merged, result.throughput, result.sums)
    workdir = paths.path(workdir)
    name = split if name is None else name
    json_path, md_path = workdir / f"eval_{name}.json", workdir / f"eval_{name}.md"
    if jax.process_index() == 0:
        report.to_json(json_path)
        table = report.to_markdown()
        md_path.write_text(table)
        print(table, flush=True)
    return json_path, md_path


def _fmt(value, percent: bool = True) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{100 * value:.2f}" if percent else f"{value:.4f}"
    return str(value)


# (header, block, key, as percent); AUC/EER/AP/accuracies in percent, thresholds as is.
_COLUMNS = (
    ("Acc", "frame", "accuracy", True),
    ("Acc@cal", "frame", "accuracy_calibrated", True),
    ("AUC", "frame", "auc", True),
    ("EER", "frame", "eer", True),
    ("AP", "frame", "ap", True),
    ("Oracle t", "frame", "best_threshold", False),
    ("Video Acc", "video", "accuracy", True),
    ("Video Acc@cal", "video", "accuracy_calibrated", True),
    ("Video AUC", "video", "auc", True),
    ("Video EER", "video", "eer", True),
    ("Video AP", "video", "ap", True),
    ("IoU", "pixel", "iou_fake", True),
    ("IoU/img", "pixel", "iou_fake_per_image", True),
    ("mIoU", "pixel", "iou_mean", True),
    ("F1", "pixel", "f1_fake", True),
    ("F1/img", "pixel", "f1_fake_per_image", True),
    ("Prec", "pixel", "precision_fake", True),
    ("Rec", "pixel", "recall_fake", True),
    ("Pix Acc", "pixel", "pixel_accuracy", True),
    ("Pix AUC", "pixel", "auc", True),
)


def _markdown(result: Mapping[str, Any]) -> str:
    protocol, speed, table = result["protocol"], result["throughput"], result["metrics"]
    rows = [(scope, method, blocks) for scope, by_method in table.items() for method, blocks in by_method.items()]
    # A column is shown when some row has it (no pixel columns for classifiers or datasets
    # without masks, no calibrated accuracy without a calibrated threshold).
    columns = [c for c in _COLUMNS if any(c[2] in blocks.get(c[1], {}) for _, _, blocks in rows)]
    shown = {(block, key) for _, block, key, _ in columns}
    with_videos = any("video" in blocks for _, _, blocks in rows)
    title = protocol.get("split", "?")
    if protocol.get("evaluation"):
        title += f" ({protocol['evaluation']})"
    lines = [f"# Evaluation: {title}", "", "| Protocol | Value |", "|---|---|"]
    lines += [f"| {k} | {v if isinstance(v, str) else json.dumps(v)} |" for k, v in protocol.items()]
    notes = [("Metrics in %, thresholds (Oracle t) as probabilities. A method's row pits its fakes "
              "against all originals of the scope")]
    if ("pixel", "iou_fake") in shown:
        notes[0] += ("; its pixel metrics cover only its own frames. IoU and F1 count every pixel "
                     "of the scope at once; IoU/img and F1/img average each manipulated frame's own.")
    else:
        notes[0] += "."
        if protocol.get("pixel_metrics") is False and protocol.get("task") == "segmentation":
            notes.append("No pixel metrics: this split has no ground-truth masks. Frame scores "
                         "still come from the model's mask prediction.")
    notes.append("Oracle t is the threshold best on this split itself, not a result.")
    if ("frame", "accuracy_calibrated") in shown:
        notes.append("Calibrated accuracies use the threshold validation chose for the checkpoint.")
    lines += [
        "",
        f"{speed['frames']} frames in {speed['seconds']:.1f} s: {speed['frames_per_second']:.1f} "
        f"frames/s after {speed['compile_seconds']:.1f} s of compilation "
        f"({speed['input_wait_seconds']:.1f} s waiting for input).",
        "",
        " ".join(notes),
        "",
        ("| Scope | Method | Frames real/fake | " + ("Videos real/fake | " if with_videos else "")
         + " | ".join(c[0] for c in columns) + " |"),
        "|---|---|---:|" + ("---:|" if with_videos else "") + "---:|" * len(columns),
    ]
    for scope, method, blocks in rows:
        frame, video = blocks["frame"], blocks.get("video", {})
        cells = [scope, method, f"{frame['num_real']}/{frame['num_fake']}"]
        if with_videos:
            cells.append(f"{video['num_real']}/{video['num_fake']}" if video else "n/a")
        cells += [_fmt(blocks.get(block, {}).get(key), pct) for _, block, key, pct in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# The side-by-side table: (header, block, key) of each report's overall row, in percent.
_SIDE_BY_SIDE = (
    ("Acc", "frame", "accuracy"),
    ("Acc@cal", "frame", "accuracy_calibrated"),
    ("AUC", "frame", "auc"),
    ("AP", "frame", "ap"),
    ("EER", "frame", "eer"),
    ("Video AUC", "video", "auc"),
    ("Video AP", "video", "ap"),
    ("Video EER", "video", "eer"),
    ("IoU", "pixel", "iou_fake"),
)


def _overall(name: str, report: Mapping[str, Any]) -> dict:
    """The defined overall metrics of one report, as ``{"frame": {...}, ...}`` plus counts."""
    try:
        row = report["metrics"]["all"]["all"]
    except (KeyError, TypeError):
        raise ValueError(f"side_by_side: report {name!r} has no metrics['all']['all'] row: pass the "
                         "dict of an eval_<split>.json (EvalResult.to_dict()).") from None
    out: dict[str, Any] = {}
    for _, block, key in _SIDE_BY_SIDE:
        value = row.get(block, {}).get(key)
        if value is not None:  # undefined, or a block the dataset has none of: left blank
            out.setdefault(block, {})[key] = value
    for block in ("frame", "video"):
        if block in row:
            out[f"num_{block}s"] = {"real": row[block]["num_real"], "fake": row[block]["num_fake"]}
    protocol = report.get("protocol", {})
    out["protocol"] = {k: protocol[k] for k in ("evaluation", "dataset", "split", "checkpoint_step") if k in protocol}
    return out


def side_by_side(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown row per report: its overall frame, video and pixel metrics side by side.

    Args:
      reports: ``{display name: report}``, a report being the dict of an ``eval_<split>.json``
        (``EvalResult.to_dict()``), e.g. ``{"FF++ c23 test (in-domain)": ..., "Celeb-DF v2
        test (cross-dataset)": ...}``, in the order the rows should have.

    Returns:
      Markdown: frame accuracy, AUC, AP and EER, video AUC, AP and EER, pixel IoU of the fake
      class, frames and videos (real/fake). A column is shown when some report has it; a
      report without it (no pixel masks, no calibrated threshold) has a blank cell.
    """
    if not reports:
        raise ValueError("side_by_side: no reports given.")
    rows = {name: _overall(name, report) for name, report in reports.items()}
    columns = [c for c in _SIDE_BY_SIDE if any(c[2] in r.get(c[1], {}) for r in rows.values())]
    lines = [
        "| Dataset | " + " | ".join(c[0] for c in columns) + " | Frames real/fake | Videos real/fake |",
        "|---|" + "---:|" * (len(columns) + 2),
    ]
    for name, row in rows.items():
        cells = [name.replace("|", "\\|")]
        cells += [_fmt(row[block][key]) if key in row.get(block, {}) else "" for _, block, key in columns]
        for count in ("num_frames", "num_videos"):
            cells.append(f"{row[count]['real']}/{row[count]['fake']}" if count in row else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_side_by_side(path_prefix, reports: Mapping[str, Mapping[str, Any]]):
    """Writes ``<path_prefix>.md`` (``side_by_side``) and ``<path_prefix>.json``.

    Args:
      path_prefix: the output path without suffix (its folder is created); a gs:// URL works.
      reports: ``{display name: report dict}`` as for ``side_by_side``.

    Returns:
      (json_path, md_path). The JSON is ``{display name: {"frame": {...}, "video": {...},
      "pixel": {...}, "num_frames": {"real", "fake"}, "num_videos": {...}, "protocol":
      {evaluation, dataset, split, checkpoint_step}}}`` with the defined metrics as fractions;
      a block or metric a report lacks is absent, never null. Only process 0 writes.
    """
    table = side_by_side(reports)
    rows = {name: _overall(name, report) for name, report in reports.items()}
    prefix = paths.path(path_prefix)
    json_path, md_path = prefix.parent / f"{prefix.name}.json", prefix.parent / f"{prefix.name}.md"
    if jax.process_index() == 0:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
        md_path.write_text(table)
    return json_path, md_path
