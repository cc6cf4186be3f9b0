"""The console script: routing, help, and bad settings failing before any compile."""

import pathlib
import subprocess
import sys

import pytest

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


def test_a_preempted_train_exits_143_a_finished_one_0(tmp_path, monkeypatch):
    """`ffjax train && ffjax eval`, a shell loop or a Kubernetes Job must not take a run stopped
    by SIGTERM for a finished one (the SIGTERM path itself: train_e2e_test, multihost_test)."""
    from absl import flags

    from ffjax import main, train

    def stopped(config, workdir):
        raise train.Preempted(7)

    monkeypatch.setattr(train, "train_and_evaluate", stopped)
    argv = ["ffjax train", "--config", "test", "--workdir", str(tmp_path)]
    try:
        with pytest.raises(SystemExit) as exit_:
            main.run(list(argv), "train")
        assert exit_.value.code == train.PREEMPTED_EXIT_CODE == 143
        monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: {})
        with pytest.raises(SystemExit) as exit_:
            main.run(list(argv), "train")
        assert exit_.value.code in (0, None)
    finally:
        flags.FLAGS.unparse_flags()
