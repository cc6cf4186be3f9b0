"""DFDC on disk: its training parts with their metadata, its public test set, and the work plan.

Nothing here decodes video. Train: every `dfdc_train_part_*/metadata.json` (clip -> `label`
REAL/FAKE and, for a fake, its `original` in the same part). Test: the public test set's
folder (`test/` unless configured) with `labels.csv` (`filename,label`, 1 = fake).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ffjax.data import ffpp
from tfds_builders.faceforensics import cross_dataset
from tfds_builders.faceforensics import plan as plan_lib

FAKE_METHOD = "DFDC"
PART_GLOB = "dfdc_train_part_*"
METADATA = "metadata.json"
TEST_DIR = "test"
LABELS = "labels.csv"
METADATA_LABELS = {"REAL": False, "FAKE": True}
CSV_LABELS = {"0": False, "1": True, "REAL": False, "FAKE": True}
EXPECTED_LAYOUT = f"""\
<manual_dir>/
  {PART_GLOB.replace('*', '0')}/{METADATA}, <clip>.mp4 ...   ({METADATA}: {{"<clip>.mp4": {{"label": "REAL" | "FAKE", "original": "<clip>.mp4"}}}})
  ...
  {TEST_DIR}/{LABELS}, <clip>.mp4 ...                          ({LABELS}: header filename,label; 1 = fake, 0 = real)"""

# Manifest reasons decided before decoding.
METADATA_UNREADABLE = "metadata_unreadable"  # the file; its clips are then `clip_without_label`
UNKNOWN_LABEL = "unknown_label"  # `<file>:<clip> label=<value>`
NO_LABEL = "clip_without_label"  # a clip on disk that no metadata or CSV labels
ORIGINAL_MISSING = plan_lib.ORIGINAL_MISSING


def check_root(root, test_dir: str = TEST_DIR) -> Path:
    """The DFDC root, or a LayoutError saying what is expected."""
    root = Path(root).expanduser()
    if not root.is_dir() or not (sorted(root.glob(PART_GLOB)) or (root / test_dir).is_dir()):
        raise ffpp.LayoutError(f"{root} holds neither DFDC training parts nor its test set ({test_dir}/); "
                               f"expected:\n{EXPECTED_LAYOUT}")
    return root


def _read_metadata(path: Path, skipped) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError) as e:
        skipped.setdefault(METADATA_UNREADABLE, []).append(f"{path}: {e}")
        return {}


def _read_labels_csv(path: Path, skipped) -> dict[str, str]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        skipped.setdefault(METADATA_UNREADABLE, []).append(f"{path}: {e}")
        return {}
    if rows and not {"filename", "label"} <= set(rows[0]):
        skipped.setdefault(METADATA_UNREADABLE, []).append(f"{path}: columns {sorted(rows[0])}, expected filename,label")
        return {}
    return {row["filename"]: (row["label"] or "").strip() for row in rows}


def _unlabelled(folder: Path, labelled: set[str], plan: plan_lib.SplitPlan) -> None:
    for clip in sorted(folder.glob("*.mp4")):
        if clip.name not in labelled:
            plan.skipped.setdefault(NO_LABEL, []).append(str(clip))


def plan_train(root: Path, derived_masks: bool) -> plan_lib.SplitPlan:
    """Every training part: fakes grouped with their original (one face box per frame, shared,
    as for FF++); a fake whose original is not on disk is framed alone, or skipped when its
    mask must be derived."""
    plan = plan_lib.SplitPlan("train")
    for part in sorted(p for p in root.glob(PART_GLOB) if p.is_dir()):
        metadata = _read_metadata(part / METADATA, plan.skipped) if (part / METADATA).is_file() else {}
        if not (part / METADATA).is_file():
            plan.skipped.setdefault(METADATA_UNREADABLE, []).append(f"{part / METADATA}: missing")
        originals, fakes = {}, {}
        for clip, entry in sorted(metadata.items()):
            label = entry.get("label") if isinstance(entry, dict) else None
            if label not in METADATA_LABELS:
                plan.skipped.setdefault(UNKNOWN_LABEL, []).append(f"{part / METADATA}:{clip} label={label!r}")
                continue
            ref = cross_dataset.video_ref(root, f"{part.name}/{clip}", METADATA_LABELS[label], FAKE_METHOD)
            if not plan_lib.add_named(plan, ref):
                continue
            if METADATA_LABELS[label]:
                fakes.setdefault(str(entry.get("original") or ""), []).append(ref)
            else:
                originals[clip] = ref
        _unlabelled(part, set(metadata), plan)
        for clip, ref in originals.items():
            plan.groups.append(plan_lib.GroupTask(ref.name, ref, tuple(plan_lib.FakeVideo(f, None)
                                                                       for f in fakes.pop(clip, []))))
        for original, refs in fakes.items():  # fakes whose original is not on disk
            if derived_masks:
                plan.skipped.setdefault(ORIGINAL_MISSING, []).extend(str(r.path) for r in refs)
            else:
                plan.groups += [cross_dataset.single_video_task(r) for r in refs]
    plan.groups.sort(key=lambda g: g.target)
    return plan


def plan_test(root: Path, test_dir: str = TEST_DIR) -> plan_lib.SplitPlan:
    """The public test set: one group per clip (no originals), labels from its CSV."""
    plan = plan_lib.SplitPlan("test")
    folder = root / test_dir
    if not folder.is_dir():
        return plan
    labels = _read_labels_csv(folder / LABELS, plan.skipped) if (folder / LABELS).is_file() else {}
    if not (folder / LABELS).is_file():
        plan.skipped.setdefault(METADATA_UNREADABLE, []).append(f"{folder / LABELS}: missing")
    for clip, label in sorted(labels.items()):
        if label.upper() not in CSV_LABELS:
            plan.skipped.setdefault(UNKNOWN_LABEL, []).append(f"{folder / LABELS}:{clip} label={label!r}")
            continue
        ref = cross_dataset.video_ref(root, f"{test_dir}/{clip}", CSV_LABELS[label.upper()], FAKE_METHOD)
        if plan_lib.add_named(plan, ref):
            plan.groups.append(cross_dataset.single_video_task(ref))
    _unlabelled(folder, set(labels), plan)
    return plan


def plan_splits(root, *, derived_masks: bool = False, test_dir: str = TEST_DIR) -> dict[str, plan_lib.SplitPlan]:
    """The train and test plans of a DFDC copy (either may be absent on disk: then empty)."""
    root = check_root(root, test_dir)
    return {"train": plan_train(root, derived_masks), "test": plan_test(root, test_dir)}
