"""Tests for ffjax.data.ffpp: names, layout paths, official splits."""

import json

import pytest

from ffjax.data import ffpp


def test_method_and_compression_tables_follow_the_contract():
    assert ffpp.METHOD_NAMES[0] == ffpp.ORIGINAL
    assert ffpp.METHOD_NAMES[1:5] == ffpp.METHODS_WITH_MASKS
    assert ffpp.COMPRESSIONS == ("raw", "c23", "c40")
    assert ffpp.canonical_compression("c0") == "raw"
    with pytest.raises(ffpp.LayoutError, match="c50"):
        ffpp.canonical_compression("c50")
    assert ffpp.validate_methods(["FaceSwap", "Deepfakes", "FaceSwap"]) == ("Deepfakes", "FaceSwap")
    with pytest.raises(ffpp.LayoutError, match="DeepFake"):
        ffpp.validate_methods(["DeepFake"])


def test_official_splits_are_360_70_70_disjoint_pairs():
    members = {}
    for split, count in (("train", 360), ("val", 70), ("test", 70)):
        pairs = ffpp.load_split_pairs(split)
        assert len(pairs) == count
        originals, fakes = ffpp.split_members(pairs)
        assert len(originals) == 2 * count and len(fakes) == 2 * count
        members[split] = set(originals)
    assert not members["train"] & members["val"]
    assert not members["train"] & members["test"]
    assert not members["val"] & members["test"]
    originals, fakes = ffpp.split_members([("071", "054")])
    assert originals == ["054", "071"] and fakes == ["054_071", "071_054"]


def test_bad_split_files_are_clear_errors(tmp_path):
    with pytest.raises(ffpp.LayoutError, match="train.json"):
        ffpp.load_split_pairs("train", tmp_path)
    (tmp_path / "train.json").write_text(json.dumps([["071", "054", "x"]]))
    with pytest.raises(ffpp.LayoutError, match="two-string pairs"):
        ffpp.load_split_pairs("train", tmp_path)


def test_layout_paths_accept_raw_and_c0(tmp_path):
    (tmp_path / "manipulated_sequences/Face2Face/c0/videos").mkdir(parents=True)
    (tmp_path / "original_sequences/youtube/raw/videos").mkdir(parents=True)
    ref = ffpp.video_ref(tmp_path, "Face2Face", "raw", "071_054")
    assert ref.path == tmp_path / "manipulated_sequences/Face2Face/c0/videos/071_054.mp4"
    assert ref.video_id == "Face2Face/raw/071_054"
    orig = ffpp.video_ref(tmp_path, ffpp.ORIGINAL, "raw", "071")
    assert orig.path == tmp_path / "original_sequences/youtube/raw/videos/071.mp4"
    actor = ffpp.video_ref(tmp_path, ffpp.ORIGINAL, "c23", "01__walking_outside")
    assert "original_sequences/actors/c23/videos" in str(actor.path)
    assert ffpp.mask_path(tmp_path, ref).parent == ffpp.mask_dir(tmp_path, "Face2Face")


def test_targets_of_fakes():
    assert ffpp.target_of("Deepfakes", "071_054") == "071"
    assert ffpp.target_of(ffpp.ORIGINAL, "071") == "071"
    assert ffpp.target_of("DeepFakeDetection", "01_02__walking_outside__YVGY8LOK") == (
        "01__walking_outside"
    )
    with pytest.raises(ffpp.LayoutError, match="target"):
        ffpp.target_of("Deepfakes", "071")
    assert ffpp.dfd_split_of("01__walking_outside") in ffpp.SPLITS
    # Same actor, same split, whatever the scene.
    assert ffpp.dfd_split_of("07__kitchen_pan") == ffpp.dfd_split_of("07__outside_talking")


def test_check_root_explains_the_expected_layout(tmp_path):
    with pytest.raises(ffpp.LayoutError, match="original_sequences"):
        ffpp.check_root(tmp_path)
    with pytest.raises(ffpp.LayoutError, match="does not exist"):
        ffpp.check_root(tmp_path / "nope")
    (tmp_path / "original_sequences").mkdir()
    assert ffpp.check_root(tmp_path) == tmp_path
