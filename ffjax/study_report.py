"""A study's tables and plots, from its finished cells' rows (`ffjax.study`).

Writes beside the cells: `study.json` (every row), `study.md` (one row per cell, frame AUC per
test method, and the cross-manipulation matrix when cells train on a single method each), and
PNG plots: ROC curves per test method, pixel IoU against GFLOPs per image (efficiency), and the
cross-manipulation matrix as a heatmap. Each cell with pixel outputs also gets a grid of test
predictions (`prediction_grid`, written when the cell is scored).
"""

from __future__ import annotations

import json
from typing import Any

from ffjax import paths


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def test_methods(rows: list[dict]) -> list[str]:
    """Test methods present in any row, in FF++'s order."""
    from ffjax.data import ffpp

    present = {m for r in rows for m in r["per_method"]}
    return [m for m in ffpp.FAKE_METHODS if m in present]


def cross_manipulation(rows: list[dict]) -> tuple[list[str], list[str], list[list[Any]], list[list[Any]]]:
    """(train methods, test methods, frame AUC matrix, pixel IoU matrix) of the cells trained on
    one method each (the first such cell per method)."""
    by_method: dict[str, dict] = {}
    for r in rows:
        if isinstance(r["train_methods"], list) and len(r["train_methods"]) == 1:
            by_method.setdefault(r["train_methods"][0], r)
    trained = [m for m in test_methods(rows) if m in by_method] + sorted(set(by_method) - set(test_methods(rows)))
    tested = test_methods(rows)
    auc = [[by_method[t]["per_method"].get(m, {}).get("frame_auc") for m in tested] for t in trained]
    iou = [[by_method[t]["per_method"].get(m, {}).get("pixel_iou") for m in tested] for t in trained]
    return trained, tested, auc, iou


def markdown(rows: list[dict], study_name: str, missing: list[str]) -> str:
    lines = [f"# Study `{study_name}`", ""]
    if missing:
        lines += [f"Not finished yet: {', '.join(missing)}.", ""]
    lines += [
        "| cell | model | task | trained on | px | params (M) | GFLOPs/img | train img/s | eval frames/s | "
        "pixel IoU | IoU per image | frame AUC | frame acc. | video AUC |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        trained = r["train_methods"] if isinstance(r["train_methods"], str) else ", ".join(r["train_methods"])
        lines.append(
            f"| {r['name']} | {r['model']} | {r['task']} | {trained} | {r['image_size']} | {r['params'] / 1e6:.2f} | "
            f"{r['gflops_per_image']:.3g} | {_fmt(r['train_images_per_s'], 1)} | {_fmt(r['eval_frames_per_s'], 1)} | "
            f"{_fmt(r['pixel_iou'])} | {_fmt(r['pixel_iou_per_image'])} | {_fmt(r['frame_auc'])} | "
            f"{_fmt(r['frame_accuracy'])} | {_fmt(r['video_auc'])} |"
        )
    methods = test_methods(rows)
    if methods:
        lines += ["", "Frame AUC per test method (its fakes against every original):", "",
                  "| cell | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
        for r in rows:
            lines.append(f"| {r['name']} | " + " | ".join(_fmt(r["per_method"].get(m, {}).get("frame_auc")) for m in methods) + " |")
    trained, tested, auc, iou = cross_manipulation(rows)
    if trained:
        lines += ["", "Cross-manipulation: trained on the row's method (and every original), tested on the column's; "
                  "frame AUC / pixel IoU:", "", "| trained on | " + " | ".join(tested) + " |", "|---|" + "---:|" * len(tested)]
        for t, a_row, i_row in zip(trained, auc, iou):
            lines.append(f"| {t} | " + " | ".join(f"{_fmt(a)} / {_fmt(i)}" for a, i in zip(a_row, i_row)) + " |")
    grids = [r for r in rows if r.get("prediction_grid")]
    if grids:
        lines += ["", "Test predictions (best, median and worst pixel IoU per method): " + ", ".join(
            f"[{r['name']}](cells/{r['name']}/{r['prediction_grid'].rsplit('/', 1)[-1]})" for r in grids) + "."]
    lines += ["", "train img/s: steps x batch / the cell's training wall time (compiles and validation included); "
              "eval frames/s: the evaluator's, compile excluded. ROC curves come from 1/100-wide score bins."]
    return "\n".join(lines) + "\n"


def _plots(rows: list[dict], folder: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    methods = [m for m in ("all", *test_methods(rows)) if any(m in r["roc"] for r in rows)]
    if methods:
        fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.2), squeeze=False)
        for ax, m in zip(axes[0], methods):
            for r in rows:
                if m in r["roc"]:
                    ax.plot(r["roc"][m]["fpr"], r["roc"][m]["tpr"], label=r["name"])
            ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
            ax.set(title="every method" if m == "all" else m, xlabel="false positive rate", xlim=(0, 1), ylim=(0, 1.01))
        axes[0][0].set_ylabel("true positive rate")
        axes[0][-1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        written.append(_save(fig, folder, "roc.png"))
    points = [r for r in rows if r["pixel_iou"] is not None]
    if points:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        for r in points:
            ax.scatter(r["gflops_per_image"], r["pixel_iou"])
            ax.annotate(r["name"], (r["gflops_per_image"], r["pixel_iou"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="GFLOPs per image (inference)", ylabel="pixel IoU (fake)", title="Efficiency")
        fig.tight_layout()
        written.append(_save(fig, folder, "iou_vs_gflops.png"))
    trained, tested, auc, _ = cross_manipulation(rows)
    if trained:
        import numpy as np

        grid = np.array([[np.nan if v is None else v for v in row] for row in auc], float)
        fig, ax = plt.subplots(figsize=(1.2 * len(tested) + 2, 1.0 * len(trained) + 1.5))
        image = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(tested)), tested, rotation=30, ha="right")
        ax.set_yticks(range(len(trained)), trained)
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.8 else "k", fontsize=8)
        ax.set(xlabel="tested on", ylabel="trained on", title="Cross-manipulation frame AUC")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        written.append(_save(fig, folder, "cross_manipulation.png"))
    return written


def prediction_grid(examples: dict[str, list[dict]], path: str, *, title: str) -> str:
    """One row per method: for its best, median and worst frame by IoU, the crop, the true
    mask and the predicted probabilities (`study.prediction_examples`). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(examples)
    fig, axes = plt.subplots(len(methods), 9, figsize=(13.5, 1.6 * len(methods) + 0.5), squeeze=False)
    for row, method in zip(axes, methods):
        for k, example in enumerate(examples[method]):
            panels = ((example["image"], None, f"{example['pick']}: IoU {example['iou']:.2f}"),
                      (example["mask"], "gray", "true mask"), (example["probs"], "magma", "predicted"))
            for j, (image, cmap, label) in enumerate(panels):
                ax = row[3 * k + j]
                ax.imshow(image, cmap=cmap, vmin=0, vmax=1) if cmap else ax.imshow(image)
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(label, fontsize=7)
        row[0].set_ylabel(method, fontsize=8)
    fig.suptitle(f"{title}: test frames by pixel IoU (best, median, worst of the first fakes per method)", fontsize=9)
    fig.tight_layout()
    folder, name = path.rsplit("/", 1)
    return _save(fig, folder, name)


def _save(fig: Any, folder: str, name: str) -> str:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    path = paths.path(folder) / name
    path.write_bytes(buffer.getvalue())
    return str(path)


def write(rows: list[dict], folder: str, *, study_name: str, missing: list[str]) -> list[str]:
    """Writes study.json, study.md and the plots into `folder` (a gs:// URL works); returns paths."""
    out = paths.path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"study": study_name, "rows": rows, "missing": missing}, indent=1) + "\n")
    (out / "study.md").write_text(markdown(rows, study_name, missing))
    return [str(out / "study.json"), str(out / "study.md"), *_plots(rows, folder)]
