r"""`make demo` / `ffjax demo`: the whole pipeline on real faces, on a CPU, in minutes.

  ffjax demo [--output_dir /tmp/ffjax_demo] [--faces_dir my_face_photos/] [--quick]

1. Forgeries with exactly known manipulated pixels are generated in the FF++ layout from real
   faces that ship with scikit-image (the astronaut and 100 LFW faces), or from your photos.
2. The real TFDS builder packages them (64 px face crops, masks, official splits).
3. The real trainer trains a small U-Net (ffjax/configs/demo.py).
4. The real evaluator scores the held-out test split (pixel IoU, frame and video AUC).
5. `ffjax predict` localises the manipulation in a held-out fake video (and its original).
`--quick` runs the same path at a CI size (32 px, a few steps): it tests, it does not learn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ffjax import configs, evaluation, paths, train
from ffjax.build_data import build_dataset
from ffjax.data import crops, faces
from ffjax.inference import load_model, media, overlay, predict
from ffjax.testing import default_real_subjects, make_ffpp_tree, official_pairs
from ffjax.testing import subjects as subjects_lib

MARKER = ".ffjax_demo"  # marks a folder the demo made, so a rerun may clear it
MASKED_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# Data per mode. Test subjects (LFW faces) are never seen in training: with 101 faces and at
# most 2 ids per pair, up to 50 pairs get distinct faces.
SIZES = {
    "full": dict(train=30, val=3, test=4, num_frames=12, frames_per_video=6, image_size=64),
    "quick": dict(train=4, val=1, test=1, num_frames=6, frames_per_video=3, image_size=32),
}
# dlib (upsampling once) finds ~90% of the generated faces at this size; smaller misses many.
FRAME_SIZE = (192, 144)


def _default_output() -> str:
    return str(Path(tempfile.gettempdir()) / "ffjax_demo")


# Where dlib's frontal detector puts the eyes and the mouth, as fractions of its box height
# (measured on scikit-image's astronaut, whose canonical face box subjects.py fixes by hand).
DLIB_EYES, DLIB_MOUTH = 0.30, 0.80


def canonical_face_window(box) -> tuple[int, int, int, int]:
    """The generator's face window for a dlib face box.

    The window is placed so that the eyes and mouth, where dlib's box has them, land where
    the generator wants them (`subjects.LEFT_EYE`, `subjects.MOUTH`), and is
    `subjects.FACE_ASPECT` times as wide as it is high.

    Args:
      box: dlib face box `(x0, y0, x1, y1)`.

    Returns:
      `(x0, y0, x1, y1)`, possibly extending past the photo.
    """
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    eyes, mouth = subjects_lib.LEFT_EYE[1], subjects_lib.MOUTH[1]
    height = (DLIB_MOUTH - DLIB_EYES) * side / (mouth - eyes)
    top = y0 + DLIB_EYES * side - eyes * height
    width = subjects_lib.FACE_ASPECT * height
    left = (x0 + x1) / 2 - width / 2
    return round(left), round(top), round(left) + round(width), round(top) + round(height)


def subjects_from_folder(folder) -> list[np.ndarray]:
    """Face images from a folder of photos, cut to the generator's canonical face layout.

    dlib finds the largest face in each photo (see `canonical_face_window`); photos without a
    face are skipped with a warning.

    Args:
      folder: a folder of photos (png, jpg, ...).

    Returns:
      uint8 RGB face images.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"--faces_dir {folder}: no such folder.")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in media.IMAGE_EXTENSIONS)
    out = []
    for path in photos:
        image = media.read_image(path)
        boxes = faces.detect_faces(image, 1)
        if not boxes:
            logging.warning("%s: no face found; skipped.", path)
            continue
        out.append(crops.cut_window(image, canonical_face_window(boxes[0])))
    if not out:
        raise ValueError(f"--faces_dir {folder}: found no face in {len(photos)} photo(s) ({', '.join(media.IMAGE_EXTENSIONS)}).")
    return out


class _Stages:
    """Prints `[i/n] what ...` and the time each stage took: the demo's progress display."""

    def __init__(self, total: int):
        self.total, self.done, self.seconds = total, 0, {}

    @contextlib.contextmanager
    def __call__(self, name: str, what: str):
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {what}", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        print(f"[{self.done}/{self.total}] done in {self.seconds[name]:.1f} s", flush=True)


def _check_output(location) -> None:
    """Refuses a folder (or gs:// prefix) that holds anything the demo did not make."""
    folder = paths.path(location)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir()) and not (folder / MARKER).exists()):
        raise ValueError(f"--output_dir {location} is not empty and was not made by the demo: choose another folder.")


def _prepare_output(location) -> None:
    """Empties the demo's own earlier output at `location` (a folder or a gs:// prefix)."""
    _check_output(location)
    folder = paths.path(location)
    if folder.exists():
        if paths.is_url(str(folder)):
            folder.rmtree()
        else:
            shutil.rmtree(folder)  # a fresh run each time: the demo's own earlier output only


def _mark(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `ffjax demo`; rerunning the demo deletes this folder\n")


def _load_config(quick: bool, config_file: str | None, data_dir: Path, config_name: str):
    config = configs.load(config_file or "demo", "quick" if quick else None)
    with config.unlocked():
        config.dataset.data_dir = str(data_dir)
        config.dataset.config_name = config_name
    return config


def _figure(tree, video, prediction, out: Path, scale: int = 2) -> Path:
    """Input frame | ground-truth manipulated pixels | prediction, for the most suspicious frame.

    Panels are enlarged `scale` times (the demo's frames are small) and titled.
    """
    import cv2

    frames = [f for f in prediction.record["frames"] if f["score"] is not None]
    index = max(frames, key=lambda f: f["score"])["frame_index"] if frames else 0
    frame = next(rgb for i, _, rgb in media.iter_frames(media.open_source(video.path)) if i == index)
    truth = tree.region(video.method, video.name)[index]
    tinted = frame.copy()
    tinted[truth] = (0.45 * frame[truth] + 0.55 * np.array(overlay.FAKE_COLOUR)).astype(np.uint8)
    predicted = media.read_image(prediction.preview_path)
    titles = ("input frame", "manipulated pixels (truth)", "ffjax predict")
    panels = []
    for panel, title in zip((frame, tinted, predicted), titles):
        big = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        head = np.full((14 * scale, big.shape[1], 3), 255, np.uint8)
        cv2.putText(head, title, (4, 10 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.25 * scale, (0, 0, 0), 1, cv2.LINE_AA)
        panels += [np.concatenate([head, big]), np.full((big.shape[0] + head.shape[0], 3 * scale, 3), 255, np.uint8)]
    # The README shows this figure: smallest PNG.
    return media.write_image(out, np.concatenate(panels[:-1], axis=1), png_compression=9)


def _quiet_logging() -> None:
    """Training progress lines (from ffjax) on the console; library chatter only if it is an error."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    handler.addFilter(lambda r: r.levelno >= logging.ERROR or ("/ffjax/" in r.pathname and r.levelno >= logging.INFO))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's per-save INFO/WARNING lines
    except ImportError:
        pass


def run_demo(output_dir=None, *, quick: bool = False, faces_dir=None, config_file: str | None = None,
             num_train_steps: int | None = None, predict_method: str = "FaceSwap", seed: int = 0) -> dict:
    """Generates data, builds, trains, evaluates and predicts; prints where everything is.

    Args:
      output_dir: the demo's folder, or a gs:// URL (emptied first if an earlier demo made it).
      quick: the CI-sized run (32 px, 6 steps): checks the path, learns nothing.
      faces_dir: a folder of face photos to use instead of scikit-image's faces.
      config_file: a config (name or file, its get_config taking the variant) instead of
        the packaged `demo`.
      num_train_steps: override the config's step count.
      predict_method: the method of the held-out fake that `predict` is shown on.
      seed: seed of the generated videos.

    Returns:
      A summary: metrics, chance baselines, seconds per stage and every output path.
    """
    if predict_method not in MASKED_METHODS:
        raise ValueError(f"--predict_method={predict_method!r}: choose one of {MASKED_METHODS}.")
    location = paths.resolve(output_dir or _default_output())
    _prepare_output(location)
    # A gs:// folder: the demo runs in a local staging folder (OpenCV writes local files, the
    # packed dataset is read from local disk) that is uploaded when the demo has finished.
    with paths.Staging(location) as staging:
        _mark(staging.local)
        summary = _run_in(staging.local, quick, faces_dir, config_file, num_train_steps, predict_method, seed)
        summary["outputs"] = {k: str(staging.final(v)) for k, v in summary["outputs"].items()}
        (staging.local / "demo_summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    _print_summary(summary)
    return summary


def _run_in(out: Path, quick, faces_dir, config_file, num_train_steps, predict_method, seed) -> dict:
    """`run_demo`'s five stages in the local folder `out`; returns the summary (local paths)."""
    size = SIZES["quick" if quick else "full"]
    stages = _Stages(5)
    start = time.perf_counter()

    with stages("generate", "Generating forgeries with known manipulated pixels in the FF++ layout"):
        subjects = subjects_from_folder(faces_dir) if faces_dir else default_real_subjects()
        pairs = official_pairs(size["train"], size["val"], size["test"])
        ids = 2 * sum(len(p) for p in pairs.values())
        if len(subjects) < ids:
            print(f"  note: {len(subjects)} faces for {ids} identities: faces repeat across splits, so the test metrics are optimistic.")
        tree = make_ffpp_tree(out / "ffpp", pairs=pairs, methods=MASKED_METHODS, compressions=("c23",),
                              num_frames=size["num_frames"], frame_size=FRAME_SIZE, subjects=subjects, seed=seed)
        print(f"  {len(tree.videos)} videos of {len(tree.ids)} people at {tree.root}")

    with stages("build", "Packaging them with the FF++ TFDS builder (face crops + masks)"):
        builder = build_dataset(tree.root, out / "tfds", image_size=size["image_size"],
                                frames_per_video=size["frames_per_video"], num_workers=0)

    config = _load_config(quick, config_file, out / "tfds", builder.builder_config.name)
    if num_train_steps:
        with config.unlocked():
            config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = int(num_train_steps)
    workdir = out / "run"
    with stages("train", f"Training a {config.model} {config.model_kwargs.to_dict()} for {config.num_train_steps} steps"):
        train.train_and_evaluate(config, str(workdir))

    with stages("evaluate", "Evaluating it on the held-out test split"):
        result = evaluation.evaluate_checkpoint(config, str(workdir), split="test")

    fake = next(v for v in tree.videos if v.split == "test" and v.method == predict_method)
    real = tree.video("original", fake.compression, fake.target)
    with stages("predict", f"ffjax predict on a held-out {predict_method} fake and its original"):
        predictor = predict.Predictor(load_model(workdir))
        predictions = {kind: predictor.predict(v.path, out / "predict") for kind, v in (("fake", fake), ("real", real))}
        for p in predictions.values():
            print(f"  {p.verdict}")
        figure = _figure(tree, fake, predictions["fake"], out / "demo_overlay.png")

    return _summary(result, stages.seconds, time.perf_counter() - start, out, workdir, builder, predictions, figure)


def _summary(result, seconds, total, out, workdir, builder, predictions, figure) -> dict:
    overall = result.metrics["all"]["all"]
    tp, fp, fn, tn = (int(v) for v in np.asarray(result.sums["pixel"]).reshape(-1, 4).sum(0))
    return {
        "metrics": {
            "pixel_iou_fake": overall["pixel"]["iou_fake"],
            "pixel_f1_fake": overall["pixel"]["f1_fake"],
            "frame_auc": overall["frame"]["auc"],
            "frame_accuracy": overall["frame"]["accuracy"],
            "video_auc": overall["video"]["auc"],
            "test_frames": result.protocol["num_frames"],
            "test_videos": result.protocol["num_videos"],
        },
        # What guessing achieves: every pixel called fake, and a random frame ranking.
        "chance": {"pixel_iou_fake": (tp + fn) / max(tp + fp + fn + tn, 1), "frame_auc": 0.5},
        "seconds": {**seconds, "total": total},
        "predictions": {k: {"verdict": p.verdict, "score": p.record["video"]["score"]} for k, p in predictions.items()},
        "outputs": {
            "folder": str(out),
            "dataset": str(builder.data_dir),
            "run": str(workdir),
            "eval_report": str(workdir / "eval" / "eval_test.md"),
            "predict_json": str(predictions["fake"].json_path),
            "predict_overlay_video": str(predictions["fake"].overlay_path),
            "figure": str(figure),
        },
    }


def _print_summary(summary: dict) -> None:
    m, c = summary["metrics"], summary["chance"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    print(f"\nHeld-out test split ({m['test_frames']} frames of {m['test_videos']} videos, people never seen in training):")
    print(f"  pixel IoU (fake) {fmt(m['pixel_iou_fake'])}   (all-fake guess: {fmt(c['pixel_iou_fake'])})")
    print(f"  frame AUC        {fmt(m['frame_auc'])}   (chance: 0.500)")
    print(f"  video AUC        {fmt(m['video_auc'])}")
    print(f"Wall time {summary['seconds']['total'] / 60:.1f} min (" + ", ".join(
        f"{k} {v:.0f} s" for k, v in summary["seconds"].items() if k != "total") + ")")
    print("Outputs:")
    for name, path in summary["outputs"].items():
        print(f"  {name:<22} {path}")
    # <data_dir>/faceforensics/<config>/<version>: the study reads the same build.
    data_dir, _, config_name, _ = str(summary["outputs"]["dataset"]).rsplit("/", 3)
    print(f"Next, the paper's comparison on this data (segmentation vs classification, ablations, "
          f"cross-manipulation; a few minutes):\n  ffjax study --study tiny --workdir {summary['outputs']['folder']}/study "
          f"--set dataset.data_dir={data_dir} --set dataset.config_name={config_name}")


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=argv[0] if argv else "ffjax demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=None, help=f"the demo's folder or a gs:// URL (default {_default_output()})")
    parser.add_argument("--faces_dir", default=None, help="a folder of face photos to use instead of scikit-image's faces")
    parser.add_argument("--quick", action="store_true", help="CI size: 32 px, 6 steps (checks the path, learns nothing)")
    parser.add_argument("--config", default=None, help="config name or file (default: the packaged demo config)")
    parser.add_argument("--num_train_steps", type=int, default=None, help="override the config's training steps")
    parser.add_argument("--predict_method", default="FaceSwap", help=f"method of the fake shown to predict: {', '.join(MASKED_METHODS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated videos")
    return parser.parse_args(list(argv[1:]))


def _check_args(args: argparse.Namespace) -> None:
    """Settings errors, found before minutes of work, each naming the flag."""
    if args.predict_method not in MASKED_METHODS:
        raise ValueError(f"--predict_method={args.predict_method!r}: choose one of {MASKED_METHODS}.")
    if args.faces_dir and not Path(args.faces_dir).expanduser().is_dir():
        raise FileNotFoundError(f"--faces_dir {args.faces_dir}: no such folder.")
    if args.config:
        configs.resolve(args.config)  # a FileNotFoundError naming the packaged configs
    if args.num_train_steps is not None and args.num_train_steps < 1:
        raise ValueError(f"--num_train_steps={args.num_train_steps} must be >= 1.")
    _check_output(args.output_dir or _default_output())


def run(argv) -> dict:
    """`ffjax demo ...`: parses `argv` (argv[0] is the program name) and runs the demo."""
    args = _parse(argv)
    try:
        _check_args(args)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"ffjax demo: {e}") from None
    _quiet_logging()
    return run_demo(args.output_dir, quick=args.quick, faces_dir=args.faces_dir, config_file=args.config,
                    num_train_steps=args.num_train_steps, predict_method=args.predict_method, seed=args.seed)
