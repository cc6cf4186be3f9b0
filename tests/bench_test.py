"""`ffjax bench`: a smoke run on the tiny config (no timing asserted) and the pure helpers."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from ffjax.bench import cli, profile, report, suites
from tests import compilation_cache

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_CONFIG = "test"  # a packaged config, by name
TORCH_KEYS = {"framework", "model", "mode", "size", "batch", "threads", "ms_step_median", "gflops_step_per_image"}


def test_smoke_run_on_tiny_config_writes_every_field(tiny_dataset, tmp_path):
    data_dir, config_name = tiny_dataset
    out, jsonl = tmp_path / "bench.json", tmp_path / "results.jsonl"
    payload = cli.run([
        "ffjax bench", f"--config={TEST_CONFIG}", f"--config.dataset.data_dir={data_dir}",
        f"--config.dataset.config_name={config_name}", "--image_size=32", "--devices=1,2", "--batch_sizes=4",
        "--warmup=1", "--iters=2", "--peak_gflops=100", "--pipeline=on", "--pipeline_batches=2",
        "--pipeline_workers=0", f"--out={out}", f"--jsonl={jsonl}",
    ])
    written = json.loads(out.read_text())
    assert written["rows"] == json.loads(json.dumps(payload["rows"], default=str))

    env = written["environment"]
    assert env["jax"] == jax.__version__ and env["device_kind"] == jax.devices()[0].device_kind
    assert written["settings"]["devices"] == ["1", "2"] and written["settings"]["iters"] == 2
    assert written["configs"]["unet"]["model"] == "unet"

    rows = {(r["mode"], r["devices"]): r for r in written["rows"]}
    assert sorted(rows) == [("eval", 1), ("eval", 2), ("train", 1), ("train", 2)]
    for r in rows.values():
        assert r["batch"] == 4 and r["image_size"] == 32 and r["precision"] == "fp32" and r["dtype"] == "float32"
        assert len(r["ms_steps"]) == 2 and r["ms_step_min"] <= r["ms_step_median"] <= r["ms_step_max"]
        assert r["images_per_s"] == pytest.approx(4 / (r["ms_step_median"] / 1e3), rel=1e-3)
        assert r["gflops_per_image"] > 0 and r["mfu"] > 0 and r["peak_source"] == "--peak_gflops=100"
        assert r["params"] == rows[("train", 1)]["params"] > 0
        assert 0 <= r["cpu_util"] and len(r["loadavg_before"]) == 3 and r["threads"] >= 1
    for mode in ("train", "eval"):
        one, two = rows[(mode, 1)], rows[(mode, 2)]
        assert one["scaling_efficiency"] == 1.0
        assert two["scaling_efficiency"] == pytest.approx(two["images_per_s"] / (2 * one["images_per_s"]), rel=1e-2)
        # FLOPs are summed over the devices' programs: the same work whatever the split
        # (replicated optimizer updates are counted per device, a tiny share).
        assert two["flops_per_step"] == pytest.approx(one["flops_per_step"], rel=0.1)
    # A train step is forward + backward (~3x forward) + optimizer.
    assert 2 < rows[("train", 1)]["gflops_per_image"] / rows[("eval", 1)]["gflops_per_image"] < 5

    pipe = written["input_pipeline"]
    assert pipe["per_process_batch"] == 4 and pipe["num_workers"] == 0
    for reader in ("train", "eval"):
        assert pipe[reader]["frames"] == 8 and pipe[reader]["host_frames_per_s"] > 0
        assert pipe[reader]["frames_per_s_with_device_put"] > 0
        assert pipe[reader]["frames_per_s_per_core"] > 0
    # In-process training reader: grain's threads may use every core.
    train = pipe["train"]
    assert train["frames_per_s_per_core"] == pytest.approx(train["host_frames_per_s"] / train["cores"], rel=0.01)
    assert train["cores"] == os.cpu_count() and pipe["eval"]["cores"] == 1  # the eval figure: one thread

    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 4 and all(TORCH_KEYS <= set(line) for line in lines)
    assert {(x["framework"], x["mode"]) for x in lines} == {
        ("jax", "train"), ("jax", "infer"), ("jax_2dev", "train"), ("jax_2dev", "infer")
    }
    infer = next(x for x in lines if x["framework"] == "jax" and x["mode"] == "infer")
    assert infer["gflops_fwd_per_image"] == infer["gflops_step_per_image"]


def test_cases_that_do_not_divide_are_skipped_not_compiled(tmp_path):
    payload = cli.run([
        "ffjax bench", f"--config={TEST_CONFIG}", "--devices=2", "--batch_sizes=3", "--modes=eval",
        "--pipeline=off", f"--out={tmp_path / 'b.json'}",
    ])
    assert payload["rows"] == []
    assert [s["reason"] for s in payload["skipped"]] == ["batch 3 does not divide over 2 devices"]


def test_missing_dataset_fails_before_compiling(tmp_path):
    with pytest.raises(FileNotFoundError, match="ffjax build-data"):
        cli.run([
            "ffjax bench", f"--config={TEST_CONFIG}", f"--config.dataset.data_dir={tmp_path}", "--devices=1",
            "--pipeline=on", f"--out={tmp_path / 'b.json'}",
        ])
    assert not (tmp_path / "b.json").exists()


def test_bad_flags_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--devices"):
        cli.run(["ffjax bench", f"--config={TEST_CONFIG}", "--devices=1,64", "--pipeline=off"])
    with pytest.raises(ValueError, match="--modes"):
        cli.run(["ffjax bench", f"--config={TEST_CONFIG}", "--modes=infer", "--devices=1", "--pipeline=off"])
    with pytest.raises(ValueError, match="--suite or --config"):
        cli.run(["ffjax bench", f"--config={TEST_CONFIG}", "--suite=torch_reference"])
    with pytest.raises(ValueError, match="--models"):
        cli.run(["ffjax bench", "--suite=torch_reference", "--models=resnet50"])


def test_cli_in_a_fresh_process_creates_the_virtual_devices_it_needs(tmp_path):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(JAX_PLATFORMS="cpu", **compilation_cache.settings())  # conftest's cache
    out = tmp_path / "b.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ffjax.cli", "bench", f"--config={TEST_CONFIG}", "--image_size=32", "--devices=4",
         "--batch_sizes=4", "--modes=eval", "--warmup=0", "--iters=1", "--pipeline=off", "--profile_steps=2",
         f"--out={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["environment"]["local_devices"] == 4
    assert "--xla_force_host_platform_device_count=4" in written["environment"]["env"]["XLA_FLAGS"]
    assert [(r["mode"], r["devices"]) for r in written["rows"]] == [("eval", 4)]
    assert "| unet | eval | fp32 | 32 | 4 | 4 |" in proc.stdout
    summary = written["rows"][0]["profile"]
    assert "conv/matmul" in summary["by_kind"] and "| conv/matmul |" in proc.stdout
    assert os.listdir(tmp_path / "b_traces" / "unet_eval_fp32_b4_d4")


def test_profile_attributes_trace_time_to_hlo_operations(tmp_path):
    import jax.numpy as jnp

    x = jnp.ones((128, 256))
    w = jnp.ones((256, 256))
    compiled = jax.jit(lambda x, w: jnp.tanh(x @ w).sum(axis=0)).lower(x, w).compile()
    profile.trace_steps(lambda n: (jax.block_until_ready(compiled(x, w)), n + 1)[1], 0, 3, str(tmp_path))
    summary = profile.summarize_trace(str(tmp_path), compiled.as_text(), steps=3)
    hlo = profile.parse_hlo(compiled.as_text())
    assert summary["op_thread_ms_per_step"] > 0
    assert sum(v["share"] for v in summary["by_kind"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "conv/matmul" in summary["by_kind"]
    assert summary["top_ops"] and all(r["op"] in hlo for r in summary["top_ops"])
    assert all(r["calls_per_step"] >= 1 for r in summary["top_ops"])
    with pytest.raises(FileNotFoundError, match="xplane"):
        profile.summarize_trace(str(tmp_path / "none"), compiled.as_text(), steps=1)


def test_help_lists_the_flags_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["ffjax bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--suite" in out and "--peak_gflops" in out and "--profile_steps" in out


def test_device_counts_default_to_powers_of_two_and_all():
    assert cli._device_counts([], 8) == [1, 2, 4, 8]
    assert cli._device_counts([], 6) == [1, 2, 4, 6]
    assert cli._device_counts([], 1) == [1]
    assert cli._device_counts([1, 3], 4) == [1, 3]


def test_request_cpu_devices_only_before_jax_starts(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    cli.request_cpu_devices(8, explicit=False)  # jax is imported here: nothing may change
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
    monkeypatch.delitem(sys.modules, "jax")
    cli.request_cpu_devices(8, explicit=False)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=8"
    cli.request_cpu_devices(4, explicit=False)  # a count already there is kept ...
    assert os.environ["XLA_FLAGS"].endswith("count=8")
    cli.request_cpu_devices(4, explicit=True)  # ... unless named explicitly
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=4"


def test_peak_flops_by_device_kind():
    assert report.peak_flops("NVIDIA H100 80GB HBM3", "bf16")[0] == 989e12
    assert report.peak_flops("TPU v5 lite", "bf16")[0] == 197e12  # not v5p's figure
    assert report.peak_flops("TPU v5", "bf16")[0] == 459e12
    assert report.peak_flops("cpu", "fp32") == (None, "unknown: pass --peak_gflops")
    assert report.peak_flops("TPU v4", "fp32", 175.0) == (175e9, "--peak_gflops=175")
    # Per device: a TPU v3 chip is two devices; the PCIe H100 is not the SXM part.
    assert report.peak_flops("TPU v3", "bf16")[0] == 61.5e12
    assert report.peak_flops("TPU v2", "bf16")[0] == 22.5e12
    assert report.peak_flops("NVIDIA H100 PCIe", "bf16")[0] == 756e12
    assert report.peak_flops("NVIDIA H200", "fp32")[0] == 494e12
    for kind in ("NVIDIA B200", "TPU v5p", "TPU v6 lite", "NVIDIA L4"):
        assert report.peak_flops(kind, "bf16")[0] is not None, kind


def test_derived_metrics_cpu_shares_one_peak_accelerators_have_one_each():
    def row(devices, ips):
        return dict(model="m", mode="train", precision="fp32", batch=8, image_size=32, devices=devices,
                    images_per_s=ips, achieved_gflops_per_s=ips * 10.0)

    rows = [row(1, 10.0), row(4, 20.0)]
    report.add_derived(rows, platform_name="cpu", device_kind="cpu", override_gflops=1000.0)
    assert [r["scaling_efficiency"] for r in rows] == [1.0, 0.5]
    assert [r["speedup_vs_1_device"] for r in rows] == [1.0, 2.0]
    assert [r["mfu"] for r in rows] == [0.1, 0.2]
    rows = [row(1, 10.0), row(4, 20.0)]
    report.add_derived(rows, platform_name="tpu", device_kind="TPU v4")
    assert rows[1]["mfu"] == pytest.approx(200e9 / (4 * 275e12), abs=1e-4)


def test_torch_reference_suite_matches_the_pytorch_side():
    entries = {e.name: (e, c) for e, c in suites.suite_configs("torch_reference")}
    assert sorted(entries) == ["unet_resnet34", "unet_xception", "xception_cls"]
    (xe, xc), (ue, uc), (re_, rc) = entries["xception_cls"], entries["unet_xception"], entries["unet_resnet34"]
    assert (xc.model, xe.image_size, xc.model_kwargs.num_outputs) == ("xception", 299, 1)
    assert (uc.model, ue.image_size) == ("unet_xception", 256)
    assert (rc.model, re_.image_size) == ("unet_resnet34", 256)
    for _, c in entries.values():
        assert c.optimizer == "adamw" and c.loss.dice_weight == 0.0 and c.grad_clip_norm == 0.0
        assert c.weight_decay == 0.01 and c.learning_rate == 1e-3 and c.schedule == "constant"
    row = report.torch_reference_row(
        dict(devices=1, precision="fp32", mode="eval", image_size=299, batch=8, threads=2, params=1, ms_step_median=2.0,
             ms_step_min=1.0, images_per_s=4000.0, gflops_per_image=1.0, achieved_gflops_per_s=4.0, compile_s=1.0,
             cpu_util=1.0, loadavg_before=[0, 0, 0], loadavg_after=[0, 0, 0]),
        "xception_cls", 1.0,
    )
    assert TORCH_KEYS <= set(row) and (row["framework"], row["mode"]) == ("jax", "infer")


def test_accelerator_suite_is_documented_and_runs_tiny_on_cpu(tmp_path):
    """`--suite accelerator` (one GPU in minutes; on CPU the batch stays 8: no memory limit)."""
    help_text = subprocess.run([sys.executable, "-m", "ffjax.cli", "bench", "--help"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120).stdout
    help_text = " ".join(help_text.split())
    assert "accelerator = xception_cls 299, unet_xception 256 and unet_resnet34 256 in bf16 and fp32" in help_text
    assert "ffjax bench --suite accelerator" in help_text
    out = tmp_path / "accel.json"
    payload = cli.run([
        "ffjax bench", "--suite=accelerator", "--models=unet_resnet34", "--image_size=32", "--modes=eval",
        '--model_kwargs={"encoder_width": 0.125, "decoder_channels": [16, 8, 8, 8, 8], "stage_blocks": [1, 1, 1, 1]}',
        "--devices=1", "--iters=1", "--warmup=0", "--pipeline=off", f"--out={out}",
    ])
    rows = payload["rows"]
    assert [(r["precision"], r["mode"]) for r in rows] == [("bf16", "eval"), ("fp32", "eval")]
    for r in rows:
        assert r["batch"] == 8 and r["batch_fit"].startswith("the suite's batch")
        assert r["compile_s"] > 0 and "peak_device_bytes" in r and r["images_per_s"] > 0
    assert json.loads(out.read_text())["rows"][0]["dtype"] == "bfloat16"


def test_pipeline_stages_times_every_stage_of_the_config(tiny_dataset, tmp_path):
    data_dir, config_name = tiny_dataset
    out = tmp_path / "stages.json"
    payload = cli.run(["ffjax bench", f"--config={TEST_CONFIG}", f"--config.dataset.data_dir={data_dir}",
                       f"--config.dataset.config_name={config_name}", "--config.augment.jpeg_prob=0.3",
                       "--config.augment.blur_prob=0.1", "--pipeline_stages", f"--out={out}"])
    result = json.loads(out.read_text())["pipeline_stages"]
    assert result == json.loads(json.dumps(payload["pipeline_stages"])) and result["image_size"] == 32
    stages = {r["stage"]: r for r in result["stages"]}
    assert stages["augment on the host: JPEG re-compression"]["applied_per_frame"] == 0.3
    assert result["device_augment_us_per_frame"] > 0  # flip, scale, blur and colour: in the step
    assert all(r["us_per_frame"] > 0 for r in result["stages"] if not r["stage"].startswith("to_example"))
    total = sum(r["expected_us_per_frame"] for r in result["stages"])
    assert result["total_us_per_frame"] == pytest.approx(total, abs=0.5)
    assert result["frames_per_s_per_core"] == pytest.approx(1e6 / total, rel=0.01)


def test_augment_grid_draws_stored_and_augmented_crops(tiny_dataset, tmp_path):
    import cv2

    data_dir, config_name = tiny_dataset
    out = tmp_path / "grid.png"
    cli.run(["ffjax bench", f"--config={TEST_CONFIG}", f"--config.dataset.data_dir={data_dir}",
             f"--config.dataset.config_name={config_name}", "--augment_grid", f"--out={out}"])
    grid = cv2.imread(str(out))
    # 4 rows x 5 panels of 128 px, 4 px apart.
    assert grid.shape == (4 * 128 + 3 * 4, 5 * 128 + 4 * 4, 3)
    panels = [grid[:128, c * 132: c * 132 + 128] for c in range(5)]
    assert any(not np.array_equal(panels[0], p) for p in panels[1:])  # augmented differs from stored
    assert np.any(np.all(grid == (40, 40, 255), axis=-1))  # a red mask outline (BGR)


def test_fed_step_times_the_step_fed_by_the_pipeline_and_on_a_resident_batch(tiny_dataset, tmp_path):
    data_dir, config_name = tiny_dataset
    out = tmp_path / "fed.json"
    cli.run(["ffjax bench", f"--config={TEST_CONFIG}", f"--config.dataset.data_dir={data_dir}",
             f"--config.dataset.config_name={config_name}", "--config.dataset.num_workers=1", "--fed_step",
             "--batch_sizes=8", "--devices=2", "--iters=1", f"--out={out}"])
    result = json.loads(out.read_text())["fed_step"]
    assert result["devices"] == 2 and result["batch"] == 8 and result["image_size"] == 32 and len(result["rounds"]) == 3
    assert result["resident_s_per_step"] > 0 and result["fed_s_per_step"] > 0
    assert result["slowdown"] == pytest.approx(result["fed_s_per_step"] / result["resident_s_per_step"] - 1, abs=1e-3)
