"""Tests of the FF++-shaped tree generator (ffjax.testing)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ffjax import testing
from ffjax.testing import forgeries, subjects
from ffjax.testing.videos import CORRUPTIONS

BINARY_MASK_METHODS = ("Deepfakes", "Face2Face", "FaceSwap")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The default tree: 5 official pairs, 4 methods, c23, 12 frames of 160x120."""
    return testing.make_ffpp_tree(tmp_path_factory.mktemp("ffpp"))


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory):
    """A lossless tree with FaceShifter and a real face, for exact pixel checks."""
    return testing.make_ffpp_tree(
        tmp_path_factory.mktemp("ffpp_raw"),
        pairs=[("071", "054")],
        methods=("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter"),
        compressions=("raw",),
        num_frames=4,
        subjects=testing.default_real_subjects()[:2],
    )


def _frames(path):
    return testing.read_video(path).astype(np.int16)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_layout_is_the_official_one(tree):
    official = testing.load_official_splits()
    counts = {"train": 3, "val": 1, "test": 1}
    assert tree.split_pairs == {s: tuple(official[s][:n]) for s, n in counts.items()}
    expected = {testing.GENERATED_MARKER}  # beside FF++'s layout: says the tree is generated
    for a, b in tree.pairs:
        expected |= {f"original_sequences/youtube/c23/videos/{i}.mp4" for i in (a, b)}
        for method in tree.methods:
            for name in (f"{a}_{b}", f"{b}_{a}"):
                expected.add(f"manipulated_sequences/{method}/c23/videos/{name}.mp4")
                expected.add(f"manipulated_sequences/{method}/masks/videos/{name}.mp4")
    written = {str(p.relative_to(tree.root)) for p in tree.root.rglob("*") if p.is_file()}
    assert written == expected
    assert {str(v.path.relative_to(tree.root)) for v in tree.videos} | {
        str(v.mask_path.relative_to(tree.root)) for v in tree.videos if v.mask_path
    } == expected - {testing.GENERATED_MARKER}
    for v in tree.videos:
        capture = cv2.VideoCapture(str(v.path))
        assert capture.isOpened(), v.path
        assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 160
        assert int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 120
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
        capture.release()


def test_faceshifter_gets_no_mask_folder(raw_tree):
    assert not (raw_tree.root / "manipulated_sequences" / "FaceShifter" / "masks").exists()
    fakes = raw_tree.root / "manipulated_sequences" / "FaceShifter" / "raw" / "videos"
    assert (fakes / "071_054.mp4").is_file()
    assert all(v.mask_path is None for v in raw_tree.videos if v.method == "FaceShifter")
    with pytest.raises(ValueError, match="no masks"):
        testing.make_ffpp_tree(
            raw_tree.root / "x", methods=("FaceShifter",), masks_for=("FaceShifter",)
        )


def test_frame_counts_match(tree):
    for v in tree.videos:
        assert len(testing.read_video(v.path)) == tree.num_frames, v.path
        if v.mask_path is not None:
            assert len(testing.read_video(v.mask_path)) == tree.num_frames, v.mask_path


def test_mask_videos_agree_with_ground_truth(tree):
    for (method, name), region in tree.regions.items():
        gt = region.to_array()
        mask = testing.read_video(tree.video(method, "c23", name).mask_path).max(-1)
        support = tree.mask_regions[(method, name)].to_array()
        if method in BINARY_MASK_METHODS:
            assert _iou(mask > 127, gt) > 0.95, (method, name)
            assert _iou(mask > 127, support) > 0.97, (method, name)
        else:
            # NeuralTextures ships a shaded grey face render; the change is around the mouth.
            kernel = np.ones((5, 5), np.uint8)
            core = np.stack([cv2.erode(m.astype(np.uint8), kernel) for m in support]) > 0
            inside = mask[core]  # away from the edge, where mp4 ringing blurs it
            assert np.unique(inside // 16).size >= 5 and inside.min() > 20, name
            assert (gt & support).sum() / gt.sum() > 0.99
            assert gt.sum() < 0.4 * support.sum()
            ys = np.nonzero(gt[0])[0]
            x0, y0, x1, y1 = tree.face_box(name, 0)
            assert (ys.mean() - y0) / (y1 - y0) == pytest.approx(subjects.MOUTH[1], abs=0.08)


def test_fakes_differ_inside_the_region_only(tree):
    for (method, name), region in tree.regions.items():
        gt = region.to_array()
        assert gt.any(axis=(1, 2)).all(), (method, name)
        diff = np.abs(_frames(tree.video(method, "c23", name).path)
                      - _frames(tree.video("original", "c23", name.split("_")[0]).path)).max(-1)
        near = np.stack([cv2.dilate(g.astype(np.uint8), np.ones((5, 5), np.uint8)) for g in gt]) > 0
        assert (diff[gt] > forgeries.DIFF_THRESHOLD).mean() > 0.9, (method, name)
        assert diff[gt].mean() > 12, (method, name)
        assert diff[~near].mean() < 2.5, (method, name)  # x264 noise only
        # ...but noise there is: the fake and its original were encoded separately.
        assert (diff[~near] > 0).mean() > 0.05, (method, name)


def test_c23_and_c40_are_h264_at_ff_plus_plus_rates(tmp_path):
    """x264 at CRF 23 and 40, as FF++ encodes them: c40 is noisier than c23."""
    tree = testing.make_ffpp_tree(tmp_path, pairs=[("000", "001")], methods=("NeuralTextures",),
                                  compressions=("c23", "c40"), num_frames=4, frame_size=(160, 120))
    noise = {}
    for comp in ("c23", "c40"):
        path = tree.video("NeuralTextures", comp, "000_001").path
        capture = cv2.VideoCapture(str(path))
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
        capture.release()
        assert fourcc in ("avc1", "h264"), (comp, fourcc)
        fake = _frames(path)
        original = _frames(tree.video("original", comp, "000").path)
        away = ~tree.region("NeuralTextures", "000_001")
        noise[comp] = np.abs(fake - original).max(-1)[away].mean()
    assert 0 < noise["c23"] < noise["c40"]


def test_lossless_fakes_match_the_ground_truth_exactly(raw_tree):
    for (method, name), region in raw_tree.regions.items():
        gt = region.to_array()
        diff = np.abs(_frames(raw_tree.video(method, "raw", name).path)
                      - _frames(raw_tree.video("original", "raw", name.split("_")[0]).path)).max(-1)
        np.testing.assert_array_equal(diff > raw_tree.DIFF_THRESHOLD, gt)


def test_face_moves_and_regions_sit_on_the_face(tree):
    width, height = tree.frame_size
    for vid, boxes in tree.face_boxes.items():
        assert boxes.shape == (tree.num_frames, 4)
        assert (boxes[:, :2] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert (np.abs(np.diff(centres, axis=0)).max(1) >= 1).all(), vid  # every frame moves
    for (method, name), region in tree.mask_regions.items():
        for t in range(tree.num_frames):
            x0, y0, x1, y1 = tree.face_box(name, t)
            bx0, by0, bx1, by1 = region.bounding_box(t)
            if method == "Deepfakes":  # a rectangle larger than the face
                assert bx0 < x0 and by0 < y0 and bx1 > x1 and by1 > y1
            else:  # the face region, inside the face box
                assert x0 <= bx0 and y0 <= by0 and bx1 <= x1 and by1 <= y1 + 1
                assert (bx1 - bx0) > 0.7 * (x1 - x0) and (by1 - by0) > 0.7 * (y1 - y0)


def test_subjects_are_placed_in_the_face_box(raw_tree):
    astronaut = testing.default_real_subjects()[0]
    frames = testing.read_video(raw_tree.video("original", "raw", "071").path)
    for t in range(raw_tree.num_frames):
        x0, y0, x1, y1 = raw_tree.face_box("071", t)
        expected = cv2.resize(
            astronaut.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA
        )
        h, w = y1 - y0, x1 - x0
        inner = (slice(y0 + h // 4, y1 - h // 4), slice(x0 + w // 4, x1 - w // 4))
        got = frames[t][inner].astype(np.float32)
        want = expected[h // 4 : h - h // 4, w // 4 : w - w // 4]
        assert np.abs(got - want).max() <= 1.0


def test_default_real_subjects():
    faces = testing.default_real_subjects()
    assert len(faces) == 101
    assert faces[0].shape == (145, 120, 3) and all(f.shape == (25, 25, 3) for f in faces[1:])
    assert all(f.dtype == np.uint8 for f in faces)
    assert np.ptp(faces[0].reshape(-1, 3).mean(0)) > 10  # the astronaut is in colour


def test_deterministic_for_a_seed(tmp_path):
    kwargs = dict(pairs=[("071", "054")], methods=("Deepfakes", "NeuralTextures"), num_frames=3)
    runs = [
        testing.make_ffpp_tree(tmp_path / d, seed=s, **kwargs)
        for d, s in (("a", 0), ("b", 0), ("c", 1))
    ]

    def files(tree):
        return {p.relative_to(tree.root): p.read_bytes() for p in sorted(tree.root.rglob("*.mp4"))}

    assert files(runs[0]) == files(runs[1])
    for key in runs[0].regions:
        np.testing.assert_array_equal(
            runs[0].regions[key].to_array(), runs[1].regions[key].to_array()
        )
    other = files(runs[2])
    assert all(other[k] != v for k, v in files(runs[0]).items())


def test_splits(tree, tmp_path):
    paths = tree.write_splits(tmp_path / "splits")
    for split, path in paths.items():
        written = [tuple(p) for p in json.loads(Path(path).read_text())]
        assert written == list(tree.split_pairs[split])
    custom = testing.make_ffpp_tree(
        tmp_path / "t", pairs=[("720", "672"), ("1", "2")], num_frames=1, methods=("FaceSwap",)
    )
    assert custom.split_pairs == {"train": (("1", "2"),), "val": (("720", "672"),), "test": ()}
    assert {v.split for v in custom.videos if v.target == "720"} == {"val"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(methods=("DeepFakes",)), "methods"),
        (dict(compressions=("c99",)), "compressions"),
        (dict(compressions=("raw", "c0")), "same FF"),
        (dict(frame_size=(161, 120)), "even"),
        (dict(pairs=[("071", "071")]), "own source"),
        (dict(pairs=[("071", "054"), ("054", "071")]), "twice"),
        (dict(pairs=[("0_1", "054")]), "alphanumeric"),
        (dict(subjects=[np.zeros((4, 4, 3), np.uint8)]), r"subjects\[0\]"),
        (dict(masks_for=("Face2Face",), methods=("Deepfakes",)), "subset"),
    ],
)
def test_bad_settings_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        testing.make_ffpp_tree(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # checked before anything is written


def test_corruption_helpers(tmp_path):
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = 200
    for kind in CORRUPTIONS:
        path = testing.write_video(tmp_path / f"{kind}.mp4", frames)
        size = path.stat().st_size
        testing.corrupt_file(path, kind)
        if kind == "empty":
            assert path.stat().st_size == 0
        elif kind == "truncated":
            assert 0 < path.stat().st_size < size
        with pytest.raises(OSError):
            testing.read_video(path)
    mask = testing.write_video(tmp_path / "mask.mp4", frames)
    testing.truncate_mask_video(mask, 2)
    assert len(testing.read_video(mask)) == 2
    with pytest.raises(ValueError, match="even"):
        testing.write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
