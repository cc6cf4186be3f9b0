"""`ffjax predict` on generated videos, frame folders and images with a tiny checkpoint."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from ffjax import checkpoints, inference, optim, sharding
from ffjax.inference import media, overlay, predict
from ffjax.state import create_train_state
from ffjax.data import crops
from ffjax.testing import corrupt_file, default_real_subjects, make_ffpp_tree, read_video, write_video
from tests.helpers import config_on, load_config

FRAME_SIZE = (160, 120)  # faces ~50 px: dlib (upsample 1) finds the LFW subjects


def tiny_config(tiny_dataset, **model_kwargs):
    return config_on(tiny_dataset, model_kwargs=model_kwargs)


def save_checkpoint(config, workdir, step=3):
    """A freshly initialised state saved the way the trainer saves it."""
    mesh = sharding.make_mesh()
    _, state = create_train_state(config, mesh, optim.make_optimizer(config))
    ckpt = checkpoints.Checkpointer(str(workdir))
    ckpt.save(step, state, {"config": config.to_dict(), "data_fingerprint": "", "step": step, "model": config.model})
    ckpt.wait()
    ckpt.close()
    return state


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(tiny_dataset)
    state = save_checkpoint(config, workdir)
    return workdir, config, state


@pytest.fixture(scope="module")
def predictor(run_dir):
    model = inference.load_model(run_dir[0])
    return predict.Predictor(model, batch_size=8)


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    """A generated fake with real (LFW) faces, then one frame with no face at all."""
    root = tmp_path_factory.mktemp("faces")
    tree = make_ffpp_tree(
        root / "tree", pairs=[("087", "081")], methods=("FaceSwap",), num_frames=5,
        frame_size=FRAME_SIZE, subjects=default_real_subjects()[2:4], seed=1,
    )
    frames = read_video(tree.video("FaceSwap", "c23", "087_081").path)
    blank = np.full_like(frames[:1], 128)
    # Lossless, so the test can crop the very pixels predict decodes.
    return write_video(root / "clip.mp4", np.concatenate([frames, blank]), fps=10.0, lossless=True), frames


def check_record(record, width, height, expected_indices):
    assert [f["frame_index"] for f in record["frames"]] == expected_indices
    for frame in record["frames"]:
        assert frame["face_found"] == bool(frame["faces"])
        for face in frame["faces"]:
            x0, y0, x1, y1 = face["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert 0.0 <= face["score"] <= 1.0
            assert 0.0 <= face["fake_pixel_fraction"] <= 1.0
        if frame["faces"]:
            assert frame["score"] == max(f["score"] for f in frame["faces"])
        else:
            assert frame["score"] is None
    scored = [f["score"] for f in record["frames"] if f["score"] is not None]
    video = record["video"]
    assert video["frames_sampled"] == len(expected_indices)
    assert video["frames_with_face"] == len(scored)
    if scored:
        assert video["score"] == pytest.approx(np.mean(scored))
        assert video["verdict"] == ("fake" if video["score"] >= record["protocol"]["threshold"] else "real")


def test_video_json_overlay_and_scores(predictor, face_video, run_dir, tmp_path):
    path, frames = face_video
    height, width = frames.shape[1:3]
    result = predictor.predict(path, tmp_path)
    record = json.loads(result.json_path.read_text())
    check_record(record, width, height, list(range(len(frames) + 1)))
    # Faces are found on the generated frames, and the blank frame is recorded, not dropped.
    assert sum(f["face_found"] for f in record["frames"][:-1]) >= len(frames) - 1
    assert record["frames"][-1] == {"frame_index": len(frames), "name": f"{len(frames):06d}", "face_found": False, "score": None, "faces": []}
    assert record["protocol"]["image_size"] == 32 and record["protocol"]["crop_scale"] == 1.3
    assert record["throughput"]["frames_per_second"] > 0
    assert result.verdict.split()[0] in ("FAKE", "REAL")

    decoded = read_video(result.overlay_path)
    assert decoded.shape == (len(frames) + 1, height, width, 3)
    assert read_png(result.preview_path).shape == (height, width, 3)

    # Each face's score is the model's on the builder's crop of that box: batching, padding
    # and sharding over the 8 devices change nothing.
    _, config, state = run_dir
    model = nnx.merge(predictor.model.graphdef, state.params, state.rest)
    for frame in record["frames"][:-1]:
        for face in frame["faces"]:
            crop = crops.crop_face(frames[frame["frame_index"]], None, face["box"], 1.3, 32)
            assert face["crop_window"] == list(crop.clamped_box)
            logits = model(jnp.asarray(crop.image[None], jnp.float32) / 255.0, train=False)
            expected = float(jax.nn.sigmoid(jnp.sort(logits.reshape(-1))[-11:]).mean())  # top 1% of 1024
            assert face["score"] == pytest.approx(expected, abs=1e-6)


def read_png(path):
    import cv2

    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def test_frames_folder_every_n_and_single_image(predictor, face_video, tmp_path):
    _, frames = face_video
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        media.write_image(folder / f"f_{i}.png", frame)  # f_10 would sort after f_9
    result = predictor.predict(folder, tmp_path / "out", every_n_frames=2)
    record = json.loads(result.json_path.read_text())
    check_record(record, FRAME_SIZE[0], FRAME_SIZE[1], [0, 2, 4])
    assert [f["name"] for f in record["frames"]] == ["f_0.png", "f_2.png", "f_4.png"]
    assert sorted(p.name for p in result.overlay_path.iterdir()) == ["f_0.png", "f_2.png", "f_4.png"]

    image = predictor.predict(folder / "f_1.png", tmp_path / "one")
    record = json.loads(image.json_path.read_text())
    check_record(record, FRAME_SIZE[0], FRAME_SIZE[1], [0])
    assert record["kind"] == "image" and read_png(image.overlay_path).shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    assert predictor.predict(folder, tmp_path / "capped", max_frames=2).record["video"]["frames_sampled"] == 2


def test_cli_run(run_dir, face_video, tmp_path, capsys):
    result = predict.run(["ffjax predict", "--workdir", str(run_dir[0]), "--input", str(face_video[0]),
                          "--output", str(tmp_path), "--every_n_frames", "3", "--checkpoint", "3"])
    assert [f["frame_index"] for f in result.record["frames"]] == [0, 3]
    out = capsys.readouterr().out
    assert result.verdict in out and str(result.json_path) in out


def test_classifier_checkpoint_scores_faces_without_a_heatmap(tiny_dataset, face_video, tmp_path):
    config = tiny_config(tiny_dataset)
    with config.unlocked():
        config.model = "xception"
        config.model_kwargs = ml_collections.ConfigDict(dict(width=1 / 16, middle_blocks=1, num_outputs=2))
    save_checkpoint(config, tmp_path / "run")
    image = media.write_image(tmp_path / "frame.png", face_video[1][0])
    result = predict.predict(tmp_path / "run", image, tmp_path / "out", batch_size=8)
    (frame,) = result.record["frames"]
    assert result.record["checkpoint"]["task"] == "classification" and frame["faces"]
    for face in frame["faces"]:
        assert 0.0 <= face["score"] <= 1.0 and "fake_pixel_fraction" not in face
    assert read_png(result.overlay_path).shape == face_video[1][0].shape


def test_heatmap_is_pasted_at_the_crop_window():
    frame = np.full((40, 60, 3), 100, np.uint8)
    probs = np.zeros((8, 8), np.float32)
    probs[:, 4:] = 1.0  # right half of the crop is fake
    out = overlay.paste_heatmap(frame, probs, (50, -10, 70, 10))  # clamped crops can overhang
    changed = np.any(out != frame, axis=-1)
    assert not changed[10:].any() and not changed[:, :50].any()
    assert changed[:10, 61:].all() and not changed[:10, 50:58].any()
    with pytest.raises(ValueError, match="square"):
        overlay.paste_heatmap(frame, probs, (0, 0, 10, 12))


def test_bad_inputs_are_named(predictor, face_video, tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        predictor.predict(missing, tmp_path)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(face_video[0].read_bytes())
    corrupt_file(garbage, "garbage")
    with pytest.raises(ValueError, match="garbage.mp4.*not a video"):
        predictor.predict(garbage, tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(ValueError, match="notes.txt"):
        predictor.predict(text, tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        predictor.predict(broken, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no frame images"):
        predictor.predict(tmp_path / "empty", tmp_path)
    with pytest.raises(ValueError, match="every_n_frames"):
        predictor.predict(face_video[0], tmp_path, every_n_frames=0)
    with pytest.raises(SystemExit, match="nope.mp4"):
        predict.run(["ffjax predict", "--workdir", str(tmp_path), "--input", str(missing), "--output", str(tmp_path)])


def test_bad_checkpoints_are_named(run_dir, tiny_dataset, tmp_path):
    workdir, config, _ = run_dir
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        inference.load_model(tmp_path / "no_such_run")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run.*no checkpoint"):
        inference.load_model(tmp_path / "empty_run")
    with pytest.raises(FileNotFoundError, match="no checkpoint 7"):
        inference.load_model(workdir, checkpoint="7")
    with pytest.raises(ValueError, match="--checkpoint='newest'"):
        inference.load_model(workdir, checkpoint="newest")
    # A checkpoint of another model (here: twice as wide) does not load into this one.
    wider = tiny_config(tiny_dataset, base_width=8)
    with pytest.raises(ValueError, match=f"{workdir}.*another model.*(shapes differ|arrays)"):
        inference.load_model(workdir, config=wider)
    # A checkpoint another program wrote (no ffjax meta record), or one naming an unknown model.
    foreign = ocp.CheckpointManager(tmp_path / "foreign" / "checkpoints", options=ocp.CheckpointManagerOptions(create=True))
    foreign.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave({"w": np.ones(3, np.float32)})))
    foreign.wait_until_finished()
    foreign.close()
    with pytest.raises(ValueError, match="foreign/checkpoints/5.*not written by ffjax"):
        inference.load_model(tmp_path / "foreign")
    future = tiny_config(tiny_dataset)
    with future.unlocked():
        future.model = "unet_v9"
    ckpt = checkpoints.Checkpointer(str(tmp_path / "future"))
    ckpt.save(1, {"w": np.ones(3, np.float32)}, {"config": future.to_dict()})
    ckpt.wait()
    ckpt.close()
    with pytest.raises(ValueError, match="'unet_v9' is not one of"):
        inference.load_model(tmp_path / "future")
    # Without its dataset, the crop settings must be given.
    moved = load_config("test")
    with moved.unlocked():
        moved.dataset.data_dir = str(tmp_path / "gone")
    with pytest.raises(ValueError, match="--image_size and --crop_scale"):
        inference.crop_settings(moved)
    assert inference.crop_settings(moved, 64, 1.3)[:2] == (64, 1.3)


def test_bad_predict_options_fail_before_loading_anything(tmp_path):
    """`--batch_size 0` used to fall back to 16 silently; `--output` naming a file ended in a traceback."""
    from ffjax.inference import predict as predict_lib
    from ffjax.testing import write_video

    video = write_video(tmp_path / "in.mp4", np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(SystemExit, match="--batch_size=0 must be >= 1"):
        predict_lib.run(["ffjax predict", "--workdir", str(tmp_path), "--input", str(video),
                         "--output", str(tmp_path / "out"), "--batch_size", "0"])
    (tmp_path / "taken").write_text("x")
    with pytest.raises(SystemExit, match="--output .*taken is a file; give a folder"):
        predict_lib.run(["ffjax predict", "--workdir", str(tmp_path), "--input", str(video),
                         "--output", str(tmp_path / "taken")])


def test_a_folder_scores_what_it_can_and_lists_the_rest(predictor, face_video, tmp_path):
    """A subfolder, a video and an empty image in a folder of frames: the frames are scored,
    the rest is listed with its reason (one empty image used to abort the whole folder)."""
    video_path, frames = face_video
    folder = tmp_path / "frames"
    (folder / "more").mkdir(parents=True)
    for i, frame in enumerate(frames[:3]):
        media.write_image(folder / f"f_{i}.png", frame)
    (folder / "f_3.png").write_bytes(b"")  # an empty image
    (folder / "clip.mp4").write_bytes(video_path.read_bytes())
    result = predictor.predict(folder, tmp_path / "out")
    assert [f["name"] for f in result.record["frames"]] == ["f_0.png", "f_1.png", "f_2.png"]
    reasons = {s["file"]: s["reason"] for s in result.record["skipped"]}
    assert set(reasons) == {"more", "clip.mp4", "f_3.png"}
    assert "folder" in reasons["more"] and "video" in reasons["clip.mp4"] and "decode" in reasons["f_3.png"]
    assert "skipped 3 file(s) of the folder" in result.verdict


def test_a_huge_image_is_downscaled_before_detection_and_drawing(predictor, face_video, tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "MAX_FRAME_SIDE", FRAME_SIZE[0] // 2)  # stands in for an 8000 px photo
    image = tmp_path / "big.png"
    media.write_image(image, face_video[1][0])
    result = predictor.predict(image, tmp_path / "out")
    (scaled,) = result.record["downscaled"]
    assert scaled["from"] == list(FRAME_SIZE) and max(scaled["to"]) == FRAME_SIZE[0] // 2
    assert max(read_png(result.overlay_path).shape[:2]) == FRAME_SIZE[0] // 2


def test_overlay_text_fits_portrait_frames_and_labels_never_cover_the_header(monkeypatch):
    drawn = []
    real_put_text = overlay.cv2.putText

    def put_text(img, text, org, font, scale, colour, thickness, *rest):
        (tw, th), _ = overlay.cv2.getTextSize(text, font, scale, thickness)
        drawn.append((text, org[0], org[0] + tw, org[1] - th, org[1]))
        return real_put_text(img, text, org, font, scale, colour, thickness, *rest)

    monkeypatch.setattr(overlay.cv2, "putText", put_text)
    portrait = np.zeros((640, 180, 3), np.uint8)  # 9:32, a phone video
    overlay.annotate(portrait, [((40, 0, 140, 90), 0.91)], 0.91, 0.5, header="frame 123456  ")
    (header, _, right, _, header_base), (label, _, label_right, label_top, _) = drawn
    assert header.startswith("frame 123456") and right <= 180  # was cut off: scaled from the height
    assert label == "0.91" and label_right <= 180 and label_top > header_base  # below the header
