"""The builder on DeepFakeDetection: no official split, so actors decide it (by a fixed hash),
and a fake, which shows two actors, belongs only to the split of both."""

import shutil

import pytest

from ffjax import build_data, testing
from ffjax.data import ffpp
from tests.helpers import built_manifest as _manifest
from tests.helpers import built_records as _records
from tests.helpers import mask_file as _mask_file


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Videos and masks to copy into the DFD layout (DFD itself is not generated)."""
    return testing.make_ffpp_tree(
        tmp_path_factory.mktemp("ffpp"), pairs=testing.official_pairs(1, 0, 0),
        methods=("Face2Face",), num_frames=12, frame_size=(128, 96),
    )


def _dfd_layout(tmp_path):
    """An empty DeepFakeDetection layout: (root, actors, fakes, masks) folders."""
    root = tmp_path / "dfd"
    actors = root / "original_sequences/actors/c23/videos"
    fakes = root / "manipulated_sequences/DeepFakeDetection/c23/videos"
    masks = root / "manipulated_sequences/DeepFakeDetection/masks/videos"
    for folder in (actors, fakes, masks):
        folder.mkdir(parents=True)
    return root, actors, fakes, masks


def test_deepfakedetection_groups_by_actor_and_scene(tree, tmp_path):
    # DFD is not generated: lay out one original and one fake copied from the FF++ tree.
    a, b = tree.split_pairs["train"][0]
    root, actors, fakes, masks = _dfd_layout(tmp_path)
    shutil.copy(tree.video(ffpp.ORIGINAL, "c23", a).path, actors / "01__walking.mp4")
    shutil.copy(tree.video("Face2Face", "c23", f"{a}_{b}").path, fakes / "01_02__walking__AB12CD.mp4")
    shutil.copy(_mask_file(tree, "Face2Face", f"{a}_{b}"), masks / "01_02__walking__AB12CD.mp4")
    shutil.copy(tree.video(ffpp.ORIGINAL, "c23", a).path, fakes / "not_a_dfd_name.mp4")
    builder = build_data.build_dataset(
        root, tmp_path / "tfds", methods=("DeepFakeDetection",), frames_per_video=2,
        image_size=32, num_workers=0, verbose=False,
    )
    assert ffpp.dfd_split_of("01__walking") == "train"  # a fixed hash of the actor id
    assert set(builder.info.splits) == {"train"}
    records = _records(builder)["train"]
    assert {v for v, _ in records} == {
        "original/c23/01__walking", "DeepFakeDetection/c23/01_02__walking__AB12CD",
    }
    assert {r["mask_source"] for r in records.values()} == {"none", "shipped"}
    skipped = _manifest(builder, "train")["skipped"]
    assert skipped["unrecognised_video_name"] == [str(fakes / "not_a_dfd_name.mp4")]


def test_deepfakedetection_fakes_never_straddle_splits(tree, tmp_path):
    """A DFD fake shows the target actor's scene and the source actor's face: it is kept only
    in the split of both actors, and counted when they are in different splits."""
    by_split = {}
    for n in range(1, 100):
        by_split.setdefault(ffpp.dfd_actor_split(f"{n:02d}"), []).append(f"{n:02d}")
    t1, t2 = by_split["train"][:2]
    v1, v2 = by_split["val"][:2]
    (s1,) = by_split["test"][:1]
    a, b = tree.split_pairs["train"][0]
    root, actors, fakes, masks = _dfd_layout(tmp_path)
    for actor in (t1, v1):
        shutil.copy(tree.video(ffpp.ORIGINAL, "c23", a).path, actors / f"{actor}__walking.mp4")
    kept = [f"{t1}_{t2}__walking__AB12CD",   # both actors in train
            f"{v1}_{v2}__walking__BC23DE"]   # both in val
    leaks = [f"{t1}_{s1}__walking__CD34EF",  # a test actor's face in a train fake
             f"{v1}_{t2}__walking__EF56GH"]  # a train actor's face in a val fake
    for name in [*kept, *leaks]:
        shutil.copy(tree.video("Face2Face", "c23", f"{a}_{b}").path, fakes / f"{name}.mp4")
        shutil.copy(_mask_file(tree, "Face2Face", f"{a}_{b}"), masks / f"{name}.mp4")
    assert [ffpp.dfd_fake_split(n) for n in kept] == ["train", "val"]
    assert all(ffpp.dfd_fake_split(n) is None for n in leaks)
    builder = build_data.build_dataset(
        root, tmp_path / "tfds", methods=("DeepFakeDetection",), frames_per_video=2,
        image_size=32, num_workers=0, verbose=False,
    )
    records = _records(builder)
    assert {v for v, _ in records["train"]} == {f"original/c23/{t1}__walking", f"DeepFakeDetection/c23/{kept[0]}"}
    assert {v for v, _ in records["val"]} == {f"original/c23/{v1}__walking", f"DeepFakeDetection/c23/{kept[1]}"}
    skipped_train = _manifest(builder, "train")["skipped"]["dfd_actors_in_two_splits"]
    skipped_val = _manifest(builder, "val")["skipped"]["dfd_actors_in_two_splits"]
    assert skipped_train == [str(fakes / f"{leaks[0]}.mp4")] and skipped_val == [str(fakes / f"{leaks[1]}.mp4")]
