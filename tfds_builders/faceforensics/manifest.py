"""Per-split manifests (what was kept, what was skipped and why) and the build summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ffjax.data import ffpp, masks
from tfds_builders.faceforensics import plan as plan_lib
from tfds_builders.faceforensics import process

MANIFEST_PATTERN = "manifest_{split}.json"


def _entry_order(entry: str):
    """Sorts `path@frame` entries by path, then frame number (so @7 precedes @10)."""
    path, _, frame = entry.rpartition("@")
    return (path, int(frame)) if path and frame.isdigit() else (entry, -1)


class SplitManifest:
    """Accumulates the results of one split's groups; all counts are sums until `to_json`."""

    def __init__(self, split_plan: plan_lib.SplitPlan, config: dict, num_workers: int):
        self.plan = split_plan
        self.config = config
        self.num_workers = num_workers
        self.kept: dict[str, list[int]] = {}
        self.skipped: dict[str, list[str]] = {k: list(v) for k, v in split_plan.skipped.items()}
        self.mask_pixels: dict[str, list[int]] = {}
        self.mask_sources: dict[str, int] = {}
        self.box_sources: dict[str, int] = {}
        self.box_sources_by_label: dict[str, dict[str, int]] = {}
        self.frames_decoded = 0
        self.examples = 0
        self._start = time.perf_counter()

    def add(self, result: process.GroupResult) -> None:
        """Merges one group's bookkeeping."""
        self.kept.update(result.kept)
        for reason, entries in result.skipped.items():
            self.skipped.setdefault(reason, []).extend(entries)
        for method, (on, total) in result.mask_pixels.items():
            pixels = self.mask_pixels.setdefault(method, [0, 0])
            pixels[0] += on
            pixels[1] += total
        for source, n in result.mask_sources.items():
            self.mask_sources[source] = self.mask_sources.get(source, 0) + n
        for source, n in result.box_sources.items():
            self.box_sources[source] = self.box_sources.get(source, 0) + n
        for label, counts in result.box_sources_by_label.items():
            mine = self.box_sources_by_label.setdefault(label, {})
            for source, n in counts.items():
                mine[source] = mine.get(source, 0) + n
        self.frames_decoded += result.frames_decoded
        self.examples += len(result.examples)

    def to_json(self) -> dict:
        """The manifest as a JSON-able dict; lists are sorted so two builds write the same."""
        seconds = time.perf_counter() - self._start
        frames_by_method: dict[str, int] = {}
        for video_id, frames in self.kept.items():
            method = video_id.split("/", 1)[0]
            frames_by_method[method] = frames_by_method.get(method, 0) + len(frames)
        return {
            "split": self.plan.split,
            "config": self.config,
            "videos_named": dict(sorted(self.plan.named.items())),
            "videos_found": dict(sorted(self.plan.found.items())),
            "videos_kept": len(self.kept),
            "frames_kept": self.examples,
            "frames_by_method": dict(sorted(frames_by_method.items())),
            "fake_pixel_fraction": {
                m: (on / total if total else 0.0) for m, (on, total) in sorted(self.mask_pixels.items())
            },
            "mask_sources": dict(sorted(self.mask_sources.items())),
            "box_sources": dict(sorted(self.box_sources.items())),
            "box_sources_by_label": {
                label: dict(sorted(counts.items()))
                for label, counts in sorted(self.box_sources_by_label.items())
            },
            "one_label_box_sources": one_label_box_sources(self.box_sources_by_label),
            "skipped_counts": {r: len(v) for r, v in sorted(self.skipped.items())},
            "kept": {vid: sorted(frames) for vid, frames in sorted(self.kept.items())},
            "skipped": {r: sorted(v, key=_entry_order) for r, v in sorted(self.skipped.items())},
            # Timing varies run to run; it is kept apart from the content above.
            "timing": {
                "seconds": round(seconds, 3),
                "frames_decoded": self.frames_decoded,
                "examples_per_second": round(self.examples / seconds, 2) if seconds else 0.0,
                "num_workers": self.num_workers,
            },
        }

    def write(self, folder) -> Path:
        """Writes `manifest_<split>.json` into `folder` and returns its path."""
        path = Path(folder) / MANIFEST_PATTERN.format(split=self.plan.split)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path


def one_label_box_sources(by_label: dict[str, dict[str, int]]) -> list[str]:
    """Box sources that framed only real or only fake crops: the framing leaks the label.

    `crop_source='mask'` boxes every fake by its mask, so any dlib fallback box there is
    real-only; detector crops frame both labels alike.
    """
    real, fake = set(by_label.get("real", {})), set(by_label.get("fake", {}))
    if not real or not fake:
        return []  # a split with one label has nothing to leak between labels
    return sorted(real ^ fake)


def read_manifests(dataset_dir) -> dict[str, dict]:
    """Reads the manifests written with a dataset, by split (missing splits are absent)."""
    out = {}
    for split in ffpp.SPLITS:
        path = Path(dataset_dir) / MANIFEST_PATTERN.format(split=split)
        if path.is_file():
            out[split] = json.loads(path.read_text())
    return out


def _fmt_counts(counts: dict, fmt=str) -> str:
    return ", ".join(f"{k} {fmt(v)}" for k, v in counts.items()) or "none"


def format_summary(manifests: dict[str, dict], dataset_dir=None) -> str:
    """A human summary of a build: per split videos, frames, skips and fake-pixel fractions.

    Args:
      manifests: `{split: manifest dict}` from `read_manifests` or `SplitManifest.to_json`.
      dataset_dir: printed as the place the records and manifests are, if given.

    Returns:
      The summary text.
    """
    titles = {"faceforensics": "FaceForensics++", "celebdf_v2": "Celeb-DF v2", "dfdc": "DFDC"}
    if dataset_dir:
        name = Path(dataset_dir).parent.parent.name  # <data_dir>/<dataset>/<config>/<version>
        lines = [f"{titles.get(name, 'FaceForensics++')} dataset at {dataset_dir}"]
    else:
        lines = []
    for split, m in manifests.items():
        named, found = sum(m["videos_named"].values()), sum(m["videos_found"].values())
        per_method = ", ".join(
            f"{k} {m['videos_found'].get(k, 0)}/{v}" for k, v in m["videos_named"].items()
        )
        timing = m.get("timing", {})
        lines += [
            f"{split}: videos named {named}, found {found} ({per_method}); "
            f"kept {m['frames_kept']} frames of {m['videos_kept']} videos",
            f"  frames by method: {_fmt_counts(m['frames_by_method'])}",
            f"  skipped: {_fmt_counts(m['skipped_counts'])}",
            f"  fake-pixel fraction: {_fmt_counts(m['fake_pixel_fraction'], lambda v: f'{v:.3f}')}"
            if m.get("config", {}).get("pixel_masks", True) else "  fake-pixel fraction: no masks (none ship with this dataset)",
            f"  mask source: {_fmt_counts(m['mask_sources'])}; "
            f"face box from: {_fmt_counts(m['box_sources'])}",
        ]
        if m.get("one_label_box_sources"):
            lines.append(
                f"  WARNING: face boxes from {', '.join(m['one_label_box_sources'])} framed one "
                "label only: a model can learn the label from the framing (use crop_source="
                "detector)"
            )
        missing = m["skipped"].get(plan_lib.ORIGINAL_MISSING, [])
        if missing:
            lines.append(
                f"  originals missing (their fakes skipped): {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )
        outside = m["skipped_counts"].get(masks.MASK_OUTSIDE_FACE, 0)
        if outside:
            lines.append(
                f"  WARNING: {outside} derived masks lay mostly outside the face crop "
                "(compression noise, not a manipulation) and were refused; see skipped."
            )
        if timing:
            lines.append(
                f"  speed: {timing['examples_per_second']} frames/s "
                f"({timing['seconds']} s, {timing['num_workers']} workers)"
            )
    return "\n".join(lines)
