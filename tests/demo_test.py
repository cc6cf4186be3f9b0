"""`ffjax demo --quick`: the demo's whole path (generate, build, train, evaluate, predict) at CI size."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ffjax import demo
from ffjax.inference import media
from ffjax.testing import official_pairs
from ffjax.testing import subjects as subjects_lib


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = demo.run_demo(out, quick=True)
    printed = capsys.readouterr().out
    for stage in range(1, 6):
        assert f"[{stage}/5] done in" in printed  # the progress display

    outputs = summary["outputs"]
    for path in outputs.values():
        assert path in printed
    assert json.loads((out / "demo_summary.json").read_text()) == summary
    figure = cv2.imread(outputs["figure"])
    assert figure is not None and figure.shape[1] > 3 * figure.shape[0]  # three panels side by side
    report = json.loads((out / "run" / "eval" / "eval_test.json").read_text())
    assert report["protocol"]["split"] == "test" and report["protocol"]["num_frames"] == summary["metrics"]["test_frames"]
    for name in ("pixel_iou_fake", "frame_auc", "video_auc"):
        value = summary["metrics"][name]
        assert value is None or 0.0 <= value <= 1.0
    assert 0.0 < summary["chance"]["pixel_iou_fake"] < 1.0

    record = json.loads(open(outputs["predict_json"]).read())
    (test_pair,) = official_pairs(*[demo.SIZES["quick"][s] for s in ("train", "val", "test")])["test"]
    # A held-out fake: a FaceSwap video of the test split, every frame scored.
    assert Path(record["input"]).stem in ("_".join(test_pair), "_".join(test_pair[::-1]))
    assert "/FaceSwap/" in record["input"] and record["video"]["frames_sampled"] == demo.SIZES["quick"]["num_frames"]
    assert media.open_source(outputs["predict_overlay_video"]).kind == "video"
    # The checkpoint knows it was trained on generated data; predict says so.
    assert record["protocol"]["trained_on_generated_data"] is True
    assert set(summary["predictions"]) == {"fake", "real"}
    assert summary["seconds"]["total"] >= sum(v for k, v in summary["seconds"].items() if k != "total")


def test_output_dir_is_only_cleared_when_the_demo_made_it(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(SystemExit, match="mine.*not made by the demo"):
        demo.run(["ffjax demo", "--output_dir", str(foreign)])
    assert (foreign / "thesis.tex").read_text() == "precious"

    made = tmp_path / "made"
    demo._mark(made)
    (made / "old_run").mkdir()
    demo._prepare_output(made)
    assert not made.exists()  # the demo's own earlier output only


def test_bad_flags_are_named(tmp_path):
    with pytest.raises(SystemExit, match="--faces_dir .*nowhere"):
        demo.run(["ffjax demo", "--output_dir", str(tmp_path / "d"), "--faces_dir", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="--predict_method='FaceShifter'"):
        demo.run(["ffjax demo", "--output_dir", str(tmp_path / "d"), "--predict_method", "FaceShifter"])
    with pytest.raises(SystemExit, match="--num_train_steps=0"):
        demo.run(["ffjax demo", "--output_dir", str(tmp_path / "d"), "--num_train_steps", "0"])


def test_subjects_from_a_folder_of_photos(tmp_path):
    from skimage import data

    from ffjax.data import faces as faces_lib

    astronaut = data.astronaut()
    photos = tmp_path / "photos"
    media.write_image(photos / "astronaut.png", astronaut)
    media.write_image(photos / "wall.png", np.full((120, 160, 3), 90, np.uint8))  # no face: skipped
    (face,) = demo.subjects_from_folder(photos)
    height, width = face.shape[:2]
    assert width / height == pytest.approx(subjects_lib.FACE_ASPECT, abs=0.02)
    # The window lands where the generator's hand-placed astronaut face box is.
    x0, y0, x1, y1 = demo.canonical_face_window(faces_lib.detect_faces(astronaut, 1)[0])
    rows, cols = subjects_lib.ASTRONAUT_FACE
    inter = max(0, min(x1, cols.stop) - max(x0, cols.start)) * max(0, min(y1, rows.stop) - max(y0, rows.start))
    union = (x1 - x0) * (y1 - y0) + (cols.stop - cols.start) * (rows.stop - rows.start) - inter
    assert inter / union > 0.5

    empty = tmp_path / "walls"
    media.write_image(empty / "wall.png", np.full((120, 160, 3), 90, np.uint8))
    with pytest.raises(ValueError, match="walls.*no face"):
        demo.subjects_from_folder(empty)
