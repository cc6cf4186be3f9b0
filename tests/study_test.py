"""`ffjax study` on the tiny dataset: cells trained and scored, tables and plots, reruns skip."""

import json

import pytest

from ffjax import study as study_lib


def tiny_study(tiny_dataset):
    data_dir, config_name = tiny_dataset
    overrides = {"dataset.data_dir": data_dir, "dataset.config_name": config_name, "num_train_steps": 3,
                 "eval_every_steps": 3, "checkpoint_every_steps": 3, "log_every_steps": 3}
    cells = [
        {"name": "unet"},
        {"name": "resnet34_cls", "model": "resnet34", "model_kwargs": {"width": 1 / 16, "stage_blocks": [1, 1, 1, 1]}},
        {"name": "unet_on_Face2Face", "dataset.train_methods": ["Face2Face"]},
        {"name": "two_heads", "model": "unet_xception_2head",
         "model_kwargs": {"encoder_width": 1 / 16, "middle_blocks": 1, "decoder_channels": [16, 8, 8, 4, 4]}},
    ]
    return {"name": "tiny_test", "base": "test", "overrides": overrides, "test_split": "test", "cells": cells}


def test_study_trains_scores_and_reports_every_cell_then_skips_them(tiny_dataset, tmp_path):
    study = tiny_study(tiny_dataset)
    first = study_lib.run_study(study, str(tmp_path), share=(0, 1))
    assert first["ran"] == ["unet", "resnet34_cls", "unet_on_Face2Face", "two_heads"] and not first["missing"]
    rows = {r["name"]: r for r in json.loads((tmp_path / "study.json").read_text())["rows"]}
    assert rows["resnet34_cls"]["task"] == "classification" and rows["resnet34_cls"]["pixel_iou"] is None
    assert rows["unet"]["task"] == "segmentation" and 0 <= rows["unet"]["pixel_iou"] <= 1
    assert rows["two_heads"]["task"] == "segmentation_classification" and 0 <= rows["two_heads"]["pixel_iou"] <= 1
    assert rows["unet_on_Face2Face"]["train_methods"] == ["Face2Face"] and rows["unet"]["train_methods"] == "all"
    for row in rows.values():
        assert row["params"] > 0 and row["gflops_per_image"] > 0 and row["eval_frames_per_s"] > 0
        assert set(row["per_method"]) == {"Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"}
        assert row["roc"]["all"]["fpr"][0] == 0 and row["roc"]["all"]["tpr"][-1] == pytest.approx(1)
    text = (tmp_path / "study.md").read_text()
    assert "| unet_on_Face2Face |" in text and "Cross-manipulation" in text and "| Face2Face | " in text
    for name in ("roc.png", "iou_vs_gflops.png", "cross_manipulation.png", "cells/unet/predictions.png",
                 "cells/two_heads/predictions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert rows["resnet34_cls"]["prediction_grid"] is None and not (tmp_path / "cells/resnet34_cls/predictions.png").exists()
    assert "[unet](cells/unet/predictions.png)" in text
    # A rerun trains nothing; a changed cell is trained again.
    again = study_lib.run_study(study, str(tmp_path))
    assert again["ran"] == [] and again["skipped"] == ["unet", "resnet34_cls", "unet_on_Face2Face", "two_heads"]
    study["cells"][0]["loss.dice_weight"] = 0.0
    changed = study_lib.run_study(study, str(tmp_path), share=(0, 2))
    assert changed["ran"] == ["unet"] and changed["skipped"] == ["unet_on_Face2Face"]


def test_study_errors_name_the_cell_and_the_field(tiny_dataset):
    study = tiny_study(tiny_dataset)
    study["cells"].append({"name": "typo", "loss.dice_wieght": 0.0})
    with pytest.raises(ValueError, match="typo.*loss.dice_wieght"):
        study_lib.cell_configs(study)
    study["cells"][-1] = {"name": "unet"}
    with pytest.raises(ValueError, match="unique `name`"):
        study_lib.cell_configs(study)
    with pytest.raises(ValueError, match="i/n"):
        study_lib.parse_share("2")
    with pytest.raises(FileNotFoundError, match="paper, tiny"):
        study_lib.load_study("no_such_study")
    assert len(study_lib.cell_configs(study_lib.load_study("paper"))) == 23


def test_study_command_line_help_and_usage(capsys):
    with pytest.raises(SystemExit) as done:
        study_lib.run(["ffjax study", "--help"])
    assert done.value.code == 0 and "--cells" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="usage: ffjax study"):
        study_lib.run(["ffjax study", "--study", "tiny"])
