"""`ffjax build-data`: build a TFDS dataset (FF++, or a cross-dataset test set) from a local copy.

    ffjax build-data --manual_dir /data/FaceForensics++ --data_dir ~/tensorflow_datasets \
        [--compression c23 --image_size 256 --frames_per_video 32 --num_workers 8 ...]
    ffjax build-data --dataset celebdf_v2 --manual_dir /data/Celeb-DF-v2 --data_dir ~/tensorflow_datasets
    ffjax build-data --dataset dfdc --manual_dir /data/dfdc --data_dir ~/tensorflow_datasets

This command sits above both the builder (`tfds_builders/faceforensics`, which uses
`ffjax.data` to decode, crop and mask) and the data package; `ffjax.data.store.load_builder`
opens the result from its files alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import tensorflow_datasets as tfds

from ffjax.data import ffpp
from ffjax.data.store import DATASET_NAME, DATASET_NAMES
from tfds_builders.faceforensics import faceforensics_dataset_builder as ff_builder
from tfds_builders.faceforensics import manifest

# Settings only FF++'s builder has (the cross-dataset sets are as released, framed by dlib).
FFPP_ONLY = ("compression", "methods", "mask_threshold", "diff_threshold", "crop_source", "split_dir",
             "face_detector_fallback")


def _dataset(name: str):
    """`(builder module, root check)` of a dataset; imported on use."""
    if name == DATASET_NAME:
        return ff_builder, ffpp.check_root
    if name == "celebdf_v2":
        from tfds_builders.celebdf_v2 import celebdf_v2_dataset_builder as module
        from tfds_builders.celebdf_v2 import plan
        return module, plan.check_root
    if name == "dfdc":
        from tfds_builders.dfdc import dfdc_dataset_builder as module
        from tfds_builders.dfdc import plan
        return module, plan.check_root
    raise ValueError(f"--dataset {name!r}: use one of {DATASET_NAMES}")


def build_dataset(manual_dir, data_dir, *, dataset: str = DATASET_NAME, overwrite: bool = False,
                  verbose: bool = True, **config_overrides):
    """Builds (or reuses) a dataset for one config and returns its builder.

    Args:
      manual_dir: the dataset's root (FF++: `original_sequences/`, `manipulated_sequences/`).
      data_dir: TFDS data dir; the dataset goes to `<data_dir>/<dataset>/<config>/<version>`.
      dataset: `faceforensics`, `celebdf_v2` or `dfdc`.
      overwrite: rebuild even if that folder already holds a finished build.
      verbose: print the build summary.
      **config_overrides: the builder config's fields, e.g. `compression='c40'`,
        `image_size=64`, `frames_per_video=4`, `methods=(...)`, `num_workers=0`.

    Returns:
      The `tfds.core.DatasetBuilder`; its `builder_config.name` is the config name to pass
      to `ffjax.data.store.load_builder`.
    """
    module, check_root = _dataset(dataset)
    manual_dir = check_root(manual_dir)
    num_workers = config_overrides.pop("num_workers", None)
    config = module.make_config(**config_overrides)
    # TFDS refuses a config object that shares the name of a registered one, even an equal
    # one: use the registered config by name (the worker count goes to the builder).
    if config.name in module.Builder.builder_configs:
        config = config.name
    data_dir = Path(data_dir).expanduser()
    builder = module.Builder(config=config, data_dir=str(data_dir), num_workers=num_workers)
    _remove_abandoned_builds(Path(builder.data_dir).parent, verbose)
    if overwrite and builder.is_prepared():
        # Never delete a finished build before its replacement is finished: build beside it,
        # then swap the folders (TFDS's own overwrite deletes first, and a failure leaves nothing).
        builder = _rebuild_and_swap(module.Builder, builder, config, data_dir, manual_dir, num_workers)
    else:
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(
                manual_dir=str(manual_dir), download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
            ),
        )
    if verbose:
        print(dataset_summary(builder.data_dir))
    return builder


# A build folder TFDS left behind (killed mid-build) is abandoned once nothing in it changed for
# this long; a build that is still running writes into its folder every few seconds.
ABANDONED_AFTER_S = 600


def _remove_abandoned_builds(config_dir: Path, verbose: bool) -> list[Path]:
    """Removes `incomplete.*` folders of a killed build of this config (they are never reused)."""
    removed = []
    for folder in sorted(config_dir.glob("incomplete.*")) if config_dir.is_dir() else []:
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
        if time.time() - newest < ABANDONED_AFTER_S:
            continue  # maybe another build of this config, running now
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        if verbose:
            print(f"removed {folder}: left by an interrupted build")
    return removed


def _rebuild_and_swap(builder_class, old_builder, config, data_dir: Path, manual_dir, num_workers):
    """Builds `config` into a scratch data dir beside `data_dir`, then replaces the old build.

    The old build stays readable until the new one is complete; a failed rebuild leaves it
    untouched and removes the scratch folder.
    """
    final = Path(old_builder.data_dir)
    scratch = data_dir / f".ffjax_rebuild_{os.getpid()}_{int(time.time())}"
    try:
        fresh = builder_class(config=config, data_dir=str(scratch), num_workers=num_workers)
        fresh.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
        )
        retired = final.with_name(f"{final.name}.replaced_{int(time.time())}")
        os.replace(final, retired)
        os.replace(fresh.data_dir, final)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return builder_class(config=config, data_dir=str(data_dir), num_workers=num_workers)


def dataset_summary(dataset_dir) -> str:
    """The summary of a built dataset, from the manifests written with it.

    Args:
      dataset_dir: `<data_dir>/<dataset>/<config>/<version>`.

    Returns:
      Summary text (videos named/found, frames kept, skips, fake-pixel fractions, speed).
    """
    manifests = manifest.read_manifests(dataset_dir)
    if not manifests:
        return f"{dataset_dir}: no manifest_<split>.json found (not built by this builder?)"
    return manifest.format_summary(manifests, dataset_dir)


def _parse(argv, prog: str = "ffjax build-data") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", default=DATASET_NAME, choices=DATASET_NAMES,
                        help="faceforensics (default), or a cross-dataset test set: celebdf_v2, dfdc")
    parser.add_argument("--manual_dir", required=True, help="the dataset's root folder (FF++, Celeb-DF v2, DFDC)")
    parser.add_argument("--data_dir", required=True, help="TFDS data dir to write into")
    parser.add_argument("--compression", help="FF++: c23 (default), c40 or raw/c0")
    parser.add_argument(
        "--methods", default=None,
        help="comma-separated methods (default Deepfakes,Face2Face,FaceSwap,NeuralTextures; "
        "FaceShifter and DeepFakeDetection are opt-in; 'all' for every method)",
    )
    parser.add_argument("--frames_per_video", type=int, help="frames per video (default 32)")
    parser.add_argument("--image_size", type=int, help="crop side in pixels (default 256)")
    parser.add_argument("--crop_scale", type=float, help="crop side / face box side (default 1.3)")
    parser.add_argument("--mask_threshold", type=int, help="shipped mask threshold (default 15)")
    parser.add_argument("--diff_threshold", type=int, help="derived mask threshold (default: per compression, raw 3, c23 8, c40 12)")
    parser.add_argument("--mask_mode", choices=("shipped", "derived", "shipped_or_derived", "none"),
                        help="FF++: shipped_or_derived (default), shipped or derived; DFDC: none (default) or derived")
    parser.add_argument("--test_dir", help="DFDC: the public test set's folder under manual_dir (default test)")
    parser.add_argument(
        "--crop_source", choices=("detector", "mask"),
        help="face boxes from dlib on the original frame, shared by its fakes, as predict "
        "(default), or from the fakes' masks (for studies)",
    )
    parser.add_argument("--split_dir", help="folder with train/val/test.json (default: official)")
    parser.add_argument("--num_workers", type=int, help="decoding processes (default: all CPUs)")
    parser.add_argument(
        "--no_face_detector_fallback", action="store_true",
        help="skip targets with no usable fake instead of finding their faces with dlib",
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild an existing build")
    return parser.parse_args(argv)


def main(argv=None, prog: str = "ffjax build-data") -> int:
    """CLI entry point: builds the dataset and prints its summary and how to open it.

    Args:
      argv: the flags (without the program name); None for `sys.argv[1:]`.
      prog: the program name shown in usage and error messages.

    Returns:
      The exit status (0); bad input ends the program with its message (exit 1).
    """
    args = _parse(sys.argv[1:] if argv is None else argv, prog)
    overrides = {
        key: getattr(args, key)
        for key in (
            "frames_per_video", "image_size", "crop_scale", "mask_threshold", "diff_threshold",
            "mask_mode", "split_dir", "num_workers", "crop_source", "compression", "test_dir",
        )
        if getattr(args, key) is not None
    }
    if args.methods:
        methods = args.methods.split(",")
        overrides["methods"] = ffpp.FAKE_METHODS if methods == ["all"] else tuple(methods)
    if args.no_face_detector_fallback:
        overrides["face_detector_fallback"] = False
    if args.dataset != DATASET_NAME:
        ffpp_only = sorted(k for k in overrides if k in FFPP_ONLY)
        if ffpp_only:
            raise SystemExit(f"{prog}: --{', --'.join(ffpp_only)} set(s) FF++'s builder only; --dataset "
                             f"{args.dataset} is built as released, framed by dlib as predict does.")
    elif "test_dir" in overrides:
        raise SystemExit(f"{prog}: --test_dir is DFDC's (its public test set's folder).")
    try:
        builder = build_dataset(args.manual_dir, args.data_dir, dataset=args.dataset, overwrite=args.overwrite,
                                **overrides)
    except (ffpp.LayoutError, ValueError) as e:
        raise SystemExit(f"{prog}: {e}") from e
    name = builder.builder_config.name
    print(
        f"\nconfig {name}: open it with ffjax.data.store.load_builder({args.data_dir!r}, {name!r}, "
        f"name={args.dataset!r}) or tfds.data_source('{args.dataset}/{name}', data_dir={args.data_dir!r})"
    )
    return 0


def run(argv) -> int:
    """`ffjax build-data ...`: `argv[0]` is the program name, the rest are the flags."""
    return main(list(argv[1:]), prog=argv[0])
