"""The FF++ builder on a bad day: --overwrite, killed builds, unreadable folders, stray files,
fakes without their original (each used to lose data or end in a traceback)."""

import os
import pathlib
import shutil

import pytest

from ffjax import build_data, testing
from ffjax.data import ffpp, store
from tests.helpers import built_manifest as _manifest


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return testing.make_ffpp_tree(
        tmp_path_factory.mktemp("ffpp"), pairs=testing.official_pairs(2, 1, 1),
        methods=("Face2Face",), num_frames=8, frame_size=(160, 120),
    )


def test_overwrite_replaces_a_finished_build_only_once_the_new_one_is_complete(tree, tmp_path, monkeypatch):
    kwargs = dict(methods=("Face2Face",), frames_per_video=2, image_size=32, num_workers=0, verbose=False)
    first = build_data.build_dataset(tree.root, tmp_path, **kwargs)
    folder = pathlib.Path(first.data_dir)
    records = len(first.as_data_source("train"))
    # Twice in a row (what used to crash and leave the config folder empty).
    for _ in range(2):
        again = build_data.build_dataset(tree.root, tmp_path, overwrite=True, **kwargs)
        assert pathlib.Path(again.data_dir) == folder and len(again.as_data_source("train")) == records
    # A rebuild that fails leaves the old build readable and no scratch folder behind.
    from tfds_builders.faceforensics import process as process_lib

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(process_lib, "process_group", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_data.build_dataset(tree.root, tmp_path, overwrite=True, **kwargs)
    assert len(store.load_builder(tmp_path, first.builder_config.name).as_data_source("train")) == records
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ffjax_rebuild")]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_fakes_without_their_original_are_left_out_named_not_fatal(tree, tmp_path, capsys):
    """Detector crops need the original's frames. A split whose only fakes lack their original
    is left out like an empty split (it used to abort the whole build); elsewhere the missing
    original is named in the summary."""
    root = tmp_path / "ffpp"
    shutil.copytree(tree.root, root)
    (a, b), = tree.split_pairs["val"]
    for name in (a, b):
        (root / "original_sequences" / "youtube" / "c23" / "videos" / f"{name}.mp4").unlink()
    (t0, _), _ = tree.split_pairs["train"]
    (root / "original_sequences" / "youtube" / "c23" / "videos" / f"{t0}.mp4").unlink()
    builder = build_data.build_dataset(root, tmp_path / "tfds", methods=("Face2Face",), frames_per_video=2,
                                       image_size=32, num_workers=0)
    out = capsys.readouterr()
    assert set(builder.info.splits) == {"train", "test"}
    assert "split val left out" in out.err + out.out and f"{a}.mp4" in out.err + out.out
    train = _manifest(builder, "train")
    assert train["skipped"]["original_missing"] == [str(root / "original_sequences" / "youtube" / "c23" / "videos" / f"{t0}.mp4")]
    assert len(train["skipped"]["fake_without_its_original"]) == 1
    assert f"originals missing (their fakes skipped): {root}" in out.out


def test_a_killed_builds_leftovers_are_removed_by_the_next_build(tree, tmp_path):
    kwargs = dict(methods=("Face2Face",), frames_per_video=2, image_size=32, num_workers=0, verbose=False)
    first = build_data.build_dataset(tree.root, tmp_path, **kwargs)
    config_dir = pathlib.Path(first.data_dir).parent
    old = config_dir / "incomplete.AbC123_2.0.0"  # what a SIGKILL mid-build leaves
    (old / "sub").mkdir(parents=True)
    (old / "sub" / "shard").write_bytes(b"x" * 1000)
    stamp = os.path.getmtime(old) - 2 * build_data.ABANDONED_AFTER_S
    for p in (old, old / "sub", old / "sub" / "shard"):
        os.utime(p, (stamp, stamp))
    live = config_dir / "incomplete.Live99_2.0.0"  # another build writing right now
    live.mkdir()
    build_data.build_dataset(tree.root, tmp_path, **kwargs)
    assert not old.exists() and live.exists()


def test_an_unreadable_videos_folder_is_a_message_not_a_traceback(tree, tmp_path, monkeypatch):
    """What chmod 000 on a videos/ folder does to the planner (faked: tests may run as root,
    who reads every folder)."""
    folder = tree.root / "manipulated_sequences" / "Face2Face" / "c23" / "videos"
    real_is_file = pathlib.Path.is_file

    def is_file(path):
        if str(path).startswith(str(folder)):
            raise PermissionError(13, "Permission denied", str(folder))
        return real_is_file(path)

    monkeypatch.setattr(pathlib.Path, "is_file", is_file)
    with pytest.raises(ffpp.LayoutError, match=f"{folder}: permission denied while listing"):
        build_data.build_dataset(tree.root, tmp_path, methods=("Face2Face",), num_workers=0, verbose=False)


def test_videos_no_split_names_are_counted_not_ignored(tree, tmp_path):
    folder = tree.root / "manipulated_sequences" / "Face2Face" / "c23" / "videos"
    stray = folder / "998_999.mp4"
    shutil.copy(next(folder.glob("*.mp4")), stray)
    try:
        builder = build_data.build_dataset(tree.root, tmp_path, methods=("Face2Face",), frames_per_video=2,
                                           image_size=32, num_workers=0, verbose=False)
        manifest = _manifest(builder, "train")
        assert manifest["skipped"]["video_not_in_splits"] == [str(stray)]
        assert "video_not_in_splits 1" in build_data.dataset_summary(builder.data_dir)
    finally:
        stray.unlink()
