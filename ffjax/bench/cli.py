"""`ffjax bench`: flags, the list of cases, and the run that measures and reports them.

This module imports no JAX at the top: asking for N virtual CPU devices only works if
XLA_FLAGS is set before JAX starts, so JAX, and every ffjax module that imports it
(`steps`, `input`, `report`, `profile`, `sharding`, `data.pipeline`), is imported inside
the functions, after the flags are read.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

from absl import flags
from ml_collections import config_flags

from ffjax import bench, configs
from ffjax.bench import suites

_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def _define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "A packaged config (name) or a config file; overrides as in `ffjax train`.", flag_values=fv, sys_argv=argv
    )
    flags.DEFINE_enum("suite", "", ["", "accelerator", "torch_reference"], "Named case set instead of --config: "
                      "accelerator = xception_cls 299, unet_xception 256 and unet_resnet34 256 in bf16 and fp32, train "
                      "and eval, each at the largest power-of-two batch whose step fits in 70 percent of device memory "
                      "(compile time, peak device memory, MFU; one GPU in a few minutes; on CPU the batch is 8); "
                      "torch_reference = the PyTorch CPU reference suite's models, batch, sizes, loss and optimizer.", flag_values=fv)
    flags.DEFINE_list("models", [], "With --suite: only these suite models (e.g. xception_cls).", flag_values=fv)
    flags.DEFINE_string("name", "", "Row name for --config runs (default: config.model).", flag_values=fv)
    flags.DEFINE_string("model_kwargs", "", 'JSON merged into config.model_kwargs, e.g. \'{"middle_blocks": 4}\'.', flag_values=fv)
    flags.DEFINE_list("modes", [], "train and/or eval (default: both).", flag_values=fv)
    flags.DEFINE_list("devices", [], "Device counts (meshes over the first n local devices); default 1, 2, 4, ... all.", flag_values=fv)
    flags.DEFINE_list("batch_sizes", [], "Global batch sizes (default: config.batch_size).", flag_values=fv)
    flags.DEFINE_list("precisions", [], "fp32 and/or bf16 compute (parameters stay fp32); default fp32.", flag_values=fv)
    flags.DEFINE_integer("image_size", 256, "Square input side (a suite's own sizes unless given).", flag_values=fv)
    flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.", flag_values=fv)
    flags.DEFINE_integer("iters", 5, "Timed steps per case (the median is reported).", flag_values=fv)
    flags.DEFINE_integer("num_cpu_devices", 0, "Virtual CPU devices to create (default: the largest of --devices).", flag_values=fv)
    flags.DEFINE_float("peak_gflops", 0.0, "Peak GFLOP/s of one chip (of the whole host on CPU) for MFU; "
                       "default: known figure for the device kind, else --measure_peak's.", flag_values=fv)
    flags.DEFINE_bool("measure_peak", False, "Also measure XLA's fp32 2048^2 matmul GFLOP/s (the MFU peak if none is known).", flag_values=fv)
    flags.DEFINE_enum("pipeline", "auto", ["auto", "on", "off"], "Input pipeline frames/s from the config's built dataset "
                      "(auto: when it is built).", flag_values=fv)
    flags.DEFINE_integer("pipeline_batches", 10, "Timed batches per reader in the input pipeline measurement.", flag_values=fv)
    flags.DEFINE_integer("pipeline_workers", -1, "grain workers for the input measurement (-1: config.dataset.num_workers).", flag_values=fv)
    flags.DEFINE_bool("stop_flag", False, "Train steps carry the multi-process preemption flag (one int32 per row, "
                      "reduced in the step), to measure what agreeing on a stop costs.", flag_values=fv)
    flags.DEFINE_integer("profile_steps", 0, "Profile this many extra steps per case and print where the time goes.", flag_values=fv)
    flags.DEFINE_string("trace_dir", "", "Profiler traces go to <trace_dir>/<case> (default: beside --out).", flag_values=fv)
    flags.DEFINE_string("out", "", "JSON results file (default: a new file under the temp folder).", flag_values=fv)
    flags.DEFINE_bool("face_detection", False, "Only time and score face detection on generated 1920x1080 video "
                      "(dlib every frame vs the tracker), with 6 faces of 40-320 px and with one 40 px face.", flag_values=fv)
    flags.DEFINE_bool("derived_masks", False, "Only measure derived-mask IoU with the exact manipulated region "
                      "on a generated x264 tree, per compression, method and threshold.", flag_values=fv)
    flags.DEFINE_bool("pipeline_stages", False, "Only time each input stage of a training frame (read, decode, each "
                      "augmentation, stacking, device copy) on one core, from the config's built dataset.", flag_values=fv)
    flags.DEFINE_bool("augment_grid", False, "Only draw what the model is fed: a PNG grid (--out) of training crops "
                      "with their masks outlined, stored and augmented as the training reader does.", flag_values=fv)
    flags.DEFINE_bool("fed_step", False, "Only compare the training step fed by the real pipeline (grain workers) "
                      "with the same step on a device-resident batch: the config's model and dataset, the first of "
                      "--batch_sizes and --devices, --iters steps per round.", flag_values=fv)
    flags.DEFINE_integer("keyframe_every", 50, "--face_detection: the tracker's full-detection interval.", flag_values=fv)
    flags.DEFINE_string("jsonl", "", "Also append rows in the PyTorch reference schema to this results.jsonl.", flag_values=fv)
    return fv


def _ints(values: list[str], flag: str) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--{flag}={','.join(values)}: expected comma-separated integers.") from None
    if any(v < 1 for v in out):
        raise ValueError(f"--{flag}={','.join(values)}: every value must be >= 1.")
    return out


def request_cpu_devices(count: int, explicit: bool) -> None:
    """Asks XLA for `count` virtual CPU devices, if JAX has not started yet.

    Args:
      count: devices wanted.
      explicit: the user named the count (--num_cpu_devices): replace any count already in
        XLA_FLAGS instead of keeping it.
    """
    if count <= 1 or "jax" in sys.modules:
        return
    current = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_FLAG in current:
        if not explicit:
            return
        current = re.sub(rf"{_DEVICE_FLAG}=\d+", "", current)
    os.environ["XLA_FLAGS"] = " ".join(current.split() + [f"{_DEVICE_FLAG}={count}"])


def _device_counts(requested: list[int], available: int) -> list[int]:
    if not requested:
        counts = [1 << k for k in range(available.bit_length()) if (1 << k) <= available]
        return counts + ([available] if counts[-1] != available else [])
    too_many = [n for n in requested if n > available]
    if too_many:
        raise ValueError(
            f"--devices={','.join(map(str, requested))}: only {available} local devices are visible. On CPU, start "
            f"a fresh process with --num_cpu_devices={max(requested)} (or set XLA_FLAGS={_DEVICE_FLAG}={max(requested)} "
            "before JAX is imported)."
        )
    return requested


def _plan(fv: flags.FlagValues) -> list[dict[str, Any]]:
    """The models to run: name, config, image size, and default batch/mode/precision lists."""
    if fv.suite:
        if fv["config"].present:
            raise ValueError("Give either --suite or --config, not both.")
        entries = suites.suite_configs(fv.suite)
        if fv.models:
            unknown = sorted(set(fv.models) - {e.name for e, _ in entries})
            if unknown:
                raise ValueError(f"--models: {unknown} are not in suite {fv.suite} ({[e.name for e, _ in entries]}).")
            entries = [(e, c) for e, c in entries if e.name in fv.models]
        spec = suites.SUITES[fv.suite]
        plans = [dict(name=e.name, config=c, image_size=e.image_size, batch_sizes=list(spec["batch_sizes"]),
                      modes=list(spec["modes"]), precisions=list(spec["precisions"])) for e, c in entries]
    else:
        if fv.config is None:
            raise ValueError(f"Give --config=<{'|'.join(configs.names())}|file.py> (or --suite=torch_reference).")
        config = fv.config
        plans = [dict(name=fv.name or config.model, config=config, image_size=fv.image_size,
                      batch_sizes=[config.batch_size], modes=["train", "eval"], precisions=["fp32"])]
    if fv.model_kwargs:
        try:
            extra = json.loads(fv.model_kwargs)
        except json.JSONDecodeError as e:
            raise ValueError(f"--model_kwargs={fv.model_kwargs!r} is not JSON: {e}") from None
        for p in plans:
            suites.apply_overrides(p["config"], tuple((f"model_kwargs.{k}", v) for k, v in extra.items()))
    for p in plans:
        if fv["image_size"].present:
            p["image_size"] = fv.image_size
        if fv.batch_sizes:
            p["batch_sizes"] = _ints(fv.batch_sizes, "batch_sizes")
        if fv.modes:
            p["modes"] = list(fv.modes)
        if fv.precisions:
            p["precisions"] = list(fv.precisions)
    return plans


def _print(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def _measure_steps(
    plans: list[dict], counts: list[int], warmup: int, iters: int, profile_steps: int = 0, trace_dir: str = "",
    stop_flag: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Every (precision, batch, device count, mode) of every plan: rows, and cases skipped."""
    from ffjax.bench import profile, steps  # import JAX: after the flags (module docstring)

    rows, skipped, fitted = [], [], {}
    for p in plans:
        for precision, batch, devices, mode in itertools.product(p["precisions"], p["batch_sizes"], counts, p["modes"]):
            fit_note = None
            if batch == "fit":
                # Fitted once per model, precision and device count on the train step (the
                # larger of the two), and used for eval too.
                key = (p["name"], precision, devices)
                if key not in fitted:
                    _print(f"[bench] {p['name']} {precision} on {devices} device(s): fitting the batch to device memory ...")
                    probe = steps.Case(mode="train", devices=devices, batch=8 * devices, precision=precision, image_size=p["image_size"])
                    fitted[key] = steps.fit_batch(p["config"], probe)
                batch, fit_note = fitted[key]
            case = steps.Case(mode=mode, devices=devices, batch=batch, precision=precision, image_size=p["image_size"])
            if batch % devices:
                skipped.append({"name": p["name"], **vars(case), "reason": f"batch {batch} does not divide over {devices} devices"})
                continue
            _print(f"[bench] {p['name']} {mode} {precision} batch {batch} on {devices} device(s), {p['image_size']} px ...")
            label = f"{p['name']}_{mode}_{precision}_b{batch}_d{devices}"
            row = {"name": p["name"], **steps.measure(
                p["config"], case, warmup=warmup, iters=iters, profile_steps=profile_steps,
                trace_dir=os.path.join(trace_dir, label) if trace_dir else "", stop_flag=stop_flag,
            )}
            if fit_note:
                row["batch_fit"] = fit_note
            _print(f"[bench]   {row['ms_step_median']:.1f} ms/step, {row['images_per_s']:.2f} img/s "
                   f"(compile {row['compile_s']:.1f} s, cpu_util {row['cpu_util']:.2f}, load {row['loadavg_before'][0]:.2f})")
            if "profile" in row:
                print(profile.format_summary(row["profile"], label) + "\n")
            rows.append(row)
    return rows, skipped


def _measure_input(plan: dict, counts: list[int], num_batches: int, workers: int) -> dict:
    """Input frames/s for the first plan's config and batch, put on the largest mesh it divides."""
    from ffjax import sharding  # imports JAX: after the flags (module docstring)
    from ffjax.bench import input as input_bench  # imports JAX: after the flags

    batch = plan["batch_sizes"][0]
    devices = max(n for n in counts if batch % n == 0) if any(batch % n == 0 for n in counts) else 1
    return input_bench.measure_input(
        plan["config"], batch=batch, num_batches=num_batches, mesh=sharding.make_mesh(devices),
        num_workers=None if workers < 0 else workers,
    )


def _write(fv: flags.FlagValues, argv: list[str], key: str, result: Any, text: str, stem: str) -> dict[str, Any]:
    """Writes a single-measurement mode's JSON (`--out`, or a new file named after `stem`),
    prints its table and returns the payload."""
    from ffjax.bench import report  # imports JAX: after the flags

    out = fv.out or os.path.join(tempfile.gettempdir(), "ffjax_bench", time.strftime(f"{stem}_%Y%m%dT%H%M%S.json"))
    payload = {"environment": report.environment(), "argv": argv, key: result, "out": out}
    report.write_json(out, payload)
    print(text)
    _print(f"[bench] results: {out}")
    return payload


def _face_detection(fv: flags.FlagValues, argv: list[str]) -> dict[str, Any]:
    """`--face_detection`: dlib vs the tracker on generated full-HD clips; table and JSON."""
    from ffjax.bench import faces as faces_bench  # imports no JAX, but dlib and the subjects: only here

    _print("[bench] face detection on generated 1920x1080 clips ...")
    results = {
        # Two whole keyframe intervals, so the full detections are amortised as in a long video.
        "six_faces": faces_bench.measure(num_frames=2 * fv.keyframe_every, keyframe_every=fv.keyframe_every),
        "one_face": faces_bench.measure(num_frames=2 * fv.keyframe_every, keyframe_every=fv.keyframe_every, widths=(40,)),
    }
    text = "\n".join(f"{name}: " + faces_bench.table(result) + "\n" for name, result in results.items())
    return _write(fv, argv, "face_detection", results, text, "faces")


def _derived_masks(fv: flags.FlagValues, argv: list[str]) -> dict[str, Any]:
    """`--derived_masks`: derived-mask IoU by compression, method and threshold; table and JSON."""
    from ffjax.bench import derived_masks  # imports no JAX, but dlib and the generator: only here

    _print("[bench] derived masks on a generated tree (x264 c23/c40, each video on its own) ...")
    result = derived_masks.measure()
    text = derived_masks.table(result) + f"\n(bold: the builder's threshold for that compression; {result['frames']} fake frames)"
    return _write(fv, argv, "derived_masks", result, text, "derived_masks")


def _pipeline_stages(fv: flags.FlagValues, argv: list[str]) -> dict[str, Any]:
    """`--pipeline_stages`: host microseconds per training frame, stage by stage; table and JSON."""
    from ffjax.bench import pipeline_stages  # imports JAX: after the flags (module docstring)

    if fv.config is None:
        raise SystemExit("ffjax bench --pipeline_stages: give --config (its dataset is read).")
    _print("[bench] input stages of a training frame, one core ...")
    result = pipeline_stages.measure_stages(fv.config)
    return _write(fv, argv, "pipeline_stages", result, pipeline_stages.stages_table(result), "stages")


def _augment_grid(fv: flags.FlagValues, argv: list[str]) -> dict[str, Any]:
    """`--augment_grid`: a PNG of crops and masks before and after augmentation."""
    from ffjax.bench import augment_grid  # reads the dataset (grain, TFDS): only here

    if fv.config is None:
        raise SystemExit("ffjax bench --augment_grid: give --config (its dataset and augmentations are used).")
    out = fv.out or os.path.join(tempfile.gettempdir(), "ffjax_bench", time.strftime("augment_grid_%Y%m%dT%H%M%S.png"))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    augment_grid.write_grid(fv.config, out, seed=int(fv.config.seed))
    print(f"augmentation grid: {out}")
    return {"argv": argv, "augment_grid": out}


def _fed_step(fv: flags.FlagValues, argv: list[str]) -> dict[str, Any]:
    """`--fed_step`: the step fed by the pipeline vs on a resident batch; table and JSON."""
    if fv.config is None:
        raise SystemExit("ffjax bench --fed_step: give --config (its model and dataset are used).")
    devices = (_ints(fv.devices, "devices") or [1])[0]
    request_cpu_devices(fv.num_cpu_devices or devices, explicit=bool(fv.num_cpu_devices))
    from ffjax import sharding  # imports JAX: after the flags
    from ffjax.bench import fed_step

    batch = (_ints(fv.batch_sizes, "batch_sizes") or [fv.config.batch_size])[0]
    _print(f"[bench] training step fed by the pipeline vs a resident batch (batch {batch}, {devices} device(s)) ...")
    result = fed_step.measure_fed_step(fv.config, batch=batch, mesh=sharding.make_mesh(devices), steps=fv.iters)
    return _write(fv, argv, "fed_step", result, fed_step.table(result), "fed_step")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs `ffjax bench` with command-line arguments (argv[0] is the program name).

    Returns:
      The payload also written as JSON: environment, settings, rows, skipped cases, input
      pipeline results and the output paths.
    """
    argv = list(sys.argv if argv is None else argv)
    try:
        argv = configs.resolve_argv(argv)
    except FileNotFoundError as e:
        raise SystemExit(f"ffjax bench: {e}") from None
    fv = _define_flags(argv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(f"{bench.__doc__.strip()}\n\nflags:\n{fv.get_help()}")
        raise SystemExit(0)
    try:
        rest = fv(argv)
    except flags.Error as e:
        raise SystemExit(f"ffjax bench: {e}\nSee `ffjax bench --help`.") from None
    if len(rest) > 1:
        raise SystemExit(f"ffjax bench: unexpected arguments {rest[1:]}.")
    if fv.face_detection:
        return _face_detection(fv, argv)
    if fv.derived_masks:
        return _derived_masks(fv, argv)
    if fv.pipeline_stages:
        return _pipeline_stages(fv, argv)
    if fv.augment_grid:
        return _augment_grid(fv, argv)
    if fv.fed_step:
        return _fed_step(fv, argv)
    requested = _ints(fv.devices, "devices")
    want = fv.num_cpu_devices or max(requested, default=0)
    request_cpu_devices(want, explicit=bool(fv.num_cpu_devices))
    plans = _plan(fv)

    import jax

    from ffjax.bench import input as input_bench  # imports JAX: after the flags
    from ffjax.bench import report, steps  # import JAX: after the flags

    env = report.environment()
    counts = _device_counts(requested, jax.local_device_count())
    for mode in {m for p in plans for m in p["modes"]}:
        if mode not in steps.MODES:
            raise ValueError(f"--modes: {mode!r} is not one of {steps.MODES}.")
    data_folder = None
    if fv.pipeline != "off":
        data_folder = input_bench.dataset_available(plans[0]["config"])
        if data_folder is None and fv.pipeline == "on":
            # Fail before minutes of compiling, with the folder and the build command.
            from ffjax.data import pipeline as data_pipeline  # imports JAX: after the flags

            dataset = plans[0]["config"].dataset
            data_pipeline.dataset_dir(dataset.data_dir, dataset.name, dataset.config_name)
    measured_peak = steps.matmul_gflops() if fv.measure_peak else None
    peak_override, peak_source = fv.peak_gflops, ""
    if not peak_override and measured_peak and report.peak_flops(env["device_kind"], "fp32")[0] is None:
        peak_override, peak_source = measured_peak, f"measured XLA fp32 matmul ({measured_peak:.1f} GFLOP/s)"

    out = fv.out or os.path.join(tempfile.gettempdir(), "ffjax_bench", time.strftime("bench_%Y%m%dT%H%M%S.json"))
    trace_dir = fv.trace_dir or (os.path.splitext(out)[0] + "_traces" if fv.profile_steps else "")
    rows, skipped = _measure_steps(plans, counts, fv.warmup, fv.iters, fv.profile_steps, trace_dir, fv.stop_flag)
    report.add_derived(rows, platform_name=env["platform"], device_kind=env["device_kind"],
                       override_gflops=peak_override, override_source=peak_source)
    pipeline_result = None
    if fv.pipeline != "off":
        pipeline_result = {"skipped": "no built dataset for config.dataset (build one with `ffjax build-data`)"}
        if data_folder is not None:
            _print(f"[bench] input pipeline from {data_folder} ...")
            pipeline_result = _measure_input(plans[0], counts, fv.pipeline_batches, fv.pipeline_workers)

    settings = {k: v for k, v in fv.flag_values_dict().items() if k != "config"}
    payload = {
        "environment": env,
        "argv": argv,
        "settings": settings,
        "device_counts": counts,
        "measured_matmul_gflops": measured_peak,
        "configs": {p["name"]: p["config"].to_dict() for p in plans},
        "rows": rows,
        "skipped": skipped,
        "input_pipeline": pipeline_result,
        "out": out,
        "jsonl": fv.jsonl or None,
    }
    report.write_json(out, payload)
    print(report.table(rows))
    if pipeline_result and "train" in pipeline_result:
        print()
        print(report.input_table(pipeline_result, rows))
    if fv.jsonl:
        key = lambda r: (r["name"], r["devices"], r["precision"], r["batch"])  # noqa: E731
        fwd = {key(r): r["gflops_per_image"] for r in rows if r["mode"] == "eval"}
        report.append_jsonl(fv.jsonl, [report.torch_reference_row(r, r["name"], fwd.get(key(r))) for r in rows])
    _print(f"[bench] results: {out}")
    return payload
