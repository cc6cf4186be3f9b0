"""The cross-dataset builders (Celeb-DF v2, DFDC) on generated trees in their real layouts:
records in FF++'s schema, labels from the test list / metadata / CSV, every bad input named,
and `ffjax eval --dataset` scoring an FF++-trained model on them."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ffjax import build_data, evaluation, train
from ffjax.data import ffpp, pipeline
from ffjax.testing import make_celebdf_tree, make_dfdc_tree
from tests.helpers import built_manifest, built_records, config_on

BUILD = dict(image_size=32, frames_per_video=2, num_workers=0, verbose=False)


def _stem(relative: str) -> str:
    return relative.removesuffix(".mp4")


@pytest.fixture(scope="module")
def celebdf(tmp_path_factory):
    tree = make_celebdf_tree(tmp_path_factory.mktemp("celebdf"), frames=4, bad=("missing", "corrupt", "malformed_line"))
    builder = build_data.build_dataset(tree.root, tmp_path_factory.mktemp("tfds"), dataset="celebdf_v2", **BUILD)
    return tree, builder


@pytest.fixture(scope="module")
def dfdc(tmp_path_factory):
    tree = make_dfdc_tree(tmp_path_factory.mktemp("dfdc"), frames=4,
                          bad=("missing", "unknown_label", "corrupt", "metadata_unreadable"))
    data_dir = tmp_path_factory.mktemp("tfds")
    plain = build_data.build_dataset(tree.root, data_dir, dataset="dfdc", **BUILD)
    derived = build_data.build_dataset(tree.root, data_dir, dataset="dfdc", mask_mode="derived", **BUILD)
    return tree, plain, derived


def test_celebdf_test_split_is_the_official_list_with_its_labels_inverted(celebdf):
    tree, builder = celebdf
    records = built_records(builder)
    assert set(records) == {"train", "test"}
    unreadable = {_stem(p) for p in tree.planted["corrupt"] + tree.planted["missing"]}
    test_videos = {r["video_id"].split("/", 2)[2]: r for r in records["test"].values()}
    want = {_stem(p): label for p, label in tree.test_videos.items() if _stem(p) not in unreadable}
    assert set(test_videos) <= set(want) and len(test_videos) >= len(want) - 1  # a face may go unfound
    for name, record in test_videos.items():
        assert record["label"] == want[name]  # the list's 1 is real: ffjax's 0
        assert record["method"] == ("Celeb-synthesis" if want[name] else ffpp.ORIGINAL)
        assert record["compression"] == ffpp.AS_RELEASED
        assert record["mask_source"] == ("unavailable" if want[name] else "none")
    for record in records["test"].values():
        assert record["image"].shape == (32, 32, 3) and not record["mask"].any()
    # Every clip the list leaves out is the train split; none is in both.
    train_videos = {r["video_id"].split("/", 2)[2] for r in records["train"].values()}
    assert train_videos <= {_stem(p) for p in tree.not_listed} and not train_videos & set(test_videos)


def test_celebdf_bad_lines_missing_and_corrupt_clips_are_named(celebdf):
    tree, builder = celebdf
    skipped = built_manifest(builder, "test")["skipped"]
    assert {pathlib.Path(p).name for p in skipped["video_missing"]} == {pathlib.Path(p).name for p in tree.planted["missing"]}
    assert {pathlib.Path(p).name for p in skipped["video_unreadable"]} == {pathlib.Path(p).name for p in tree.planted["corrupt"]}
    lines = skipped["test_list_line_unparsable"]
    assert len(lines) == len(tree.planted["malformed_line"])
    assert all(line.startswith("List_of_testing_videos.txt:") for line in lines)
    assert all(any(bad.strip() in line for line in lines) for bad in tree.planted["malformed_line"])
    config = built_manifest(builder, "test")["config"]
    assert config["pixel_masks"] is False and config["crop_source"] == "detector" and config["generated_data"]


def test_dfdc_labels_from_metadata_and_csv_and_bad_entries_named(dfdc):
    tree, builder, _ = dfdc
    records = built_records(builder)
    train_want = {_stem(p): label for p, (label, _) in tree.train.items()}
    for record in records["train"].values():
        assert record["label"] == train_want[record["video_id"].split("/", 2)[2]]
    for record in records["test"].values():
        assert record["label"] == tree.test[record["video_id"].split("/", 2)[2] + ".mp4"]
        assert record["method"] in ("DFDC", ffpp.ORIGINAL) and not record["mask"].any()
    skipped = built_manifest(builder, "train")["skipped"]
    names = lambda entries: {pathlib.Path(e.split(":")[0]).name for e in entries}  # noqa: E731
    broken = [p for p in tree.planted["metadata_unreadable"]]
    assert {pathlib.Path(e.split(":")[0]).parent.name for e in skipped["metadata_unreadable"]} == {
        pathlib.Path(p).parent.name for p in broken}
    assert any("UNSURE" in e for e in skipped["unknown_label"])
    # The unreadable part's clips are not silently dropped: each is named as unlabelled.
    part = pathlib.Path(tree.root / broken[0]).parent
    assert {pathlib.Path(p).name for p in skipped["clip_without_label"]} >= {p.name for p in part.glob("*.mp4")}
    missing = [p for p in tree.planted["missing"] if not p.startswith("test/")]
    assert names(skipped["video_missing"]) >= {pathlib.Path(p).name for p in missing}
    corrupt = [p for p in tree.planted["corrupt"] if not p.startswith("test/")]
    assert names(skipped["video_unreadable"]) >= {pathlib.Path(p).name for p in corrupt}
    test_skipped = built_manifest(builder, "test")["skipped"]
    assert names(test_skipped["video_unreadable"]) >= {pathlib.Path(p).name for p in tree.planted["corrupt"]
                                                        if p.startswith("test/")}


def test_dfdc_derived_masks_cover_training_fakes_only(dfdc):
    _, plain, derived = dfdc
    records = built_records(derived)
    fakes = [r for r in records["train"].values() if r["label"] == 1]
    assert fakes and all(r["mask_source"] == "derived" for r in fakes) and any(r["mask"].any() for r in fakes)
    assert all(not r["mask"].any() and r["mask_source"] in ("unavailable", "none") for r in records["test"].values())
    assert built_manifest(derived, "train")["config"]["pixel_masks"] is True
    assert built_manifest(derived, "test")["config"]["pixel_masks"] is False
    # The same frames of the same clips as the plain build: only the masks differ.
    plain_images = {k: r["image"] for k, r in built_records(plain)["test"].items()}
    assert {k: r["image"].tobytes() for k, r in records["test"].items()} == {
        k: v.tobytes() for k, v in plain_images.items()}


def test_ffpp_only_flags_and_bad_roots_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--compression.*FF\\+\\+'s builder only"):
        build_data.main(["--dataset", "celebdf_v2", "--manual_dir", str(tmp_path), "--data_dir", str(tmp_path),
                         "--compression", "c40"])
    with pytest.raises(SystemExit, match="not a Celeb-DF v2 folder"):
        build_data.main(["--dataset", "celebdf_v2", "--manual_dir", str(tmp_path), "--data_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="neither DFDC training parts nor its test set"):
        build_data.main(["--dataset", "dfdc", "--manual_dir", str(tmp_path), "--data_dir", str(tmp_path)])
    (tmp_path / "Celeb-real").mkdir()
    with pytest.raises(SystemExit, match="List_of_testing_videos.txt is missing"):
        build_data.main(["--dataset", "celebdf_v2", "--manual_dir", str(tmp_path), "--data_dir", str(tmp_path)])


def _walk(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def _ffjax_eval(args):
    """`ffjax eval ...` as a user runs it (a process of its own, the tests' 8 CPU devices)."""
    out = subprocess.run([sys.executable, "-m", "ffjax.cli", "eval", *args], capture_output=True, text=True,
                         timeout=300, cwd=pathlib.Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]


def test_an_ffpp_model_scored_on_celebdf_and_dfdc_beside_its_own_test_split(tiny_dataset, tmp_path):
    """`ffjax eval --dataset`: the FF++-trained checkpoint on the cross-dataset builds (made
    with the training crops, into the same data_dir), frame and video metrics only, and one
    side-by-side table with the in-domain test split."""
    data_dir, _ = tiny_dataset
    celeb = make_celebdf_tree(tmp_path / "celebdf", frames=4)
    build_data.build_dataset(celeb.root, data_dir, dataset="celebdf_v2", **BUILD)
    dfdc_tree = make_dfdc_tree(tmp_path / "dfdc", frames=4)
    build_data.build_dataset(dfdc_tree.root, data_dir, dataset="dfdc", **BUILD)

    config = config_on(tiny_dataset, num_train_steps=4, eval_every_steps=4, checkpoint_every_steps=4)
    workdir = tmp_path / "run"
    train.train_and_evaluate(config, str(workdir))
    for dataset in ("celebdf_v2", "dfdc"):
        if dataset == "celebdf_v2":
            evaluation.evaluate_checkpoint(config, str(workdir), split="test", dataset=dataset)
        else:  # the command line: `ffjax eval --dataset dfdc`
            _ffjax_eval(["--config", "test", "--workdir", str(workdir), "--dataset", dataset,
                         f"--config.dataset.data_dir={data_dir}", f"--config.dataset.config_name={tiny_dataset[1]}"])
        report = json.loads((workdir / "eval" / f"eval_{dataset}_test.json").read_text())
        protocol = report["protocol"]
        assert protocol["evaluation"] == "cross-dataset" and protocol["split"] == "test"
        assert protocol["dataset"].startswith(f"{dataset}/as_released_frames2_size32")
        assert protocol["trained_on"].startswith("faceforensics/") and protocol["pixel_metrics"] is False
        assert protocol["calibrated_threshold_from"] == "val at step 4"  # FF++ validation's threshold
        frame = report["metrics"]["all"]["all"]["frame"]
        assert {"auc", "ap", "eer", "accuracy", "accuracy_calibrated"} <= set(frame)
        assert "pixel" not in json.dumps(report["metrics"])
        assert not any(isinstance(v, float) and not np.isfinite(v) for v in _walk(report))
        assert protocol["num_frames"] > 0
    table = (workdir / "eval" / "cross_dataset.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "(" in line]
    assert len(rows) == 3 and "in-domain" in rows[0], table
    assert {"celebdf_v2", "dfdc"} <= {word for row in rows for word in row.replace("/", " ").split()}
    assert "nan" not in table.lower()
    # The FF++ test split was scored once, for this checkpoint, with its pixel metrics.
    in_domain = json.loads((workdir / "eval" / "eval_test.json").read_text())
    assert in_domain["protocol"]["evaluation"] == "in-domain" and "pixel" in in_domain["metrics"]["all"]["all"]

    # Crops other than the training data's are refused, naming the builds there.
    build_data.build_dataset(celeb.root, data_dir, dataset="celebdf_v2", **dict(BUILD, image_size=64))
    with pytest.raises(ValueError, match="image_size=32"):
        evaluation.evaluate_checkpoint(config, str(workdir), dataset="celebdf_v2",
                                       dataset_config="as_released_frames2_size64")
    assert pipeline.open_split(config.dataset, "test").has_masks


def test_training_a_segmentation_model_on_a_split_without_masks_is_refused(dfdc, tmp_path):
    _, plain, derived = dfdc
    data_dir = str(pathlib.Path(plain.data_dir).parents[2])
    config = config_on((data_dir, plain.builder_config.name), num_train_steps=1)
    with config.unlocked():
        config.dataset.name = "dfdc"
        config.dataset.eval_split = "test"
    with pytest.raises(ValueError, match="has no pixel masks"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    with config.unlocked():
        config.dataset.config_name = derived.builder_config.name
    assert pipeline.open_split(config.dataset, "train").has_masks and not pipeline.open_split(config.dataset, "test").has_masks
