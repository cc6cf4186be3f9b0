"""The evaluator: one jitted step over the training mesh that returns counts.

It receives the function that runs the model (`predict_fn`, big_vision's way) and the task
that turns logits into scores, and never imports the trainer. The step returns sums (pixel and
frame confusion counts, a score histogram), never ratios, so they add across batches, devices
and hosts. Per-frame scores (and per-image pixel counts) come back too, sharded like the
batch: the host keeps them (a few numbers per frame) for exact frame ranking metrics, per-image
IoU/F1 and the per-video aggregation. The loop dispatches step i+1 before pulling step i's results, so the host's bookkeeping
and the next batch's input overlap with device compute.

Datasets without pixel masks (the cross-dataset test sets) are evaluated with
``pixel_metrics=False``: the mask stays on the host and the step counts no pixels, so the
report holds frame and video metrics only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ffjax import sharding, tasks
from ffjax.evaluation import metrics
from ffjax.evaluation.report import EVALUATIONS, EvalResult, summarize
from ffjax.platform import selection

_DEVICE_KEYS = ("image", "label", "valid", "method_id", "compression_id")
_HOST_KEYS = ("label", "valid", "method_id", "compression_id")
# The mask_source of a fake whose dataset ships no masks (the builders' process.MASK_UNAVAILABLE;
# evaluation does not import the builders): its all-zero mask is not a pixel label.
MASK_UNAVAILABLE = "unavailable"


class Evaluator:
    """Evaluates a model state on batches, compiled once per batch shape.

    Segmentation models and classifiers go through the same code: the frame score is
    ``task.frame_score(logits)``; a task with pixel outputs adds pixel counts.
    """

    def __init__(
        self,
        predict_fn: Callable,
        mesh: Mesh,
        *,
        task: tasks.Task,
        threshold: float = 0.5,
        num_bins: int = 1000,
        method_names=metrics.METHOD_NAMES,
        compression_names=metrics.COMPRESSION_NAMES,
        video_aggregation: str = "mean",
    ):
        """Builds the evaluator; nothing compiles until the first batch.

        Args:
          predict_fn: ``(state, images uint8 [B, H, W, 3]) -> logits``, traceable
            (`ffjax.state.predict_fn`).
          mesh: the training mesh, one axis ``data``.
          task: a `ffjax.tasks.Task`: frame scores, and pixel probabilities if it has them.
          threshold: pixel and frame decision threshold on fake probabilities.
          num_bins: bins of the frame-score histogram kept in the sums (the reported
            frame metrics are exact: they use every frame's score).
          method_names: ``ffjax.data.ffpp.METHOD_NAMES`` ('original' first).
          compression_names: ``ffjax.data.ffpp.COMPRESSION_NAMES``.
          video_aggregation: ``mean`` or ``max`` of frame scores per video.
        """
        if not isinstance(task, tasks.Task):
            raise TypeError(f"task={task!r}: pass a ffjax.tasks.Task (tasks.from_config(config)).")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold={threshold} must lie strictly between 0 and 1.")
        if int(num_bins) < 2:
            raise ValueError(f"num_bins={num_bins} must be at least 2.")
        if video_aggregation not in ("mean", "max"):
            raise ValueError(f"video_aggregation={video_aggregation!r} must be 'mean' or 'max'.")
        if "data" not in mesh.axis_names:
            raise ValueError(f"The mesh needs a 'data' axis; it has {mesh.axis_names}.")
        metrics.check_names(method_names, compression_names)
        self.predict_fn, self.mesh, self.task = predict_fn, mesh, task
        self.threshold, self.num_bins = float(threshold), int(num_bins)
        self.method_names, self.compression_names = tuple(method_names), tuple(compression_names)
        self.video_aggregation = video_aggregation
        self._data = NamedSharding(mesh, P("data"))
        self._replicated = NamedSharding(mesh, P())
        self._jitted = jax.jit(
            self._step,
            in_shardings=(self._replicated, self._data),
            out_shardings=(self._replicated, self._data),
            compiler_options=selection.compiler_options(mesh.devices.flat),
        )
        self._compiled: dict[Any, Any] = {}

    @property
    def num_compiled(self) -> int:
        """How many distinct (state, batch) shapes have been compiled so far."""
        return len(self._compiled)

    def _step(self, state, batch):
        logits = self.predict_fn(state, batch["image"])
        scores = self.task.frame_score(logits).astype(jnp.float32)
        pixel = {}
        # The batch carries a mask only when pixel metrics are on (`_keys`); the structure of
        # the batch is part of the compile key, so both kinds of split share one evaluator.
        if self.task.uses_masks and "mask" in batch:
            probs = self.task.pixel_probs(logits)
            if probs.shape != batch["mask"].shape:
                raise ValueError(
                    f"Pixel probabilities {probs.shape} do not match masks {batch['mask'].shape}: "
                    "the model must return [B, H, W, 1] at the input resolution."
                )
            pixel = dict(pixel_probs=probs, masks=batch["mask"])
        rows = {"score": scores}
        if pixel:
            rows["pixel"] = metrics.image_confusion(pixel["pixel_probs"], pixel["masks"], self.threshold)
        sums = metrics.batch_sums(
            scores=scores,
            labels=batch["label"],
            valid=batch["valid"],
            method_ids=batch["method_id"],
            compression_ids=batch["compression_id"],
            threshold=self.threshold,
            num_bins=self.num_bins,
            num_methods=len(self.method_names),
            num_compressions=len(self.compression_names),
            replicated=self._replicated,
            **pixel,
        )
        return sums, rows

    def _keys(self, pixel_metrics: bool) -> tuple[str, ...]:
        """The batch keys put on the device: the mask only when pixels are scored."""
        return _DEVICE_KEYS + (("mask",) if pixel_metrics and self.task.uses_masks else ())

    def _put(self, batch: Mapping[str, Any], pad_to: int | None, keys: tuple[str, ...]):
        """Device batch (global, sharded on ``data``) and this host's id/validity columns."""
        missing = [k for k in keys if k not in batch]
        if missing:
            raise ValueError(f"Evaluation batch lacks {missing}; it has {sorted(batch)}.")
        lengths = {k: len(batch[k]) for k in keys}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"Evaluation batch arrays disagree on the number of rows: {lengths}.")
        device, host = {}, {}
        for key in keys:
            value = batch[key]
            if isinstance(value, jax.Array):
                if not value.sharding.is_equivalent_to(self._data, value.ndim):
                    value = jax.device_put(value, self._data)
                device[key], rows = value, value.shape[0]
                if key in _HOST_KEYS:
                    host[key] = sharding.local_rows(value)
                continue
            value = np.asarray(value)
            if pad_to is not None and len(value) < pad_to:
                # A short last batch would change the shape (a recompile) and might not divide
                # over the devices: pad it with rows that valid=False keeps out of every sum.
                pad = np.zeros((pad_to - len(value),) + value.shape[1:], value.dtype)
                value = np.concatenate([value, pad])
            device[key], rows = value, len(value) * jax.process_count()
            if key in _HOST_KEYS:
                host[key] = value
        if rows % self.mesh.devices.size:
            raise ValueError(
                f"Evaluation batch of {rows} rows does not divide over {self.mesh.devices.size} "
                "devices: make the eval batch size a multiple of the device count."
            )
        self._check_ids(host)
        for key, value in device.items():
            if not isinstance(value, jax.Array):
                device[key] = jax.make_array_from_process_local_data(self._data, value)
        return device, host

    def _check_ids(self, host: Mapping[str, np.ndarray]) -> None:
        valid = host["valid"].astype(bool)
        checks = (
            ("method_id", len(self.method_names), "method_names"),
            ("compression_id", len(self.compression_names), "compression_names"),
            ("label", 2, "labels (0 real, 1 fake)"),
        )
        for key, limit, what in checks:
            bad = host[key][valid]
            bad = bad[(bad < 0) | (bad >= limit)]
            if bad.size:
                raise ValueError(f"Batch {key} values {sorted(set(bad.tolist()))} are outside the {limit} {what}.")

    def _compiled_step(self, state, batch):
        key = jax.tree.map(lambda x: (x.shape, x.dtype), (state, batch))
        key = (jax.tree.structure(key), tuple(jax.tree.leaves(key)))
        if key not in self._compiled:
            self._compiled[key] = self._jitted.lower(state, batch).compile()
        return self._compiled[key]

    def evaluate(
        self,
        state,
        batches: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]],
        *,
        calibrated_threshold: float | None = None,
        protocol: Mapping[str, Any] | None = None,
        pixel_metrics: bool = True,
        evaluation: str = "in-domain",
    ) -> EvalResult:
        """Runs the model over every batch once and computes all metrics.

        Args:
          state: what ``predict_fn`` takes as its first argument (model parameters and
            statistics), any placement; it is replicated on the mesh here.
          batches: ``(batch, meta)`` pairs: the batch dict of the architecture contract
            (numpy rows of this process, or global arrays sharded on ``data``) and host
            metadata with ``video_id`` (str or bytes per local row; ``method/compression/
            name``). A short numpy last batch is padded here with valid=False rows.
          calibrated_threshold: threshold chosen on validation; adds ``accuracy_calibrated``.
          protocol: caller-known protocol fields (split, frames_per_video, crop_scale,
            checkpoint_step, ...) stored with the result.
          pixel_metrics: score pixels against the batch's ``mask``. False for datasets
            without pixel masks (Celeb-DF, DFDC: the builder's manifest says
            ``pixel_masks: false``): the mask is neither required nor put on the device, and
            the result has frame and video metrics only. A segmentation model's frame score
            still comes from its mask prediction. With True, a fake whose ``meta
            ['mask_source']`` is ``unavailable`` is an error.
          evaluation: ``in-domain`` (the test split of the training dataset) or
            ``cross-dataset`` (a dataset never trained on); stored as ``protocol
            ['evaluation']`` (a ``protocol['evaluation']`` given in ``protocol`` wins).

        Returns:
          The EvalResult. Raises ValueError if no valid frame was seen.
        """
        if evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation={evaluation!r} must be one of {EVALUATIONS}.")
        pixel_metrics = bool(pixel_metrics) and self.task.uses_masks
        keys = self._keys(pixel_metrics)
        state = jax.device_put(state, self._replicated)
        totals: dict[str, np.ndarray] = {}
        videos = metrics.VideoScores()
        frame_scores = metrics.FrameScores()
        mask_sources: dict[str, dict[str, int]] = {}
        compile_s = wait_s = 0.0
        image_size = None
        pending = None
        pad_to = None
        start = time.perf_counter()
        iterator = iter(batches)
        while True:
            tick = time.perf_counter()
            item = next(iterator, None)
            wait_s += time.perf_counter() - tick
            if item is not None:
                batch, meta = item
                if "video_id" not in meta:
                    raise ValueError(f"Evaluation metadata lacks 'video_id'; it has {sorted(meta)}.")
                device, host = self._put(batch, pad_to, keys)
                pad_to = pad_to or len(host["valid"])
                image_size = tuple(device["image"].shape[1:3])
                tick = time.perf_counter()
                step = self._compiled_step(state, device)
                compile_s += time.perf_counter() - tick
                outputs = step(state, device)  # dispatched; runs while the previous batch is read back
            if pending is not None:
                self._absorb(totals, videos, frame_scores, mask_sources, pixel_metrics, *pending)
            if item is None:
                break
            pending = (outputs, host, meta)
        if jax.process_count() > 1:
            merged = metrics.VideoScores()
            merged.merge_records(sharding.allgather_json(videos.to_records()))
            videos = merged
            everyone = metrics.FrameScores()
            everyone.merge_records(sharding.allgather_json(frame_scores.to_records()))
            frame_scores = everyone
            mask_sources = _merge_counts(sharding.allgather_json([mask_sources]))
        seconds = time.perf_counter() - start
        frames = int(totals["frame"].sum()) if totals else 0
        if not frames:
            raise ValueError("Evaluation saw no valid frame: the split is empty or every row is padding.")
        result_metrics = summarize(
            totals,
            videos,
            method_names=self.method_names,
            compression_names=self.compression_names,
            threshold=self.threshold,
            num_bins=self.num_bins,
            aggregation=self.video_aggregation,
            calibrated_threshold=calibrated_threshold,
            frames=frame_scores,
        )
        full_protocol = {
            "evaluation": evaluation,
            "task": self.task.name,
            "threshold": self.threshold,
            "calibrated_threshold": calibrated_threshold,
            "video_aggregation": self.video_aggregation,
            "frame_score": self.task.frame_score_rule,
            "frame_metrics": "exact: AUC, EER, AP and thresholds over every frame's score",
            "pixel_metrics": pixel_metrics,
        }
        if pixel_metrics:
            full_protocol["pixel_auc"] = f"from a {metrics.PIXEL_AUC_BINS}-bin histogram of pixel probabilities"
            # Which masks each method's fake frames were scored against (shipped or derived).
            full_protocol["mask_sources"] = {k: mask_sources[k] for k in sorted(mask_sources)}
        full_protocol.update({
            "image_size": list(image_size),
            "num_frames": frames,
            "num_videos": len(videos),
            "devices": int(self.mesh.devices.size),
            **dict(protocol or {}),
        })
        if full_protocol["evaluation"] not in EVALUATIONS:
            raise ValueError(f"protocol['evaluation']={full_protocol['evaluation']!r} must be one of {EVALUATIONS}.")
        run_s = max(seconds - compile_s, 1e-9)
        throughput = {
            "frames": frames,
            "seconds": seconds,
            "compile_seconds": compile_s,
            "input_wait_seconds": wait_s,
            "frames_per_second": frames / run_s,
        }
        return EvalResult(result_metrics, full_protocol, throughput, totals)

    def _absorb(self, totals, videos, frame_scores, mask_sources, pixel_metrics, outputs, host, meta) -> None:
        sums, rows = outputs
        for key, value in metrics.as_host_sums(sums).items():
            totals[key] = totals[key] + value if key in totals else value
        scores = sharding.local_rows(rows["score"])
        pixel_counts = sharding.local_rows(rows["pixel"]) if "pixel" in rows else None
        valid = host["valid"].astype(bool)
        if not np.all(np.isfinite(scores[valid])):
            raise FloatingPointError("The model produced non-finite frame scores on valid frames.")
        video_ids = list(meta["video_id"])
        if len(video_ids) < int(np.flatnonzero(valid).max(initial=-1)) + 1:
            raise ValueError(
                f"meta['video_id'] has {len(video_ids)} entries for a batch with valid rows up to "
                f"{int(np.flatnonzero(valid).max()) + 1}: give one id per local row."
            )
        video_ids += [""] * (len(valid) - len(video_ids))
        videos.add(video_ids, host["method_id"], host["compression_id"], host["label"], scores, valid)
        frame_scores.add(host["method_id"], host["compression_id"], host["label"], scores, valid, pixel_counts)
        if "mask_source" in meta and pixel_metrics:
            for i in np.flatnonzero(valid & (host["label"] == 1)):
                method = self.method_names[int(host["method_id"][i])]
                source = str(meta["mask_source"][i])
                if source == MASK_UNAVAILABLE:
                    # Its all-zero mask would score every predicted pixel a false positive.
                    raise ValueError(
                        f"A {method} fake (video {meta['video_id'][i]!r}) has mask_source "
                        f"{MASK_UNAVAILABLE!r}: its dataset ships no pixel masks; evaluate it with "
                        "pixel_metrics=False."
                    )
                mask_sources.setdefault(method, {}).setdefault(source, 0)
                mask_sources[method][source] += 1


def _merge_counts(tables: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Sums `{method: {source: count}}` tables of several processes."""
    out: dict[str, dict[str, int]] = {}
    for table in tables:
        for method, counts in table.items():
            for source, n in counts.items():
                out.setdefault(method, {}).setdefault(source, 0)
                out[method][source] += int(n)
    return out
