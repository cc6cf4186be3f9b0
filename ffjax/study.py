r"""`ffjax study`: the paper's comparison as one resumable command.

  ffjax study --study paper --workdir /tmp/study --set dataset.data_dir=/data/tfds [--cells 0/4]

`--set FIELD=VALUE` (repeatable) sets a dotted run-config field in every cell; VALUE is read as
JSON when it parses (`--set num_train_steps=500`), else as a string.

A study file (a packaged one from `ffjax/studies/`, or a path) holds `get_config()`, a dict:

- `base`: the run config every cell starts from (`default`, `xception_cls`, a path);
- `overrides`: dotted config fields set in every cell (data folder, steps, batch size);
- `cells`: one dict per cell: `name`, optionally `config` (another base), and dotted fields
  (`model`, `loss.dice_weight`, `frame_score_topk`, `dataset.train_methods`, ...);
- `test_split`: the split every cell is scored on.

Each cell trains through `train.train_and_evaluate` into `<workdir>/cells/<name>` (an
interrupted cell resumes there), then its latest checkpoint is scored on the test split by the
evaluator `ffjax eval` uses. The cell's row is written to `cells/<name>/study_cell.json` with a
hash of its config: a rerun skips every finished cell whose config is unchanged, and
`--cells i/n` runs every n-th cell starting at i, so n hosts can share a study on one workdir
(each cell runs in one process, on that host's devices). Each run then
writes, from every finished cell: `study.json`, `study.md` (one row per cell; the
cross-manipulation matrix when cells train on single methods) and the plots beside them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from ffjax import configs, evaluation, models, paths, state as state_lib, study_report, train
from ffjax.data import ffpp, pipeline
from ffjax.inference import loading

STUDY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "studies")
CELL_FILE = "study_cell.json"


def load_study(spec: str) -> dict[str, Any]:
    """A study's `get_config()` (a plain dict): a packaged study's name (`paper`, `tiny`) or a
    file's path."""
    path = spec if os.path.isfile(os.path.expanduser(spec)) else os.path.join(STUDY_DIR, f"{spec.removesuffix('.py')}.py")
    if not os.path.isfile(path):
        packaged = sorted(f[:-3] for f in os.listdir(STUDY_DIR) if f.endswith(".py") and f != "__init__.py")
        raise FileNotFoundError(f"--study {spec}: no such file, and not a packaged study (those are: {', '.join(packaged)}).")
    study = configs.load(os.path.expanduser(path))
    missing = [k for k in ("base", "cells") if k not in study]
    if missing:
        raise ValueError(f"--study {spec}: get_config() must give a dict with {missing}.")
    return {"name": os.path.basename(path)[:-3], "overrides": {}, "test_split": "test", **study}


def cell_configs(study: dict[str, Any]) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(name, run config) of every cell, in the study's order."""
    out, names = [], set()
    for i, cell in enumerate(study["cells"]):
        cell = dict(cell)
        name = cell.pop("name", None)
        if not name or name in names or "/" in name:
            raise ValueError(f"study.cells[{i}]: every cell needs a unique `name` without '/' (got {name!r}).")
        names.add(name)
        config = configs.load(cell.pop("config", study["base"]))
        if "model" in cell and "model_kwargs" not in cell:
            cell["model_kwargs"] = {}  # the base model's options do not fit another model
        configs.set_fields(config, dict(study["overrides"]), "study overrides")
        configs.set_fields(config, cell, f"study cell {name!r}")
        out.append((name, config))
    return out


def _fingerprint(config: ml_collections.ConfigDict) -> str:
    return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def _roc(result: Any, method: str) -> dict[str, list[float]] | None:
    """ROC points of `method`'s fakes against every original, from the score histograms."""
    hist = (result.sums or {}).get("hist")
    if hist is None or (method != "all" and method not in ffpp.METHOD_NAMES):
        return None
    hist = np.asarray(hist)
    neg = hist[0, :, 0].sum(0)
    pos = hist[:, :, 1].sum((0, 1)) if method == "all" else hist[ffpp.METHOD_NAMES.index(method), :, 1].sum(0)
    if not neg.sum() or not pos.sum():
        return None
    # Thresholds from the top bin down: the rates of frames scored at or above each.
    fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / neg.sum()])
    tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / pos.sum()])
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def _row(name: str, config: Any, result: Any, train_seconds: float) -> dict[str, Any]:
    metrics = result.metrics.get("all", {})
    overall = metrics.get("all", {})
    model = config.model
    params = state_lib.count_params(nnx.state(nnx.eval_shape(lambda: state_lib.build_model(config)), nnx.Param))
    size = int(result.protocol["image_size"][0])
    per_method = {
        m: {"frame_auc": rows.get("frame", {}).get("auc"), "frame_accuracy": rows.get("frame", {}).get("accuracy"),
            "pixel_iou": rows.get("pixel", {}).get("iou_fake")}
        for m, rows in metrics.items() if m not in ("all", ffpp.ORIGINAL)
    }
    steps = int(config.num_train_steps)
    return {
        "name": name,
        "model": model,
        "task": models.MODELS[model].task,
        "train_methods": list(config.dataset.train_methods) or "all",
        "image_size": size,
        "dice_weight": float(config.loss.dice_weight),
        "frame_score_topk": float(config.frame_score_topk),
        "params": int(params),
        "gflops_per_image": float(f"{models.flops_per_image(model, size, **config.model_kwargs.to_dict()) / 1e9:.4g}"),
        "train_steps": steps,
        "train_seconds": round(train_seconds, 1),
        "train_images_per_s": round(steps * config.batch_size / max(train_seconds, 1e-9), 2),
        "eval_frames_per_s": round(float(result.throughput["frames_per_second"]), 2),
        "pixel_iou": overall.get("pixel", {}).get("iou_fake"),
        "pixel_iou_per_image": overall.get("pixel", {}).get("iou_fake_per_image"),
        "frame_auc": overall.get("frame", {}).get("auc"),
        "frame_accuracy": overall.get("frame", {}).get("accuracy"),
        "video_auc": overall.get("video", {}).get("auc"),
        "per_method": per_method,
        "roc": {m: r for m in ("all", *per_method) if (r := _roc(result, m)) is not None},
    }


GRID_FILE = "predictions.png"
GRID_FRAMES = 48  # fake frames per method, the first of the split, ranked by IoU for the grid


def prediction_examples(config: Any, cell_dir: str, split: str, per_method: int = GRID_FRAMES) -> dict[str, list[dict]]:
    """The best, median and worst of the first `per_method` fake frames of each method by
    per-frame pixel IoU: {method: [{'image', 'mask', 'probs', 'iou', 'pick'}, ...]}; {} for a
    model without pixel outputs. Frames whose prediction and mask are both empty are left out."""
    model = loading.load_model(cell_dir, config=config)
    if not model.task.uses_masks:
        return {}
    logits_fn = state_lib.predict_fn(model.graphdef, model.task)
    probs_fn = jax.jit(lambda state, images: model.task.pixel_probs(logits_fn(state, images)))
    data = pipeline.open_split(config.dataset, split)
    index = pipeline.read_index(data)
    examples: dict[str, list[dict]] = {}
    for method_id, method in enumerate(ffpp.METHOD_NAMES):
        chosen = np.flatnonzero((index["label"] == 1) & (index["method_id"] == method_id))[:per_method]
        if method == ffpp.ORIGINAL or not len(chosen):
            continue
        rows = [pipeline.to_example(data.source[int(i)]) for i in chosen]
        images, masks = np.stack([r["image"] for r in rows]), np.stack([r["mask"] for r in rows]) > 0
        probs = np.asarray(probs_fn(model.state, images))
        predicted = probs >= float(config.threshold)
        union = (predicted | masks).sum((1, 2))
        keep = np.flatnonzero(union > 0)
        if not len(keep):
            continue
        iou = (predicted & masks).sum((1, 2))[keep] / union[keep]
        order = keep[np.argsort(iou, kind="stable")]
        ranked = np.sort(iou)
        picks = {"best": (order[-1], ranked[-1]), "median": (order[len(order) // 2], ranked[len(order) // 2]),
                 "worst": (order[0], ranked[0])}
        examples[method] = [{"pick": name, "image": images[i], "mask": masks[i], "probs": probs[i], "iou": float(v)}
                            for name, (i, v) in picks.items()]
    return examples


STARTED_FILE = "study_cell_started.json"


def _claim(cell_dir: str, config: Any) -> None:
    """Marks `cell_dir` as holding this config's run. A run of another config there (the cell
    was edited) is moved aside to `<cell_dir>.replaced-<its hash>`, never deleted or resumed."""
    folder, fingerprint = paths.path(cell_dir), _fingerprint(config)
    started = folder / STARTED_FILE
    if started.exists():
        old = json.loads(started.read_text()).get("fingerprint")
        if old == fingerprint:
            return
        aside = paths.path(f"{cell_dir}.replaced-{old}")
        logging.warning("study: %s holds a run of another config for this cell; moved to %s.", cell_dir, aside)
        folder.rename(aside)
    elif folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{cell_dir} holds files no study started: move them away or use another --workdir.")
    folder.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps({"fingerprint": fingerprint, "config": json.loads(config.to_json())}, indent=1))


def run_cell(name: str, config: Any, cell_dir: str, test_split: str) -> dict[str, Any]:
    """Trains one cell (resuming if it was interrupted), scores it on `test_split`, saves its row."""
    if jax.process_index() == 0:
        _claim(cell_dir, config)
    tick = time.perf_counter()
    train.train_and_evaluate(config, cell_dir)
    train_seconds = time.perf_counter() - tick
    result = evaluation.evaluate_checkpoint(config, cell_dir, split=test_split)
    row = _row(name, config, result, train_seconds)
    examples = prediction_examples(config, cell_dir, test_split)
    row["prediction_grid"] = study_report.prediction_grid(examples, f"{cell_dir}/{GRID_FILE}", title=name) if examples else None
    if jax.process_index() == 0:
        (paths.path(cell_dir) / CELL_FILE).write_text(json.dumps({"fingerprint": _fingerprint(config), "row": row}, indent=1))
    return row


def _finished(cell_dir: str, config: Any) -> dict | None:
    path = paths.path(cell_dir) / CELL_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return saved["row"] if saved.get("fingerprint") == _fingerprint(config) else None


def parse_share(spec: str) -> tuple[int, int]:
    """`--cells i/n` -> (i, n), checked."""
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ValueError(f"--cells={spec!r}: expected i/n, e.g. 0/1 (all cells) or 1/4.") from None
    if not 0 <= i < n:
        raise ValueError(f"--cells={spec!r}: need 0 <= i < n.")
    return i, n


def run_study(study: dict[str, Any], workdir: str, *, share: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Runs this host's share of the study's unfinished cells, then writes the tables and plots.

    Returns:
      {'rows': finished cells' rows, 'ran': names trained now, 'skipped': names already
       finished, 'missing': names not finished yet, 'files': written paths}.
    """
    cells = cell_configs(study)
    workdir = paths.resolve(workdir)
    ran, skipped = [], []
    for k, (name, config) in enumerate(cells):
        if k % share[1] != share[0]:
            continue
        cell_dir = f"{workdir}/cells/{name}"
        if _finished(cell_dir, config) is not None:
            logging.info("study: cell %s is finished (%s); skipped.", name, CELL_FILE)
            skipped.append(name)
            continue
        logging.info("study: cell %s (%d of %d) ...", name, k + 1, len(cells))
        run_cell(name, config, cell_dir, study["test_split"])
        ran.append(name)
    rows = [row for name, config in cells if (row := _finished(f"{workdir}/cells/{name}", config)) is not None]
    missing = [name for name, _ in cells if name not in {r["name"] for r in rows}]
    files = study_report.write(rows, workdir, study_name=study["name"], missing=missing) if jax.process_index() == 0 else []
    return {"rows": rows, "ran": ran, "skipped": skipped, "missing": missing, "files": files}


def run(argv: list[str]) -> None:
    """`ffjax study ...`: parse flags and hand over."""
    from absl import flags

    fv = flags.FlagValues()
    flags.DEFINE_string("study", None, "A packaged study (paper, tiny) or a study file's path.", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Where the cells' runs, study.json, study.md and the plots go.", flag_values=fv)
    flags.DEFINE_string("cells", "0/1", "Run every n-th cell from the i-th: i/n (share a study between hosts).", flag_values=fv)
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE (JSON value) set in every cell, e.g. dataset.data_dir=\"/data\".", flag_values=fv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(f"{__doc__.strip()}\n\nflags:\n{fv.get_help()}")
        raise SystemExit(0)
    try:
        rest = fv(argv)
    except flags.Error as e:
        raise SystemExit(f"ffjax study: {e}\nSee `ffjax study --help`.") from None
    if len(rest) > 1 or not fv.study or not fv.workdir:
        raise SystemExit("usage: ffjax study --study NAME_OR_FILE --workdir DIR [--cells i/n] [--set FIELD=JSON ...]")
    logging.getLogger().setLevel(logging.INFO)
    study = load_study(fv.study)
    for item in fv.set:
        key, _, value = item.partition("=")
        try:
            study["overrides"][key] = json.loads(value)
        except json.JSONDecodeError:
            study["overrides"][key] = value  # a bare string
    out = run_study(study, fv.workdir, share=parse_share(fv.cells))
    print(f"study: {len(out['rows'])} cells finished ({len(out['ran'])} trained now, {len(out['skipped'])} skipped as "
          f"finished){'; not finished: ' + ', '.join(out['missing']) if out['missing'] else ''}")
    for path in out["files"]:
        print(f"  {path}")
