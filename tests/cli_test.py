"""The console script: routing, help, and bad settings failing before any compile."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def ffjax(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "ffjax.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_every_command():
    out = ffjax("--help")
    assert out.returncode == 0
    for command in ("train", "eval", "build-data", "predict", "convert", "demo", "bench"):
        assert command in out.stdout


def test_unknown_command_fails():
    assert ffjax("fly").returncode == 2


def test_train_with_indivisible_batch_fails_naming_the_setting(tmp_path):
    out = ffjax("train", "--config", "test", "--workdir", str(tmp_path), "--config.batch_size=12")
    assert out.returncode != 0
    assert "config.batch_size=12 must be a positive multiple of the device count" in out.stderr + out.stdout


def test_misspelt_override_is_an_error(tmp_path):
    out = ffjax("train", "--config", "test", "--workdir", str(tmp_path), "--config.bach_size=8")
    assert out.returncode != 0
    assert "bach_size" in out.stderr + out.stdout


def test_config_by_path_and_unknown_name(tmp_path):
    path = ROOT / "ffjax" / "configs" / "test.py"
    out = ffjax("train", "--config", str(path), "--workdir", str(tmp_path), "--config.batch_size=12")
    assert "config.batch_size=12 must be a positive multiple" in out.stderr + out.stdout
    out = ffjax("train", "--config", "no_such_config", "--workdir", str(tmp_path))
    assert out.returncode != 0
    assert "not a packaged config" in out.stderr and "default" in out.stderr
