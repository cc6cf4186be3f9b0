r"""`ffjax predict`: localise manipulated pixels in your own video, folder of frames or image.

  ffjax predict --workdir RUN_DIR [--checkpoint best|latest|N] --input video.mp4|frames_dir|image.png \
      --output OUT_DIR [--every_n_frames K]

Every sampled frame goes through dlib's frontal face detector (the one FF++'s official code
uses), each face is cropped exactly as the dataset builder crops (square, 1.3x the longer box
side, centred, clamped, resized), and the crops run through the checkpoint's model in fixed
size batches sharded over the device mesh, compiled once, as in evaluation. Written to OUT_DIR:
`<name>_overlay.*` (the input with the predicted mask as a heatmap and the scores),
`<name>_prediction.json` (boxes and scores per frame, the video score and how it was made) and
`<name>_preview.png` (the most suspicious frame). The model is rebuilt from the config stored in
the checkpoint, so the run directory alone is enough.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import time
from pathlib import Path

import cv2
import jax
import numpy as np
from etils import epath

from ffjax import configs, paths, sharding, state as state_lib
from ffjax.data import crops, faces as faces_lib
from ffjax.inference import media, overlay
from ffjax.inference.loading import LoadedModel, crop_settings, load_model
from ffjax.platform import selection

# The builder's detector setting (ffjax.data.faces): one setting for training crops and here.
DEFAULT_UPSAMPLE = faces_lib.UPSAMPLE
# Frames larger than this (longer side, px) are downscaled before detection, cropping and
# drawing: an 8000x8000 photo peaked at 3.4 GB and wrote a 189 MB overlay at full size.
MAX_FRAME_SIDE = 3840


# ----------------------------------------------------------------------------- prediction


@dataclasses.dataclass
class _Face:
    box: tuple[int, int, int, int]
    crop_box: tuple[int, int, int, int]
    window: tuple[int, int, int, int]
    score: float | None = None
    probs: np.ndarray | None = None


@dataclasses.dataclass
class _Frame:
    index: int
    name: str
    rgb: np.ndarray
    faces: list[_Face]
    waiting: int = 0  # faces whose batch has not come back yet


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What `Predictor.predict` wrote.

    Attributes:
      record: the JSON record (also in `json_path`).
      verdict: the one-line verdict for the console.
      json_path: `<name>_prediction.json`.
      overlay_path: the annotated copy (`.mp4`, a folder of PNGs, or a `.png`).
      preview_path: the most suspicious annotated frame as a PNG.
    (Paths in the bucket, as `epath.Path`, for a gs:// output folder.)
    """

    record: dict
    verdict: str
    json_path: Path | epath.Path
    overlay_path: Path | epath.Path
    preview_path: Path | epath.Path


class Predictor:
    """Detects, crops and scores faces with a loaded model; compiled once per batch size."""

    def __init__(self, model: LoadedModel, *, batch_size: int | None = None, image_size: int | None = None,
                 crop_scale: float | None = None, upsample: int = DEFAULT_UPSAMPLE, threshold: float | None = None,
                 keyframe_every: int = faces_lib.KEYFRAME_EVERY):
        """Compiles the model's forward pass for fixed-size batches of face crops.

        Args:
          model: from `ffjax.inference.load_model`.
          batch_size: crops per step, a multiple of the device count (default: the config's
            eval_batch_size); the last batch is padded.
          image_size: crop side; default from the training dataset (see `crop_settings`).
          crop_scale: crop side / face box side; default from the training dataset.
          upsample: dlib upsampling passes (0 is faster, misses faces under ~80 px).
          keyframe_every: on videos and frame folders, full-frame detection every this many
            sampled frames and whenever a face is lost; known faces are re-detected near
            where they were in between (`ffjax.data.faces.FaceTracker`); 1: every frame.
          threshold: fake decision threshold; default the config's `threshold`.
        """
        config = model.config
        self.model = model
        self.image_size, self.crop_scale, self.crop_from = crop_settings(config, image_size, crop_scale, model.dataset_build)
        self.batch_size = int(config.eval_batch_size if batch_size is None else batch_size)
        sharding.check_batch_size(self.batch_size, model.mesh, "--batch_size")
        self.threshold = float(config.threshold if threshold is None else threshold)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"--threshold={self.threshold} must lie strictly between 0 and 1.")
        if upsample < 0:
            raise ValueError(f"--upsample={upsample} must be >= 0.")
        self.upsample = int(upsample)
        if keyframe_every < 1:
            raise ValueError(f"--keyframe_every={keyframe_every} must be >= 1.")
        self.keyframe_every = int(keyframe_every)
        self.aggregation = config.get("video_aggregation", "mean")
        task, logits_fn = model.task, state_lib.predict_fn(model.graphdef, model.task)

        def forward(state, images):
            logits = logits_fn(state, images)
            out = {"score": task.frame_score(logits)}
            probs = task.pixel_probs(logits)
            if probs is not None:
                out["probs"] = probs
            return out

        self._data = sharding.data_sharded(model.mesh)
        jitted = jax.jit(
            forward, in_shardings=(sharding.replicated(model.mesh), self._data), out_shardings=self._data,
            compiler_options=selection.compiler_options(model.mesh.devices.flat),
        )
        images = jax.ShapeDtypeStruct((self.batch_size, self.image_size, self.image_size, 3), np.uint8, sharding=self._data)
        tick = time.perf_counter()
        self._step = jitted.lower(model.state, images).compile()
        self.compile_seconds = time.perf_counter() - tick

    def predict(self, input_path, output_dir, *, every_n_frames: int = 1, max_frames: int | None = None) -> Prediction:
        """Scores every sampled frame of a video, folder of frames or image, and writes the outputs.

        Frames where no face is found are kept (recorded, drawn and counted as such). A
        frame's score is the highest of its faces' scores; the video's is the config's
        `video_aggregation` (mean or max) over the frames with a face.

        Args:
          input_path: the video, folder of frame images, or image.
          output_dir: folder (or gs:// URL) for `<name>_overlay.*`, `<name>_prediction.json`,
            `<name>_preview.png`.
          every_n_frames: score frames 0, K, 2K, ...
          max_frames: stop after this many sampled frames.

        Returns:
          The `Prediction`.
        """
        media.check_sampling(every_n_frames, max_frames)
        source = media.open_source(input_path)
        # A gs:// --output: written locally (OpenCV's writer needs a file), uploaded at the end.
        with paths.Staging(output_dir) as staging:
            return self._predict(source, staging, every_n_frames, max_frames)

    def _predict(self, source: media.Source, staging: paths.Staging, every_n_frames: int, max_frames: int | None) -> Prediction:
        out = staging.local
        stem = source.path.name if source.kind == "frames" else source.path.stem
        if source.kind == "video":
            sink = media.VideoSink(out / f"{stem}_overlay.mp4", source.fps / every_n_frames)
        elif source.kind == "frames":
            sink = media.FolderSink(out / f"{stem}_overlay")
        else:
            sink = media.ImageSink(out / f"{stem}_overlay.png")
        start = time.perf_counter()
        timers = collections.Counter()
        entries: list[dict] = []
        pending: collections.deque[_Frame] = collections.deque()
        inflight: collections.deque = collections.deque()
        batch: list[np.ndarray] = []
        refs: list[tuple[_Frame, int]] = []
        preview: list = [None, -1.0]  # annotated frame, its score

        def dispatch():
            images = np.zeros((self.batch_size, self.image_size, self.image_size, 3), np.uint8)
            images[: len(batch)] = np.stack(batch)
            # Asynchronous: the host detects faces in the next frames while this runs.
            inflight.append((self._step(self.model.state, jax.device_put(images, self._data)), list(refs)))
            batch.clear()
            refs.clear()

        def resolve():
            outputs, rows = inflight.popleft()
            tick = time.perf_counter()
            host = jax.device_get(outputs)
            timers["model_wait"] += time.perf_counter() - tick
            for k, (frame, j) in enumerate(rows):
                frame.faces[j].score = float(host["score"][k])
                frame.faces[j].probs = host["probs"][k] if "probs" in host else None
                frame.waiting -= 1

        def emit(frame: _Frame):
            tick = time.perf_counter()
            image = frame.rgb
            for face in frame.faces:
                if face.probs is not None:
                    image = overlay.paste_heatmap(image, face.probs, face.window)
            score = max((f.score for f in frame.faces), default=None)
            header = "" if source.kind == "image" else f"frame {frame.index}  "
            image = overlay.annotate(image, [(f.box, f.score) for f in frame.faces], score, self.threshold, header)
            sink.write(image, frame.name)
            if preview[0] is None or (score is not None and score > preview[1]):
                preview[:] = [image, -1.0 if score is None else score]
            entries.append(self._frame_entry(frame, score, source.kind))
            timers["write"] += time.perf_counter() - tick

        tracker = faces_lib.FaceTracker(self.keyframe_every if source.kind != "image" else 1, self.upsample)
        unreadable: list = []
        downscaled: list = []
        frames_iter = iter(media.iter_frames(source, every_n_frames, max_frames, skipped=unreadable))
        try:
            while True:
                tick = time.perf_counter()
                item = next(frames_iter, None)
                timers["decode"] += time.perf_counter() - tick
                if item is None:
                    break
                index, name, rgb = item
                original_size = rgb.shape[1::-1]
                if max(rgb.shape[:2]) > MAX_FRAME_SIDE:
                    # An 8000 px photo: detection, crops and overlay work on a copy whose
                    # longer side is MAX_FRAME_SIDE (a face there still has far more pixels
                    # than its crop), so memory and the overlay file stay bounded.
                    scale = MAX_FRAME_SIDE / max(rgb.shape[:2])
                    rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
                    downscaled.append({"frame": name, "from": list(original_size), "to": list(rgb.shape[1::-1])})
                tick = time.perf_counter()
                found = tracker(rgb)
                timers["detect"] += time.perf_counter() - tick
                tick = time.perf_counter()
                frame = _Frame(index, name, rgb, [])
                for box in found:
                    crop = crops.crop_face(rgb, None, box, self.crop_scale, self.image_size)
                    frame.faces.append(_Face(tuple(box), crop.crop_box, crop.clamped_box))
                    batch.append(crop.image)
                    refs.append((frame, len(frame.faces) - 1))
                    frame.waiting += 1
                    if len(batch) == self.batch_size:
                        dispatch()
                pending.append(frame)
                timers["crop"] += time.perf_counter() - tick
                # Frames wait for their batch; a padded batch goes early so they never pile up.
                if batch and len(pending) >= self.batch_size:
                    dispatch()
                while len(inflight) > 1:
                    resolve()
                while pending and pending[0].waiting == 0:
                    emit(pending.popleft())
            if batch:
                dispatch()
            while inflight:
                resolve()
            while pending:
                emit(pending.popleft())
        finally:
            sink.close()
        if not entries:
            why = f" ({'; '.join(f'{n}: {r}' for n, r in unreadable[:5])})" if unreadable else ""
            raise ValueError(f"--input {source.path}: no frame could be decoded{why}.")
        seconds = time.perf_counter() - start
        preview_path = sink.path if source.kind == "image" else media.write_image(out / f"{stem}_preview.png", preview[0])
        record = self._record(source, entries, every_n_frames, max_frames, seconds, timers)
        record["skipped"] = [{"file": n, "reason": r} for n, r in list(source.skipped) + unreadable]
        record["downscaled"] = downscaled
        overlay_path, preview_path = staging.final(sink.path), staging.final(preview_path)
        record["outputs"] = {"overlay": str(overlay_path), "preview": str(preview_path)}
        json_path = out / f"{stem}_prediction.json"
        json_path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
        return Prediction(record, _verdict(record), staging.final(json_path), overlay_path, preview_path)

    def _frame_entry(self, frame: _Frame, score: float | None, kind: str) -> dict:
        faces = []
        for f in frame.faces:
            face = {"box": list(f.box), "crop_box": list(f.crop_box), "crop_window": list(f.window), "score": f.score}
            if f.probs is not None:
                face["fake_pixel_fraction"] = float(np.mean(f.probs >= self.threshold))
            faces.append(face)
        return {"frame_index": frame.index, "name": frame.name, "face_found": bool(faces), "score": score, "faces": faces}

    def _record(self, source: media.Source, entries: list[dict], every_n_frames, max_frames, seconds: float, timers) -> dict:
        cfg = self.model.config
        scored = [e["score"] for e in entries if e["score"] is not None]
        if scored:
            video_score = float(np.mean(scored) if self.aggregation == "mean" else np.max(scored))
            verdict = "fake" if video_score >= self.threshold else "real"
        else:
            video_score, verdict = None, "no_face"
        frame_rule = f"{self.model.task.frame_score_rule} of a face crop"
        run_seconds = max(seconds, 1e-9)
        return {
            "input": str(source.path),
            "kind": source.kind,
            "checkpoint": {"folder": str(self.model.folder), "step": self.model.step, "model": cfg.model, "task": self.model.task.name},
            "protocol": {
                "face_detector": f"dlib frontal HOG, upsample={self.upsample}, full-frame every "
                                 f"{self.keyframe_every} sampled frames, tracked in between",
                "image_size": self.image_size,
                "crop_scale": self.crop_scale,
                "crop_settings_from": self.crop_from,
                "every_n_frames": every_n_frames,
                "max_frames": max_frames,
                "face_score": frame_rule,
                "frame_score": "highest face score of the frame; null when no face is found",
                "threshold": self.threshold,
                "trained_on_generated_data": bool(self.model.dataset_build.get("generated_data")),
            },
            "frames": entries,
            "video": {
                "score": video_score,
                "aggregation": f"{self.aggregation} of the scores of frames with a face",
                "verdict": verdict,
                "frames_sampled": len(entries),
                "frames_with_face": len(scored),
                "faces": sum(len(e["faces"]) for e in entries),
            },
            "throughput": {
                "seconds": seconds,
                "frames_per_second": len(entries) / run_seconds,
                "compile_seconds": self.compile_seconds,
                "decode_seconds": timers["decode"],
                "detect_seconds": timers["detect"],
                "crop_seconds": timers["crop"],
                "model_wait_seconds": timers["model_wait"],
                "draw_write_seconds": timers["write"],
                "batch_size": self.batch_size,
            },
        }


GENERATED_WARNING = (
    "WARNING: this checkpoint was trained on generated data (ffjax.testing), not on FF++: its scores "
    "on real videos mean nothing."
)


def _verdict(record: dict) -> str:
    lines = [_verdict_line(record)]
    if record.get("skipped"):
        lines.append(f"  skipped {len(record['skipped'])} file(s) of the folder: "
                     + "; ".join(f"{s['file']} ({s['reason']})" for s in record["skipped"][:3])
                     + (" ..." if len(record["skipped"]) > 3 else "") + " (all in the JSON)")
    if record["protocol"].get("trained_on_generated_data"):
        lines.insert(0, GENERATED_WARNING)
    return "\n".join(lines)


def _verdict_line(record: dict) -> str:
    video, name = record["video"], Path(record["input"]).name
    what = "image" if record["kind"] == "image" else "video"
    fps = record["throughput"]["frames_per_second"]
    if video["verdict"] == "no_face":
        return f"NO FACE  {name}: no face found in any of {video['frames_sampled']} sampled frames ({fps:.1f} frames/s)"
    return (
        f"{video['verdict'].upper():<8} {name}: {what} score {video['score']:.3f} ({video['aggregation']}; "
        f"threshold {record['protocol']['threshold']:.2f}), faces in {video['frames_with_face']}/{video['frames_sampled']} "
        f"sampled frames, {fps:.1f} frames/s"
    )


def predict(workdir, input_path, output_dir, *, checkpoint: str = "latest", every_n_frames: int = 1,
            max_frames: int | None = None, config=None, **options) -> Prediction:
    """Loads a checkpoint and predicts on one input.

    Args:
      workdir: the training run directory.
      input_path: a video, a folder of frame images, or an image.
      output_dir: where the outputs go.
      checkpoint: 'latest', 'best' or a step number.
      every_n_frames: score frames 0, K, 2K, ...
      max_frames: stop after this many sampled frames.
      config: build the model from this config instead of the checkpoint's.
      **options: `Predictor` options (batch_size, image_size, crop_scale, upsample, threshold,
        keyframe_every).

    Returns:
      The `Prediction` (its JSON record and the paths written).
    """
    # Bad input fails before the model is loaded and compiled.
    media.check_sampling(every_n_frames, max_frames)
    media.open_source(input_path)
    for name in ("batch_size", "image_size"):
        if options.get(name) is not None and int(options[name]) < 1:
            raise ValueError(f"--{name}={options[name]} must be >= 1 (leave it out for the default).")
    if paths.is_url(output_dir):
        paths.resolve(output_dir)  # gcsfs installed, a supported scheme: before the model loads
    elif Path(output_dir).expanduser().exists() and not Path(output_dir).expanduser().is_dir():
        raise ValueError(f"--output {output_dir} is a file; give a folder (it is created if missing).")
    model = load_model(workdir, checkpoint, config)
    return Predictor(model, **options).predict(input_path, output_dir, every_n_frames=every_n_frames, max_frames=max_frames)


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=argv[0] if argv else "ffjax predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="training run directory (checkpoints/, best/)")
    parser.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step number")
    parser.add_argument("--input", required=True, help="a video, a folder of frame images, or an image")
    parser.add_argument("--output", required=True, help="folder (or gs:// URL) for the overlay, the JSON and the preview")
    parser.add_argument("--every_n_frames", type=int, default=1, help="score every K-th frame (default 1: all)")
    parser.add_argument("--max_frames", type=int, default=None, help="stop after this many sampled frames")
    parser.add_argument("--batch_size", type=int, default=None, help="face crops per step (default: the config's eval_batch_size)")
    parser.add_argument("--image_size", type=int, default=None, help="crop side (default: read from the training dataset)")
    parser.add_argument("--crop_scale", type=float, default=None, help="crop side / face box side (default: from the dataset)")
    parser.add_argument("--upsample", type=int, default=DEFAULT_UPSAMPLE, help="dlib upsampling: finds smaller faces, slower (default 1)")
    parser.add_argument("--keyframe_every", type=int, default=faces_lib.KEYFRAME_EVERY,
                        help="full-frame face detection every K sampled frames, faces tracked in between (1: every frame)")
    parser.add_argument("--threshold", type=float, default=None, help="fake decision threshold (default: the config's threshold)")
    parser.add_argument("--config", default=None, help="config (name or file) to build the model from instead of the checkpoint's")
    return parser.parse_args(list(argv[1:]))


def run(argv) -> Prediction:
    """`ffjax predict ...`: parses `argv` (argv[0] is the program name) and predicts.

    Errors in the input or the run directory end the program with their message (exit 1).
    """
    args = _parse(argv)
    # Orbax warns on every read-only checkpoint open; nothing a user of this command can act on.
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        config = configs.load(args.config) if args.config else None
    except FileNotFoundError as e:
        raise SystemExit(f"ffjax predict: {e}") from None
    try:
        result = predict(
            args.workdir, args.input, args.output, checkpoint=args.checkpoint, every_n_frames=args.every_n_frames,
            max_frames=args.max_frames, batch_size=args.batch_size, image_size=args.image_size,
            crop_scale=args.crop_scale, upsample=args.upsample, threshold=args.threshold, config=config,
            keyframe_every=args.keyframe_every,
        )
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"ffjax predict: {e}") from None
    print(result.verdict)
    print(f"  overlay: {result.overlay_path}\n  preview: {result.preview_path}\n  json:    {result.json_path}")
    return result
