"""Tests of the generated Celeb-DF v2 and DFDC trees (ffjax.testing.cross_trees)."""

import csv
import json
import re

import numpy as np
import pytest

from ffjax import testing
from ffjax.data import faces, video
from ffjax.testing import cross_trees

FRAMES = 4
CELEBDF_LINE = re.compile(r"^([01]) ((Celeb-real|YouTube-real|Celeb-synthesis)/[^ /]+\.mp4)$")
CELEBDF_NAME = {
    "Celeb-real": re.compile(r"^id\d+_\d{4}\.mp4$"),
    "YouTube-real": re.compile(r"^\d{5}\.mp4$"),
    "Celeb-synthesis": re.compile(r"^id(\d+)_id(\d+)_(\d{4})\.mp4$"),
}
DFDC_NAME = re.compile(r"^[a-z]{10}\.mp4$")


@pytest.fixture(scope="module")
def celebdf(tmp_path_factory):
    return testing.make_celebdf_tree(tmp_path_factory.mktemp("celebdf"), frames=FRAMES)


@pytest.fixture(scope="module")
def dfdc(tmp_path_factory):
    return testing.make_dfdc_tree(tmp_path_factory.mktemp("dfdc"), frames=FRAMES)


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _first_frame(path):
    return video.read_frames(path, [0])[0].astype(np.int16)


def _assert_changed_in_face_only(tree, fake):
    """The fake's first frame differs from its original's inside the face box, not elsewhere."""
    diff = np.abs(_first_frame(tree.root / fake) - _first_frame(tree.root / tree.originals[fake]))
    diff = diff.max(-1)
    x0, y0, x1, y1 = (int(v) for v in tree.face_boxes[fake][0])
    box = np.zeros(diff.shape, bool)
    box[y0:y1, x0:x1] = True
    near = np.zeros(diff.shape, bool)  # a margin for H.264's ringing around the edit
    near[max(0, y0 - 4) : y1 + 4, max(0, x0 - 4) : x1 + 4] = True
    large = diff > 12
    assert diff[~near].mean() < 2.5, fake  # separate encodes: x264 noise only
    assert diff[box].mean() > 2.5 * diff[~near].mean() + 1, fake
    assert large.sum() > 100 and (large & near).sum() > 0.8 * large.sum(), fake


def _assert_faces_detected(tree, videos):
    """dlib's frontal detector (the builders' one) finds the face where the tree says it is."""
    found = 0
    for rel in videos:
        frames = video.read_frames(tree.root / rel, range(FRAMES))
        for t, frame in frames.items():
            box = faces.detect_largest(frame)
            if box is None:
                continue
            found += 1
            x0, y0, x1, y1 = tree.face_boxes[rel][t]
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            assert x0 <= cx <= x1 and y0 <= cy <= y1, (rel, t, box)
    assert found >= 0.85 * FRAMES * len(videos)


def _is_broken(path):
    try:
        video.read_frames(path, range(FRAMES))
    except video.VideoError:
        return True
    return len(video.read_frames(path, range(FRAMES))) < FRAMES


# Celeb-DF v2


def test_celebdf_layout(celebdf):
    written = set(_files(celebdf.root))
    assert testing.GENERATED_MARKER in written
    assert cross_trees.CELEBDF_TEST_LIST in written
    videos = written - {testing.GENERATED_MARKER, cross_trees.CELEBDF_TEST_LIST}
    assert videos == set(celebdf.face_boxes)
    by_folder = {}
    for rel in videos:
        folder, name = rel.split("/")
        assert CELEBDF_NAME[folder].match(name), rel
        by_folder.setdefault(folder, set()).add(name)
    assert by_folder["Celeb-real"] == {"id0_0000.mp4", "id1_0000.mp4", "id2_0000.mp4"}
    assert by_folder["YouTube-real"] == {"00000.mp4", "00001.mp4"}
    assert len(by_folder["Celeb-synthesis"]) == 3
    for fake, original in celebdf.originals.items():
        target, source, k = CELEBDF_NAME["Celeb-synthesis"].match(fake.split("/")[1]).groups()
        assert target != source and original == f"Celeb-real/id{target}_{k}.mp4"
        np.testing.assert_array_equal(celebdf.face_boxes[fake], celebdf.face_boxes[original])
    for rel in videos:
        info = video.probe_video(celebdf.root / rel)
        assert (info.width, info.height, info.num_frames) == (160, 120, FRAMES), rel
        assert info.fps == pytest.approx(10.0)


def test_celebdf_test_list_grammar_and_labels(celebdf):
    text = celebdf.test_list.read_text()
    assert text.endswith("\n") and "\r" not in text
    parsed = {}
    for line in text.splitlines():
        match = CELEBDF_LINE.match(line)
        assert match, line
        label, rel, folder = match.groups()
        # Celeb-DF writes 1 for real and 0 for fake.
        assert label == ("0" if folder == "Celeb-synthesis" else "1"), line
        assert rel not in parsed and (celebdf.root / rel).is_file()
        parsed[rel] = 1 - int(label)
    assert parsed == celebdf.test_videos
    assert set(parsed) | set(celebdf.not_listed) == set(celebdf.face_boxes)
    assert not set(parsed) & set(celebdf.not_listed)
    assert {rel in celebdf.originals for rel in celebdf.not_listed} == {True, False}
    assert set(parsed.values()) == {0, 1} and celebdf.planted == {}


def test_celebdf_fakes_change_the_face_only(celebdf):
    for fake in celebdf.originals:
        _assert_changed_in_face_only(celebdf, fake)


def test_celebdf_faces_are_detectable(celebdf):
    _assert_faces_detected(celebdf, celebdf.face_boxes)


def test_celebdf_is_deterministic_for_a_seed(tmp_path):
    kwargs = {"num_subjects": 2, "num_youtube": 1, "num_fakes": 2, "frames": 2}
    runs = [
        testing.make_celebdf_tree(tmp_path / d, seed=s, **kwargs)
        for d, s in (("a", 0), ("b", 0), ("c", 1))
    ]
    assert _files(runs[0].root) == _files(runs[1].root)
    assert runs[0].test_videos == runs[1].test_videos
    other = _files(runs[2].root)
    assert all(other[k] != v for k, v in _files(runs[0].root).items() if k.endswith(".mp4"))


def test_celebdf_bad_cases(celebdf, tmp_path):
    tree = testing.make_celebdf_tree(
        tmp_path, frames=FRAMES, bad=("missing", "corrupt", "malformed_line")
    )
    assert set(tree.planted) == {"missing", "corrupt", "malformed_line"}
    lines = tree.test_list.read_text().splitlines()
    (missing,) = tree.planted["missing"]
    assert f"1 {missing}" in lines and not (tree.root / missing).exists()
    assert tree.test_videos[missing] == 0
    (corrupt,) = tree.planted["corrupt"]
    assert corrupt in tree.test_videos and _is_broken(tree.root / corrupt)
    bad_label, no_label = tree.planted["malformed_line"]
    assert bad_label.split()[0] not in ("0", "1") and len(no_label.split()) == 1
    malformed = [line for line in lines if not CELEBDF_LINE.match(line)]
    assert malformed == [bad_label, no_label]
    # They name videos that exist but are otherwise unlisted: a lenient parser would add them.
    for line in malformed:
        rel = line.split()[-1]
        assert (tree.root / rel).is_file() and rel in tree.not_listed
        assert rel not in tree.test_videos
    listed = {line.split()[1]: 1 - int(line[0]) for line in lines if CELEBDF_LINE.match(line)}
    assert listed == tree.test_videos == {**celebdf.test_videos, missing: 0}
    # Planting changes nothing else.
    clean, planted = _files(celebdf.root), _files(tree.root)
    changed = {k for k in clean if clean[k] != planted.get(k)}
    assert changed == {corrupt, cross_trees.CELEBDF_TEST_LIST}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bad": ("nope",)}, "bad"),
        ({"num_subjects": 1}, "num_subjects"),
        ({"num_fakes": 1}, "num_fakes"),
        ({"num_fakes": 7}, "num_fakes"),
        ({"width": 161}, "even"),
    ],
)
def test_celebdf_bad_settings_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        testing.make_celebdf_tree(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


# DFDC


def test_dfdc_layout_and_metadata_schema(dfdc):
    written = set(_files(dfdc.root))
    clips = {rel for rel in written if rel.endswith(".mp4")}
    assert written - clips == {
        testing.GENERATED_MARKER,
        "dfdc_train_part_0/metadata.json",
        "dfdc_train_part_1/metadata.json",
        "test/labels.csv",
    }
    assert clips == set(dfdc.face_boxes)
    names = [rel.split("/")[1] for rel in clips]
    assert all(DFDC_NAME.match(n) for n in names) and len(set(names)) == len(names)
    train = {}
    for p in range(2):
        folder = dfdc.root / f"dfdc_train_part_{p}"
        metadata = json.loads((folder / "metadata.json").read_text())
        assert set(metadata) == {c.name for c in folder.glob("*.mp4")} and len(metadata) == 4
        for name, entry in metadata.items():
            assert entry["split"] == "train"
            if entry["label"] == "FAKE":
                assert set(entry) == {"label", "split", "original"}
                assert metadata[entry["original"]] == {"label": "REAL", "split": "train"}
                original = f"{folder.name}/{entry['original']}"
            else:
                assert entry == {"label": "REAL", "split": "train"}
                original = None
            train[f"{folder.name}/{name}"] = (int(entry["label"] == "FAKE"), original)
        assert sum(e["label"] == "FAKE" for e in metadata.values()) == 2
    assert train == dfdc.train
    assert {rel: o for rel, (label, o) in train.items() if label} == {
        rel: o for rel, o in dfdc.originals.items() if not rel.startswith("test/")
    }
    for rel in clips:
        info = video.probe_video(dfdc.root / rel)
        assert (info.width, info.height, info.num_frames) == (160, 120, FRAMES), rel


def test_dfdc_labels_csv(dfdc):
    text = (dfdc.root / "test" / "labels.csv").read_text()
    assert text.splitlines()[0] == "filename,label" and text.endswith("\n")
    rows = list(csv.DictReader(text.splitlines()))
    labels = {f"test/{row['filename']}": int(row["label"]) for row in rows}
    assert labels == dfdc.test
    assert set(labels) == {f"test/{c.name}" for c in (dfdc.root / "test").glob("*.mp4")}
    assert sorted(labels.values()) == [0, 0, 1, 1]  # 1 = fake
    assert {rel for rel, label in labels.items() if label} == {
        rel for rel in dfdc.originals if rel.startswith("test/")
    }


def test_dfdc_fakes_change_the_face_only(dfdc):
    assert set(dfdc.methods.values()) == {cross_trees.SWAP, cross_trees.REENACT}
    for fake, original in dfdc.originals.items():
        assert fake.split("/")[0] == original.split("/")[0]  # from a real clip of its folder
        np.testing.assert_array_equal(dfdc.face_boxes[fake], dfdc.face_boxes[original])
        _assert_changed_in_face_only(dfdc, fake)


def test_dfdc_faces_are_detectable(dfdc):
    _assert_faces_detected(dfdc, dfdc.face_boxes)


def test_dfdc_is_deterministic_for_a_seed(tmp_path):
    kwargs = {"parts": 1, "clips_per_part": 2, "test_clips": 2, "frames": 2}
    runs = [
        testing.make_dfdc_tree(tmp_path / d, seed=s, **kwargs)
        for d, s in (("a", 0), ("b", 0), ("c", 1))
    ]
    assert _files(runs[0].root) == _files(runs[1].root)
    assert (runs[0].train, runs[0].test) == (runs[1].train, runs[1].test)
    assert not set(runs[2].face_boxes) & set(runs[0].face_boxes)  # other names, other clips


def test_dfdc_bad_cases(dfdc, tmp_path):
    tree = testing.make_dfdc_tree(tmp_path, frames=FRAMES, bad=cross_trees.DFDC_BAD)
    assert set(tree.planted) == set(cross_trees.DFDC_BAD)
    part0 = json.loads((tree.root / "dfdc_train_part_0" / "metadata.json").read_text())
    missing_train, missing_test = tree.planted["missing"]
    assert part0[missing_train.split("/")[1]] == {"label": "REAL", "split": "train"}
    assert not (tree.root / missing_train).exists() and tree.train[missing_train] == (0, None)
    labels = (tree.root / "test" / "labels.csv").read_text()
    assert f"\n{missing_test.split('/')[1]},0\n" in labels
    assert not (tree.root / missing_test).exists() and tree.test[missing_test] == 0
    (unknown,) = tree.planted["unknown_label"]
    assert part0[unknown.split("/")[1]] == {"label": "UNSURE", "split": "train"}
    assert not _is_broken(tree.root / unknown) and unknown not in tree.train
    for rel in tree.planted["corrupt"]:
        assert _is_broken(tree.root / rel)
        assert rel in tree.train or rel in tree.test
    (unreadable,) = tree.planted["metadata_unreadable"]
    assert unreadable == "dfdc_train_part_1/metadata.json"
    with pytest.raises(json.JSONDecodeError):
        json.loads((tree.root / unreadable).read_text())
    assert len(list((tree.root / "dfdc_train_part_1").glob("*.mp4"))) == 4
    assert not any(rel.startswith("dfdc_train_part_1/") for rel in tree.train)
    # Planting changes nothing else.
    assert tree.train == {
        **{k: v for k, v in dfdc.train.items() if k.startswith("dfdc_train_part_0/")},
        missing_train: (0, None),
    }
    assert tree.test == {**dfdc.test, missing_test: 0}
    clean, planted = _files(dfdc.root), _files(tree.root)
    changed = {k for k in clean if clean[k] != planted.get(k)}
    assert changed == set(tree.planted["corrupt"]) | {
        "dfdc_train_part_0/metadata.json", unreadable, "test/labels.csv"
    }
    assert set(planted) - set(clean) == {unknown}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bad": "UNSURE"}, "bad"),
        ({"parts": 0}, "parts"),
        ({"test_clips": 0}, "test_clips"),
        ({"parts": 1, "bad": ("metadata_unreadable",)}, "parts >= 2"),
        ({"height": 30}, "at least 32"),
    ],
)
def test_dfdc_bad_settings_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        testing.make_dfdc_tree(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
