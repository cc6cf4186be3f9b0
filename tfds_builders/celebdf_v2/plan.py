"""Celeb-DF v2 on disk: its folders, its official test list, and the work plan of a build.

Nothing here decodes video. The test split is exactly `List_of_testing_videos.txt` (518 clips
in the release); every other clip of the three folders is the train split.
"""

from __future__ import annotations

from pathlib import Path

from ffjax.data import ffpp
from tfds_builders.faceforensics import cross_dataset
from tfds_builders.faceforensics import plan as plan_lib

FAKE_METHOD = "Celeb-synthesis"
# Folder -> whether its clips are fake.
FOLDERS = {"Celeb-real": False, "YouTube-real": False, "Celeb-synthesis": True}
TEST_LIST = "List_of_testing_videos.txt"
# In the test list, 1 marks a real clip and 0 a fake one (the opposite of ffjax's label).
LIST_LABELS = {"1": False, "0": True}
EXPECTED_LAYOUT = f"""\
<manual_dir>/
  Celeb-real/id0_0000.mp4 ...
  YouTube-real/00000.mp4 ...
  Celeb-synthesis/id0_id1_0000.mp4 ...
  {TEST_LIST}   (one '<1 real | 0 fake> <folder>/<clip>.mp4' per line)"""

# Manifest reasons decided before decoding.
UNPARSABLE_LINE = "test_list_line_unparsable"  # `List_of_testing_videos.txt:<line>: '<text>'`
UNKNOWN_FOLDER = "test_list_unknown_folder"
LABEL_DISAGREES = "test_list_label_disagrees_with_folder"


def check_root(root) -> Path:
    """The Celeb-DF v2 root, or a LayoutError saying what is missing and what is expected."""
    root = Path(root).expanduser()
    missing = [name for name in (*FOLDERS, TEST_LIST) if not (root / name).exists()]
    if not root.is_dir() or len(missing) == len(FOLDERS) + 1:
        raise ffpp.LayoutError(f"{root} is not a Celeb-DF v2 folder; expected:\n{EXPECTED_LAYOUT}")
    if TEST_LIST in missing:
        raise ffpp.LayoutError(f"{root / TEST_LIST} is missing: it defines the official test split; expected:\n"
                               f"{EXPECTED_LAYOUT}")
    return root


def read_test_list(root: Path) -> tuple[dict[str, bool], dict[str, list[str]]]:
    """`({relative clip path: is fake}, {reason: entries})` from the official test list."""
    listed, skipped = {}, {}
    for number, line in enumerate((root / TEST_LIST).read_text().splitlines(), 1):
        where = f"{TEST_LIST}:{number}: {line.strip()!r}"
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[0] not in LIST_LABELS:
            skipped.setdefault(UNPARSABLE_LINE, []).append(where)
            continue
        label, relative = parts
        folder = relative.split("/", 1)[0]
        if folder not in FOLDERS:
            skipped.setdefault(UNKNOWN_FOLDER, []).append(where)
        elif LIST_LABELS[label] != FOLDERS[folder]:
            skipped.setdefault(LABEL_DISAGREES, []).append(where)
        else:
            listed[relative] = LIST_LABELS[label]
    return listed, skipped


def plan_splits(root) -> dict[str, plan_lib.SplitPlan]:
    """The train and test plans: one group per clip (each framed on its own frames)."""
    root = check_root(root)
    listed, skipped = read_test_list(root)
    test = plan_lib.SplitPlan("test", skipped=skipped)
    for relative, fake in sorted(listed.items()):
        ref = cross_dataset.video_ref(root, relative, fake, FAKE_METHOD)
        if plan_lib.add_named(test, ref):
            test.groups.append(cross_dataset.single_video_task(ref))
    train = plan_lib.SplitPlan("train")
    for folder, fake in FOLDERS.items():
        for path in sorted((root / folder).glob("*.mp4")) if (root / folder).is_dir() else []:
            relative = f"{folder}/{path.name}"
            if relative in listed:
                continue
            ref = cross_dataset.video_ref(root, relative, fake, FAKE_METHOD)
            plan_lib.add_named(train, ref)
            train.groups.append(cross_dataset.single_video_task(ref))
    return {"train": train, "test": test}
