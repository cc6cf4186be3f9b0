"""The work plan of a build: which videos each split names, which are on disk, how to group them.

Work is grouped per target original `a`: its original and every fake `a_*` of every method,
because they share frame indices and face boxes. Nothing here decodes video.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ffjax.data import ffpp

MASK_MODES = ("shipped", "derived", "shipped_or_derived")

# Manifest reasons decided before any decoding.
VIDEO_MISSING = "video_missing"
MASK_VIDEO_MISSING = "mask_video_missing"
# A DeepFakeDetection file not named <target>_<source>__<scene>__<id>.mp4 has no split of its
# own: it is reported with the train split rather than dropped silently.
NOT_IN_SPLITS = "video_not_in_splits"
ORIGINAL_MISSING = "original_missing"  # the target original of found fakes (named once)
NO_ORIGINAL = "fake_without_its_original"
UNRECOGNISED_NAME = "unrecognised_video_name"
# A DeepFakeDetection fake whose two actors fall in different splits (kept out of every split).
DFD_ACTORS_IN_TWO_SPLITS = "dfd_actors_in_two_splits"


@dataclasses.dataclass(frozen=True)
class FakeVideo:
    """A fake to process and where its mask comes from.

    Attributes:
      ref: the fake video.
      mask_path: its shipped mask video, or None to derive the mask from the original.
    """

    ref: ffpp.VideoRef
    mask_path: Path | None


@dataclasses.dataclass(frozen=True)
class GroupTask:
    """One unit of parallel work: a target original and all its fakes found on disk.

    Attributes:
      target: the target original's name (`000`, `01__walking_outside`).
      original: the original video, or None if it is not on disk.
      fakes: the fakes of that target, in `ffpp.FAKE_METHODS` order, then by name.
    """

    target: str
    original: ffpp.VideoRef | None
    fakes: tuple[FakeVideo, ...]


@dataclasses.dataclass
class SplitPlan:
    """What one split names and what of it will be processed.

    Attributes:
      split: `train`, `val` or `test`.
      groups: tasks, sorted by target.
      named: videos the split names, per method (`original` included). For
        DeepFakeDetection (no official split) this is what is on disk.
      found: of those, videos present on disk, per method.
      skipped: reason -> files, for what is dropped before decoding.
    """

    split: str
    groups: list[GroupTask] = dataclasses.field(default_factory=list)
    named: dict[str, int] = dataclasses.field(default_factory=dict)
    found: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def num_found(self) -> int:
        """Videos of the split present on disk."""
        return sum(self.found.values())


def _mask_source(root: Path, method: str, mask_mode: str) -> Path | None:
    """The method's mask folder to use, or None when its masks are to be derived."""
    if mask_mode not in MASK_MODES:
        raise ffpp.LayoutError(f"mask_mode={mask_mode!r}; use one of {MASK_MODES}.")
    if mask_mode == "derived":
        return None
    folder = ffpp.mask_dir(root, method)
    if folder.is_dir() and method not in ffpp.METHODS_WITHOUT_SHIPPED_MASKS:
        return folder
    if mask_mode == "shipped":
        why = (
            f"{method} ships no masks"
            if method in ffpp.METHODS_WITHOUT_SHIPPED_MASKS
            else f"mask folder {folder} is missing"
        )
        raise ffpp.LayoutError(
            f"{why}, and mask_mode='shipped' uses only shipped masks: download the masks "
            f"(download script option -t masks) or build with mask_mode='shipped_or_derived' "
            "to derive them from the fake and its original."
        )
    return None


def add_named(plan: SplitPlan, ref: ffpp.VideoRef) -> bool:
    """Counts a named video and records it as missing if it is not on disk."""
    plan.named[ref.method] = plan.named.get(ref.method, 0) + 1
    if ref.path.is_file():
        plan.found[ref.method] = plan.found.get(ref.method, 0) + 1
        return True
    plan.found.setdefault(ref.method, 0)
    plan.skipped.setdefault(VIDEO_MISSING, []).append(str(ref.path))
    return False


def _fake_video(plan: SplitPlan, ref: ffpp.VideoRef, masks: Path | None, mask_mode: str):
    """The `FakeVideo` of a found fake, or None (recorded) if its mask file is missing."""
    if masks is None:
        return FakeVideo(ref, None)
    path = masks / f"{ref.name}.mp4"
    if path.is_file():
        return FakeVideo(ref, path)
    if mask_mode == "shipped":
        plan.skipped.setdefault(MASK_VIDEO_MISSING, []).append(str(path))
        return None
    return FakeVideo(ref, None)


def _plan_official(root, compression, methods, mask_sources, mask_mode, split_dir, plans):
    named = set()
    for split in ffpp.SPLITS:
        plan = plans[split]
        pairs = ffpp.load_split_pairs(split, split_dir)
        originals, _ = ffpp.split_members(pairs)
        fakes_of = {a: set() for a in originals}
        for a, b in pairs:
            fakes_of[a].add(f"{a}_{b}")
            fakes_of[b].add(f"{b}_{a}")
        for target in originals:
            ref = ffpp.video_ref(root, ffpp.ORIGINAL, compression, target)
            named.add(ref.path)
            original = ref if add_named(plan, ref) else None
            fakes = []
            for method in methods:
                for name in sorted(fakes_of[target]):
                    fake = ffpp.video_ref(root, method, compression, name)
                    named.add(fake.path)
                    if add_named(plan, fake):
                        item = _fake_video(plan, fake, mask_sources[method], mask_mode)
                        if item is not None:
                            fakes.append(item)
            if original is not None or fakes:
                plan.groups.append(GroupTask(target, original, tuple(fakes)))
    # Videos on disk that no split names (renamed files, a custom split) are counted, never
    # silently ignored; they are listed under train.
    folders = [ffpp.originals_dir(root, compression)] + [ffpp.method_dir(root, m, compression) for m in methods]
    stray = sorted(str(p) for f in folders if f.is_dir() for p in f.glob("*.mp4") if p not in named)
    if stray:
        plans["train"].skipped.setdefault(NOT_IN_SPLITS, []).extend(stray)


def _plan_dfd(root, compression, masks, mask_mode, plans):
    # No official list: what is on disk is what is named, grouped by target and split by actor.
    # A fake is kept only where both its actors are (target scene, source face): otherwise a
    # test fake would show a training actor's face.
    fakes_by_target: dict[str, list] = {}
    folder = ffpp.method_dir(root, ffpp.DFD, compression)
    unrecognised = plans["train"].skipped.setdefault(UNRECOGNISED_NAME, [])
    for path in sorted(folder.glob("*.mp4")) if folder.is_dir() else []:
        try:
            target = ffpp.target_of(ffpp.DFD, path.stem)
            split = ffpp.dfd_fake_split(path.stem)
        except ffpp.LayoutError:
            unrecognised.append(str(path))
            continue
        if split is None:
            plans[ffpp.dfd_split_of(target)].skipped.setdefault(DFD_ACTORS_IN_TWO_SPLITS, []).append(str(path))
            continue
        fakes_by_target.setdefault(target, []).append(path.stem)
    actors = ffpp.originals_dir(root, compression, actors=True)
    targets = set(fakes_by_target)
    for path in sorted(actors.glob("*.mp4")) if actors.is_dir() else []:
        try:
            ffpp.dfd_split_of(path.stem)
            targets.add(path.stem)
        except ffpp.LayoutError:
            unrecognised.append(str(path))
    if not unrecognised:
        del plans["train"].skipped[UNRECOGNISED_NAME]
    for target in sorted(targets):
        plan = plans[ffpp.dfd_split_of(target)]
        ref = ffpp.video_ref(root, ffpp.ORIGINAL, compression, target)
        original = ref if add_named(plan, ref) else None
        fakes = []
        for name in fakes_by_target.get(target, []):
            fake = ffpp.video_ref(root, ffpp.DFD, compression, name)
            add_named(plan, fake)
            item = _fake_video(plan, fake, masks, mask_mode)
            if item is not None:
                fakes.append(item)
        if original is not None or fakes:
            plan.groups.append(GroupTask(target, original, tuple(fakes)))


def drop_groups_without_original(plans: dict[str, SplitPlan], root, compression: str) -> None:
    """Leaves out the fakes whose target original is missing, counted and named.

    Detector crops are framed on the original's frames: without it a fake cannot be cropped
    the way its original would be. So a split whose only fakes lack their original ends up
    with nothing, and is left out like a split with no video on disk, instead of failing the
    build.
    """
    for split_plan in plans.values():
        kept = []
        for group in split_plan.groups:
            if group.original is None:
                missing = ffpp.video_ref(root, ffpp.ORIGINAL, compression, group.target).path
                split_plan.skipped.setdefault(ORIGINAL_MISSING, []).append(str(missing))
                split_plan.skipped.setdefault(NO_ORIGINAL, []).extend(str(f.ref.path) for f in group.fakes)
            else:
                kept.append(group)
        split_plan.groups = kept


def plan_splits(root, compression: str, methods, mask_mode: str, split_dir=None) -> dict[str, SplitPlan]:
    """Lists the work of a build: per split, the groups to process and what is missing.

    Args:
      root: the FF++ root (`manual_dir`).
      compression: `raw` (folder `raw/` or `c0/`), `c23` or `c40`.
      methods: manipulation methods to include (originals always are).
      mask_mode: `shipped`, `derived` or `shipped_or_derived`.
      split_dir: folder with the official `train/val/test.json`; None for the packaged ones.

    Returns:
      `{split: SplitPlan}` for `train`, `val` and `test`. Raises `ffpp.LayoutError` when no
      video at all is found, or when mask_mode='shipped' and a method's masks are absent.
    """
    root = ffpp.check_root(root)
    compression = ffpp.canonical_compression(compression)
    methods = ffpp.validate_methods(methods)
    plans = {split: SplitPlan(split) for split in ffpp.SPLITS}
    official = tuple(m for m in methods if m != ffpp.DFD)
    try:
        mask_sources = {m: _mask_source(root, m, mask_mode) for m in methods}
        _plan_official(root, compression, official, mask_sources, mask_mode, split_dir, plans)
        if ffpp.DFD in methods:
            _plan_dfd(root, compression, mask_sources[ffpp.DFD], mask_mode, plans)
    except PermissionError as e:
        raise ffpp.LayoutError(
            f"{e.filename}: permission denied while listing the FF++ tree. Make it readable "
            f"(chmod -R u+rX {e.filename}) or move it out of manual_dir {root}."
        ) from None
    for plan in plans.values():
        plan.groups.sort(key=lambda g: g.target)
    if not any(plan.num_found for plan in plans.values()):
        looked = [ffpp.originals_dir(root, compression)] + [
            ffpp.method_dir(root, m, compression) for m in methods
        ]
        raise ffpp.LayoutError(
            f"no video named by the splits was found under manual_dir {root} at compression "
            f"{compression!r} (looked in {', '.join(map(str, looked))}). Is manual_dir the FF++ "
            f"root, and was this compression level downloaded? Expected\n{ffpp.EXPECTED_LAYOUT}"
        )
    return plans
