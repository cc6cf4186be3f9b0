"""What the benchmark derives and prints: peaks, MFU, scaling efficiency, tables, JSON rows."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from typing import Any

# Dense peak TFLOP/s per chip, and JAX devices per chip, by a substring of
# `jax.Device.device_kind` (first match wins: specific names before general ones), for the two
# precisions the bench runs. fp32 on GPUs is the TF32 tensor-core figure (XLA's default
# matmul precision there); on TPUs fp32 matmuls default to single bf16 passes, hence the
# same figure. TPU v2 and v3 chips show two devices (one per TensorCore); v4 and later one
# (megacore). Vendor data sheets; --peak_gflops (per device) overrides, and CPUs need it.
KNOWN_PEAKS: tuple[tuple[str, float, float, int], ...] = (  # key, bf16, fp32, devices per chip
    ("TPU v6 lite", 918.0, 918.0, 1),  # v6e (Trillium)
    ("TPU v5 lite", 197.0, 197.0, 1),  # v5e
    ("TPU v5p", 459.0, 459.0, 1),
    ("TPU v5", 459.0, 459.0, 1),  # v5p reports itself as "TPU v5"
    ("TPU v4", 275.0, 275.0, 1),
    ("TPU v3", 123.0, 123.0, 2),
    ("TPU v2", 45.0, 45.0, 2),
    ("B200", 2250.0, 1100.0, 1),
    ("H200", 989.0, 494.0, 1),
    ("H100 PCIe", 756.0, 378.0, 1),
    ("H100", 989.0, 494.0, 1),  # SXM
    ("A100", 312.0, 156.0, 1),
    ("L4", 121.0, 60.0, 1),
)


def peak_flops(
    device_kind: str, precision: str, override_gflops: float = 0.0, override_source: str = ""
) -> tuple[float | None, str]:
    """(peak FLOP/s of one device, where the figure came from) for the device kind.

    Args:
      device_kind: `jax.devices()[0].device_kind`.
      precision: 'fp32' or 'bf16'.
      override_gflops: a given peak per device in GFLOP/s (wins when > 0).
      override_source: where `override_gflops` came from (default: --peak_gflops).
    """
    if override_gflops > 0:
        return override_gflops * 1e9, override_source or f"--peak_gflops={override_gflops:g}"
    for key, bf16, fp32, per_chip in KNOWN_PEAKS:
        if key.lower() in device_kind.lower():
            chip = {"bf16": bf16, "fp32": fp32}[precision]
            note = f" / {per_chip} devices per chip" if per_chip > 1 else ""
            return chip / per_chip * 1e12, f"known {key} {precision} dense peak {chip:g} TFLOP/s per chip{note}"
    return None, "unknown: pass --peak_gflops"


def peaks_in_mesh(platform_name: str, devices: int) -> int:
    """How many device peaks a mesh of `devices` devices has: virtual CPU devices share one host."""
    return 1 if platform_name == "cpu" else devices


def add_derived(
    rows: list[dict], *, platform_name: str, device_kind: str, override_gflops: float = 0.0, override_source: str = ""
) -> None:
    """Adds MFU, speed-up and scaling efficiency to every row, in place.

    Scaling efficiency is throughput on n devices / (n x throughput on 1) at the same global
    batch, mode and precision. Virtual CPU devices share the host's cores, so on CPU the
    ideal is the speed-up of 1.0 (same cores, same work), not n.
    """
    base = {
        (r["model"], r["mode"], r["precision"], r["batch"], r["image_size"]): r["images_per_s"]
        for r in rows
        if r["devices"] == 1
    }
    for r in rows:
        peak, source = peak_flops(device_kind, r["precision"], override_gflops, override_source)
        peaks = peaks_in_mesh(platform_name, r["devices"])
        r["peak_flops_per_device"] = peak
        r["peak_source"] = source
        achieved = r.get("achieved_gflops_per_s")
        r["mfu"] = round(achieved * 1e9 / (peak * peaks), 4) if peak and achieved else None
        one = base.get((r["model"], r["mode"], r["precision"], r["batch"], r["image_size"]))
        r["speedup_vs_1_device"] = round(r["images_per_s"] / one, 3) if one else None
        r["scaling_efficiency"] = round(r["images_per_s"] / (r["devices"] * one), 3) if one else None


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def table(rows: Sequence[dict], name_key: str = "name") -> str:
    """The results as a Markdown table, one line per case."""
    head = ["model", "mode", "prec", "size", "batch", "dev", "ms/step", "range", "img/s", "GFLOP/img",
            "GFLOP/s", "MFU", "speedup", "scal.eff", "compile s", "cpu_util", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.get(name_key, r["model"]), r["mode"], r["precision"], r["image_size"], r["batch"], r["devices"],
            _fmt(r["ms_step_median"], ".1f"), f"{r['ms_step_min']:.0f}-{r['ms_step_max']:.0f}",
            _fmt(r["images_per_s"], ".2f"), _fmt(r.get("gflops_per_image"), ".3g"),
            _fmt(r.get("achieved_gflops_per_s"), ".1f"),
            _fmt(None if r.get("mfu") is None else 100 * r["mfu"], ".1f") + ("%" if r.get("mfu") is not None else ""),
            _fmt(r.get("speedup_vs_1_device"), ".2f"), _fmt(r.get("scaling_efficiency"), ".2f"),
            _fmt(r["compile_s"], ".1f"), _fmt(r["cpu_util"], ".2f"), _fmt(r["loadavg_before"][0], ".2f"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def input_table(result: dict, step_rows: Iterable[dict]) -> str:
    """Input frames/s beside the fastest step throughput: does loading keep up?"""
    best = {}
    for r in step_rows:
        best[r["mode"]] = max(best.get(r["mode"], 0.0), r["images_per_s"])
    lines = ["| reader | frames/s (host) | per core | frames/s (+ device put) | fastest step img/s | input / step |",
             "|---|---|---|---|---|---|"]
    for reader, mode in (("train", "train"), ("eval", "eval")):
        res = result[reader]
        feed = res.get("frames_per_s_with_device_put", res["host_frames_per_s"])
        need = best.get(mode)
        ratio = f"{feed / need:.2f}x" if need else "-"
        lines.append(f"| {reader} | {res['host_frames_per_s']:.1f} | {_fmt(res.get('frames_per_s_per_core'), '.1f')} | "
                     f"{_fmt(res.get('frames_per_s_with_device_put'), '.1f')} | {_fmt(need, '.2f')} | {ratio} |")
    return "\n".join(lines)


def torch_reference_row(row: dict, name: str, fwd_gflops: float | None) -> dict:
    """A row in the PyTorch reference suite's JSON-lines schema (see its summarize.py).

    Only single-device fp32 rows are labelled framework 'jax' (the pair summarize.py puts
    beside PyTorch); others get a suffix so they are listed but never averaged into it.
    """
    framework = "jax"
    if row["devices"] > 1:
        framework += f"_{row['devices']}dev"
    if row["precision"] != "fp32":
        framework += f"_{row['precision']}"
    return {
        "framework": framework,
        "model": name,
        "mode": "infer" if row["mode"] == "eval" else row["mode"],
        "size": row["image_size"],
        "batch": row["batch"],
        "threads": row["threads"],
        "devices": row["devices"],
        "precision": row["precision"],
        "params": row["params"],
        "ms_step_median": row["ms_step_median"],
        "ms_step_min": row["ms_step_min"],
        "images_per_s": row["images_per_s"],
        "gflops_fwd_per_image": fwd_gflops,
        "gflops_step_per_image": row["gflops_per_image"],
        "gflops_source": "XLA cost_analysis (all ops, not only conv/matmul)",
        "achieved_gflops_per_s": row["achieved_gflops_per_s"],
        "compile_s": row["compile_s"],
        "cpu_util": row["cpu_util"],
        "loadavg_before": row["loadavg_before"],
        "loadavg_after": row["loadavg_after"],
        "env": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "XLA_FLAGS", "OMP_NUM_THREADS", "GLIBC_TUNABLES") if os.environ.get(k)},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment() -> dict[str, Any]:
    """Device kind, platform, versions and the settings that change timings."""
    import flax
    import jax
    import jaxlib
    import optax

    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "local_devices": jax.local_device_count(),
        "process_count": jax.process_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "host_cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ[k] for k in ("XLA_FLAGS", "OMP_WAIT_POLICY", "JAX_PLATFORMS", "GLIBC_TUNABLES") if os.environ.get(k)},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: str, payload: dict) -> None:
    """Writes the results file, creating its folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)


def append_jsonl(path: str, rows: Iterable[dict]) -> None:
    """Appends one JSON object per line (the PyTorch reference suite's results.jsonl)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
